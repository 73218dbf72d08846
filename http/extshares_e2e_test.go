package http_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
	api "github.com/mysafe/mysafe/http"
	"github.com/mysafe/mysafe/http/mail"
	"github.com/mysafe/mysafe/http/mail/mailtest"
	"github.com/mysafe/mysafe/http/scenario"
)

var (
	linkPattern = regexp.MustCompile(`/x/([A-Za-z0-9._-]+)`)
	codePattern = regexp.MustCompile(`token: (\d{8})`)
)

// extShareService runs the API with external shares mailed through an
// in-process SMTP server.
func extShareService(t *testing.T, configure func(*api.Config)) (*fullService, *mailtest.Server) {
	t.Helper()
	smtpServer := mailtest.Start(t)
	mailer, err := mail.NewSMTP(smtpServer.URL(), "mysafe@example.com")
	if err != nil {
		t.Fatal(err)
	}
	svc := startFullService(t, embedded, func(cfg *api.Config) {
		cfg.Mailer = mailer
		cfg.ExternalShares = api.ExternalShareConfig{Max: 30 * 24 * time.Hour, RecipientRate: 10000}
		if configure != nil {
			configure(cfg)
		}
	})
	return svc, smtpServer
}

// recipientSide is the person a share's link was mailed to.
type recipientSide struct {
	t      *testing.T
	svc    *fullService
	smtp   *mailtest.Server
	email  string
	mails  int      // mails read so far
	tokens []string // every link and code seen, to look for them at rest
}

// nextMail waits for the recipient's next mail.
func (r *recipientSide) nextMail() mailtest.Received {
	r.t.Helper()
	r.mails++
	return r.smtp.WaitFor(r.t, r.email, r.mails)
}

// link reads the link out of the next mail.
func (r *recipientSide) link() string {
	r.t.Helper()
	m := r.nextMail()
	found := linkPattern.FindStringSubmatch(m.Body)
	if m.Subject != "A new record has been shared with you" || found == nil {
		r.t.Fatalf("mail %q: %q; want a link", m.Subject, m.Body)
	}
	r.tokens = append(r.tokens, found[1])
	return "/x/" + found[1]
}

// code opens the link, and reads the code out of the mail it sends.
func (r *recipientSide) code(link string) string {
	r.t.Helper()
	a := anonymous(r.t, r.svc, "GET", link, nil).Want(r.t, 200)
	if a.Body["codeSent"] != true || a.Body["sentTo"] != "r***@example.com" {
		r.t.Fatalf("opening the link: %v; want a code sent to r***@example.com", a.Body)
	}
	m := r.nextMail()
	found := codePattern.FindStringSubmatch(m.Body)
	if m.Subject != "MySafe - your authentication token" || found == nil {
		r.t.Fatalf("mail %q: %q; want a code", m.Subject, m.Body)
	}
	r.tokens = append(r.tokens, found[1])
	return found[1]
}

// anonymous sends a request without a bearer token, as a recipient does.
func anonymous(t *testing.T, svc *fullService, method, path string, body any) scenario.Answer {
	t.Helper()
	return scenario.Do(t, svc.url, "", method, path, body)
}

// TestExternalShareScenario is the external share issue's story, over a
// real SMTP conversation: a share for 24 h and 2 accesses is opened twice
// with mailed codes and refuses a third time (Finished); another is revoked
// (Cancelled, the recipient told); an expired one refuses; five wrong codes
// lock one (Error); and no link token or code is kept anywhere but the
// recipient's mailbox.
func TestExternalShareScenario(t *testing.T) {
	logs := captureLogs(t)
	svc, smtpServer := extShareService(t, nil)
	owner := svc.caller(t, "olivia", "Olivia Owner", api.RoleUser)
	admin := svc.caller(t, "root", "Admin", api.RoleAdmin)
	auditor := svc.caller(t, "audrey", "Audrey Auditor", api.RoleAuditor)
	for _, u := range []*caller{owner, admin, auditor} {
		u.do("GET", "/api/v1/home/cards", nil).Want(t, 200)
	}
	rita := &recipientSide{t: t, svc: svc, smtp: smtpServer, email: "rita@example.com"}
	plaintext := "cs-external-" + svc.prefix
	id := owner.do("POST", "/api/v1/secrets", map[string]any{"name": "Billing API", "url": "https://billing.example.com",
		"clientId": "billing", "clientSecret": plaintext, "tags": []string{"prod"}}).Want(t, 201).Body["id"].(string)
	share := func(body map[string]any) (string, string) {
		t.Helper()
		body["recipientEmail"] = rita.email
		a := owner.do("POST", "/api/v1/secrets/"+id+"/external-shares", body).Want(t, 201)
		if a.Body["linkSent"] != true {
			t.Fatalf("create: %v; want the link sent", a.Body)
		}
		return a.Body["id"].(string), a.Body["position"].(string)
	}
	report := func(pos string, query string) map[string]map[string]any {
		t.Helper()
		a := owner.do("GET", "/api/v1/external-shares"+query, nil, "X-MySafe-Min-Position", pos).Want(t, 200)
		out := map[string]map[string]any{}
		for _, it := range a.Body["items"].([]any) {
			out[it.(map[string]any)["id"].(string)] = it.(map[string]any)
		}
		return out
	}

	// 1. 24 hours, 2 accesses: open, code, access; again; the third is refused.
	created := svc.clock.Now()
	first, _ := share(map[string]any{"expiresIn": "24h", "maxAccesses": 2})
	link := rita.link()
	for i, left := range []float64{1, 0} {
		opened := anonymous(t, svc, "POST", link+"/open", map[string]any{"code": rita.code(link)}).Want(t, 200)
		if opened.Body["clientSecret"] != plaintext || opened.Body["name"] != "Billing API" || opened.Body["remainingAccesses"] != left {
			t.Fatalf("access %d: %v; want the secret with %v accesses left", i+1, opened.Body, left)
		}
	}
	refused := anonymous(t, svc, "GET", link, nil).Want(t, 403)
	if !strings.Contains(refused.Body["detail"].(string), "used") {
		t.Errorf("third access: %v", refused.Body)
	}
	rows := report(lastPosition(t, svc), "")
	if r := rows[first]; r == nil || r["status"] != "Finished" || r["remainingAccesses"] != 0.0 || r["recipient"] != rita.email ||
		r["name"] != "Billing API" || r["type"] != "apiSecret" || r["expiration"] != created.Add(24*time.Hour).Format(time.RFC3339) {
		t.Fatalf("report row %v; want Finished with 0 accesses left, expiring 24h after creation", r)
	}

	// 2. Revoked: the link is refused, the status is Cancelled, the
	// recipient is told, and the expiry is the moment of revocation.
	second, _ := share(map[string]any{"expiresIn": "1w", "maxAccesses": nil})
	link2 := rita.link()
	revokedAt := svc.clock.Add(time.Minute)
	owner.do("POST", "/api/v1/external-shares/"+second+"/revoke", nil).Want(t, 200)
	if m := rita.nextMail(); m.Subject != "MySafe - access expired" || !strings.Contains(m.Body, "revoked") {
		t.Fatalf("after revoke, mail %q: %q; want the access-expired notice", m.Subject, m.Body)
	}
	if a := anonymous(t, svc, "GET", link2, nil).Want(t, 403); !strings.Contains(a.Body["detail"].(string), "revoked") {
		t.Errorf("revoked link: %v", a.Body)
	}
	owner.do("POST", "/api/v1/external-shares/"+second+"/revoke", nil).Want(t, 409)
	rows = report(lastPosition(t, svc), "?status=cancelled")
	if r := rows[second]; len(rows) != 1 || r["remainingAccesses"] != "Unlimited" || r["expiration"] != revokedAt.Format(time.RFC3339) {
		t.Fatalf("cancelled rows %v; want the revoked share, unlimited, expiring when revoked", rows)
	}

	// 3. Expired: a share whose hour has passed refuses, and the scheduler
	// records the expiry of one nobody opened, once.
	third, _ := share(map[string]any{"expiresIn": "1h", "maxAccesses": 1})
	link3 := rita.link()
	fourth, _ := share(map[string]any{"expiresAt": svc.clock.Now().Add(30 * time.Minute).Format(time.RFC3339), "maxAccesses": 1})
	rita.link()
	report(lastPosition(t, svc), "") // the scheduler finds shares through the read model
	svc.clock.Add(2 * time.Hour)
	if a := anonymous(t, svc, "GET", link3, nil).Want(t, 403); !strings.Contains(a.Body["detail"].(string), "expired") {
		t.Errorf("expired link: %v", a.Body)
	}
	rita.nextMail() // the notice of the third's expiry, recorded when it was opened
	report(lastPosition(t, svc), "")
	// Two replicas' schedulers at once: one records the expiry.
	counts := make(chan int, 2)
	for range 2 {
		go func() {
			n, err := svc.api.ExpireExternalShares(context.Background())
			if err != nil {
				t.Error(err)
			}
			counts <- n
		}()
	}
	if n := <-counts + <-counts; n != 1 {
		t.Fatalf("schedulers recorded %d expiries; want 1 (the fourth; the third's is recorded)", n)
	}
	if m := rita.nextMail(); !strings.Contains(m.Body, "has expired") {
		t.Errorf("expiry notice %q", m.Body)
	}
	report(lastPosition(t, svc), "")
	if n, err := svc.api.ExpireExternalShares(context.Background()); err != nil || n != 0 {
		t.Fatalf("scheduler again: %d, %v; want nothing more", n, err)
	}
	rows = report(lastPosition(t, svc), "?status=Finished")
	if rows[third] == nil || rows[fourth] == nil || rows[first] == nil || len(rows) != 3 {
		t.Fatalf("finished rows %v; want the first, third and fourth", rows)
	}

	// 4. Five wrong codes lock the share: status Error.
	fifth, _ := share(map[string]any{"expiresIn": "24h", "maxAccesses": 3})
	link5 := rita.link()
	code := rita.code(link5)
	wrong := "00000000"
	if code == wrong {
		wrong = "11111111"
	}
	for i := 1; i <= domain.MaxWrongCodes; i++ {
		a := anonymous(t, svc, "POST", link5+"/open", map[string]any{"code": wrong})
		if i < domain.MaxWrongCodes && (a.Status != 400 || a.Body["field"] != "code") || i == domain.MaxWrongCodes && a.Status != 403 {
			t.Fatalf("wrong code %d: %d %v", i, a.Status, a.Body)
		}
	}
	anonymous(t, svc, "POST", link5+"/open", map[string]any{"code": code}).Want(t, 403)
	if r := report(lastPosition(t, svc), "?status=error")[fifth]; r == nil || r["remainingAccesses"] != 3.0 {
		t.Fatalf("locked share row %v; want status Error, 3 accesses left", r)
	}

	// The admin's sharing audit lists everyone's shares with the sharer.
	audit := admin.do("GET", "/api/v1/admin/external-shares?username=olivia", nil).Want(t, 200)
	if audit.Body["total"] != 5.0 {
		t.Errorf("sharing audit total %v; want 5", audit.Body["total"])
	}
	if by := audit.Body["items"].([]any)[0].(map[string]any)["sharedBy"].(map[string]any); by["username"] != "olivia" || by["name"] != "Olivia Owner" {
		t.Errorf("shared by %v", by)
	}
	owner.do("GET", "/api/v1/admin/external-shares", nil).Want(t, 403)

	// The secret's history shows its external shares; its Shared column
	// counts internal grants only.
	h := owner.do("GET", "/api/v1/secrets/"+id+"/history", nil).Want(t, 200)
	for _, typ := range []string{"SecretSharedExternally", "ExternalShareCreated", "ExternalShareCodeSent", "ExternalShareAccessed",
		"ExternalShareExhausted", "ExternalShareRevoked", "ExternalShareExpired", "ExternalShareLocked"} {
		if !strings.Contains(h.Raw, `"type":"`+typ+`"`) {
			t.Errorf("history lacks %s", typ)
		}
	}
	if row := listed(owner.do("GET", "/api/v1/secrets", nil).Want(t, 200), "items", "id", id); row["shared"] != false {
		t.Errorf("report row %v; external shares must not count as Shared", row)
	}

	// Bad requests are refused, naming the field, and change nothing.
	before := logLength(t, svc.store)
	for field, body := range map[string]map[string]any{
		"expiresIn":      {"recipientEmail": rita.email, "expiresIn": "2d", "maxAccesses": 1},
		"maxAccesses":    {"recipientEmail": rita.email, "expiresIn": "1h"},
		"recipientEmail": {"recipientEmail": "rita", "expiresIn": "1h", "maxAccesses": 1},
		"expiresAt":      {"recipientEmail": rita.email, "expiresAt": svc.clock.Now().Add(31 * 24 * time.Hour).Format(time.RFC3339), "maxAccesses": 1},
	} {
		if a := owner.do("POST", "/api/v1/secrets/"+id+"/external-shares", body).Want(t, 400); a.Body["field"] != field {
			t.Errorf("bad %s: %v", field, a.Body)
		}
	}
	if a := owner.do("POST", "/api/v1/secrets/"+id+"/external-shares", map[string]any{"recipientEmail": rita.email, "expiresIn": "1h", "maxAccesses": 0}).Want(t, 400); a.Body["field"] != "maxAccesses" {
		t.Errorf("zero accesses: %v", a.Body)
	}
	anonymous(t, svc, "GET", "/x/not-a-token", nil).Want(t, 404)
	anonymous(t, svc, "POST", link5+"/open", map[string]any{"code": "12ab"}).Want(t, 400)
	if after := logLength(t, svc.store); after != before {
		t.Fatalf("bad requests appended %d events", after-before)
	}

	// Links and codes are nowhere but in the mail: not in the logs, the
	// read models, the log of events, the history or an export; only their
	// hashes are stored, and those only in the log of events.
	export := auditor.do("GET", "/api/v1/audit/export?format=ndjson", nil)
	svc.store.Close()
	places := map[string]string{"logs": logs.String(), "history": h.Raw, "export": export.Raw}
	for _, tok := range rita.tokens {
		for where, text := range places {
			if strings.Contains(text, tok) {
				t.Errorf("%s hold a link token or code", where)
			}
		}
		requireNotInDir(t, svc.dir, tok)
		requireNotInRedis(t, svc.rdb, svc.prefix, tok)
		if len(tok) > 8 { // a link: its hash is stored, but shown nowhere
			hash := domain.HashLinkToken(tok)
			for where, text := range places {
				if strings.Contains(text, hash) {
					t.Errorf("%s hold a link's hash", where)
				}
			}
			requireNotInRedis(t, svc.rdb, svc.prefix, hash)
		}
	}
	for where, text := range places {
		if strings.Contains(text, "tokenHash") || strings.Contains(text, "codeHash") {
			t.Errorf("%s show hashes of links or codes", where)
		}
	}
	requireNotInRedis(t, svc.rdb, svc.prefix, plaintext)
	requireNotInDir(t, svc.dir, plaintext)
}

// lastPosition is the position of the last event in the log, for queries
// that must see everything done so far.
func lastPosition(t *testing.T, svc *fullService) string {
	t.Helper()
	events, err := svc.store.ReadAll(context.Background(), eventstore.ReadAllOptions{Direction: eventstore.Backwards, From: eventstore.End, Max: 1})
	if err != nil || len(events) == 0 {
		t.Fatalf("read the log's end: %v", err)
	}
	return events[0].Position.String()
}

func TestExternalSharesCanBeSwitchedOff(t *testing.T) {
	svc, _ := extShareService(t, func(cfg *api.Config) { cfg.ExternalShares.Disabled = true })
	owner := svc.caller(t, "olivia", "Olivia Owner", api.RoleUser)
	id := owner.do("POST", "/api/v1/secrets", map[string]any{"name": "n", "url": "https://n.example.com", "clientId": "c"}).Want(t, 201).Body["id"].(string)
	a := owner.do("POST", "/api/v1/secrets/"+id+"/external-shares", map[string]any{"recipientEmail": "rita@example.com", "expiresIn": "1h", "maxAccesses": 1}).Want(t, 403)
	if !strings.Contains(a.Body["detail"].(string), "switched off") {
		t.Errorf("detail %v", a.Body)
	}
	anonymous(t, svc, "GET", "/x/"+strings.Repeat("a", 80), nil).Want(t, 404)
}

func TestRecipientRoutesAreRateLimited(t *testing.T) {
	svc, _ := extShareService(t, func(cfg *api.Config) { cfg.ExternalShares.RecipientRate = 3 })
	for i := range 3 {
		anonymous(t, svc, "GET", "/x/guess-"+string(rune('a'+i)), nil).Want(t, 404)
	}
	a := anonymous(t, svc, "GET", "/x/guess-d", nil).Want(t, 429)
	if a.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
}

// TestOutboxIsTheEmbeddedMailer: without an SMTP server, mail lands as
// files in the outbox.
func TestOutboxIsTheEmbeddedMailer(t *testing.T) {
	outbox := filepath.Join(t.TempDir(), "outbox")
	mailer, err := mail.NewOutbox(outbox, "mysafe@localhost")
	if err != nil {
		t.Fatal(err)
	}
	svc := startFullService(t, embedded, func(cfg *api.Config) { cfg.Mailer = mailer })
	owner := svc.caller(t, "olivia", "Olivia Owner", api.RoleUser)
	id := owner.do("POST", "/api/v1/secrets", map[string]any{"name": "n", "url": "https://n.example.com", "clientId": "c"}).Want(t, 201).Body["id"].(string)
	body := map[string]any{"recipientEmail": "rita@example.com", "expiresIn": "1h", "maxAccesses": nil}
	first := owner.do("POST", "/api/v1/secrets/"+id+"/external-shares", body, "Idempotency-Key", "k1").Want(t, 201)
	before := logLength(t, svc.store)
	// Retried with the same key: the same share, no second mail.
	again := owner.do("POST", "/api/v1/secrets/"+id+"/external-shares", body, "Idempotency-Key", "k1").Want(t, 201)
	if again.Body["id"] != first.Body["id"] || again.Body["recipientEmail"] != "rita@example.com" || again.Body["linkSent"] != false {
		t.Errorf("replayed create %v; want the first share, its link not sent again", again.Body)
	}
	if logLength(t, svc.store) != before {
		t.Error("a replayed create appended events")
	}
	entries, err := os.ReadDir(outbox)
	if err != nil || len(entries) != 1 {
		t.Fatalf("outbox %v, %v; want the link mail", entries, err)
	}
	raw, _ := os.ReadFile(filepath.Join(outbox, entries[0].Name()))
	text, _ := mail.Body(raw)
	found := linkPattern.FindStringSubmatch(text)
	if found == nil {
		t.Fatalf("outbox mail %q has no link", text)
	}
	anonymous(t, svc, "GET", "/x/"+found[1], nil).Want(t, 200)
	if entries, _ := os.ReadDir(outbox); len(entries) != 2 {
		t.Errorf("outbox holds %d mails; want the link and the code", len(entries))
	}
}
