package http_test

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mysafe/mysafe/domain/secretbox"
	"github.com/mysafe/mysafe/eventstore"
	api "github.com/mysafe/mysafe/http"
	"github.com/mysafe/mysafe/http/scenario"
	"github.com/mysafe/mysafe/projections"
	"github.com/mysafe/mysafe/projections/redistest"
)

// clock is the service's injectable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

// startAuditService runs the API on the embedded store with the audit read
// model and the given clock.
func startAuditService(t *testing.T, now func() time.Time) (url string, store eventstore.Store) {
	t.Helper()
	store = embedded(t, t.TempDir())
	rdb, prefix := redistest.New(t)
	keys, err := secretbox.New(masterKey)
	if err != nil {
		t.Fatal(err)
	}
	projector := projections.New(store, rdb, prefix, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- projector.Run(ctx) }()
	srv := httptest.NewServer(api.NewServer(api.Config{
		Store: store, Keys: keys, SigningKey: signingKey, Now: now,
		ReadModels: projections.NewReader(rdb, prefix), Progress: projector,
		Audit: projections.NewAuditReader(rdb, prefix),
		Ping:  func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
	}))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		store.Close()
	})
	return srv.URL, store
}

func tokenFor(t *testing.T, id, name string, role api.Role) string {
	t.Helper()
	token, err := api.IssueToken(signingKey, api.Identity{UserID: id, Name: name, Role: role}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// TestAccessAtTimeScenario is the audit issue's story: an owner shares
// with a grantee at t1, gives can-edit at t2, revokes at t3; the access
// queries answer each instant, and plain users are kept out of the audit.
func TestAccessAtTimeScenario(t *testing.T) {
	t0 := time.Date(2025, 3, 3, 14, 0, 0, 0, time.UTC)
	t1, t2, t3 := t0.Add(time.Hour), t0.Add(2*time.Hour), t0.Add(3*time.Hour)
	const ε = time.Second
	clk := &clock{now: t0}
	url, _ := startAuditService(t, clk.Now)
	owner := tokenFor(t, "olivia", "Olivia Owner", api.RoleUser)
	grantee := tokenFor(t, "gus", "Gus Grantee", api.RoleUser)
	outsider := tokenFor(t, "oscar", "Oscar Outsider", api.RoleUser)
	auditor := tokenFor(t, "audrey", "Audrey Auditor", api.RoleAuditor)
	admin := tokenFor(t, "adam", "Adam Admin", api.RoleAdmin)
	do := func(token, method, path string, body any, headers ...string) scenario.Answer {
		t.Helper()
		return scenario.Do(t, url, token, method, path, body, headers...)
	}
	for _, tok := range []string{owner, grantee, outsider, auditor, admin} {
		do(tok, "GET", "/api/v1/home/cards", nil).Want(t, 200)
	}
	const plaintext = "s3cr3t-value-never-exported"
	id := do(owner, "POST", "/api/v1/secrets", map[string]any{"name": "=Billing API", "url": "https://billing.example.com",
		"clientId": "billing", "clientSecret": plaintext}).Want(t, 201).Body["id"].(string)

	clk.Set(t1)
	do(owner, "POST", "/api/v1/secrets/"+id+"/shares", map[string]any{"principal": map[string]any{"type": "user", "id": "gus"}},
		"X-Request-Id", "req-share-1", "User-Agent", "scenario/1").Want(t, 200)
	clk.Set(t2)
	do(owner, "PATCH", "/api/v1/secrets/"+id+"/shares/user/gus", map[string]any{"canEdit": true}).Want(t, 200)
	clk.Set(t2.Add(time.Minute))
	do(grantee, "POST", "/api/v1/secrets/"+id+"/reveal", nil).Want(t, 200)
	clk.Set(t3)
	last := do(owner, "DELETE", "/api/v1/secrets/"+id+"/shares/user/gus", nil).Want(t, 200).Body["position"].(string)
	clk.Set(t3.Add(time.Hour))

	// Access at each instant, as the owner, an auditor and an admin see it.
	type want struct {
		at               time.Time
		canView, canEdit bool
	}
	instants := []want{{t1.Add(-ε), false, false}, {t1.Add(ε), true, false}, {t2.Add(ε), true, true}, {t3.Add(ε), false, false}}
	for _, w := range instants {
		at := w.at.Format(time.RFC3339Nano)
		for _, tok := range []string{owner, auditor, admin} {
			a := do(tok, "GET", "/api/v1/secrets/"+id+"/access?at="+at, nil).Want(t, 200)
			grants := a.Body["grants"].([]any)
			if !w.canView {
				if len(grants) != 0 {
					t.Fatalf("at %s: grants %v; want nobody", at, grants)
				}
				continue
			}
			if len(grants) != 1 {
				t.Fatalf("at %s: grants %v; want gus alone", at, grants)
			}
			g := grants[0].(map[string]any)
			perm, principal := g["permission"].(map[string]any), g["principal"].(map[string]any)
			if principal["id"] != "gus" || perm["canView"] != true || perm["canEdit"] != w.canEdit ||
				g["grantedBy"].(map[string]any)["id"] != "olivia" || g["grantedAt"] != t1.Format(time.RFC3339) {
				t.Fatalf("at %s: grant %v; want gus, canEdit %v, granted by olivia at t1", at, g, w.canEdit)
			}
			if a.Body["owner"].(map[string]any)["id"] != "olivia" {
				t.Fatalf("at %s: owner %v", at, a.Body["owner"])
			}
		}
		// The grantee's own access at the instant agrees.
		u := do(grantee, "GET", "/api/v1/users/gus/access?at="+at, nil).Want(t, 200)
		secrets := u.Body["secrets"].([]any)
		if !w.canView {
			if len(secrets) != 0 {
				t.Fatalf("gus at %s: %v; want no secret", at, secrets)
			}
			continue
		}
		if len(secrets) != 1 {
			t.Fatalf("gus at %s: %v; want the secret", at, secrets)
		}
		s := secrets[0].(map[string]any)
		perm, via := s["permission"].(map[string]any), s["via"].([]any)
		if s["secretId"] != id || s["name"] != "=Billing API" || perm["canEdit"] != w.canEdit || len(via) != 1 || via[0].(map[string]any)["via"] != "user" {
			t.Fatalf("gus at %s: %v; want the secret through his grant, canEdit %v", at, s, w.canEdit)
		}
	}
	if s := do(auditor, "GET", "/api/v1/users/olivia/access?at="+t1.Format(time.RFC3339), nil).Want(t, 200).Body["secrets"].([]any); len(s) != 1 ||
		s[0].(map[string]any)["via"].([]any)[0].(map[string]any)["via"] != "owner" {
		t.Fatalf("olivia's access: %v; want her secret as owner", s)
	}
	do(owner, "GET", "/api/v1/secrets/"+id+"/access?at=yesterday", nil).Want(t, 400)

	// One interval for the grantee, with its three changes and who made them.
	iv := do(auditor, "GET", "/api/v1/secrets/"+id+"/access/intervals", nil).Want(t, 200).Body["intervals"].([]any)
	if len(iv) != 1 {
		t.Fatalf("intervals %v; want one", iv)
	}
	interval := iv[0].(map[string]any)
	changes := interval["changes"].([]any)
	if interval["grantedAt"] != t1.Format(time.RFC3339) || interval["revokedAt"] != t3.Format(time.RFC3339) || len(changes) != 3 {
		t.Fatalf("interval %v; want [t1, t3) with three changes", interval)
	}
	for i, typ := range []string{"ShareGranted", "SharePermissionChanged", "ShareRevoked"} {
		c := changes[i].(map[string]any)
		if c["type"] != typ || c["actor"].(map[string]any)["id"] != "olivia" {
			t.Fatalf("change %d = %v; want %s by olivia", i, c, typ)
		}
	}

	// Who may ask what.
	do(grantee, "GET", "/api/v1/secrets/"+id+"/access", nil).Want(t, 404) // no longer a grantee
	do(outsider, "GET", "/api/v1/secrets/"+id+"/access/intervals", nil).Want(t, 404)
	do(outsider, "GET", "/api/v1/users/gus/access", nil).Want(t, 403)
	for _, path := range []string{"/api/v1/audit/events", "/api/v1/audit/export?format=csv", "/api/v1/audit/export?format=ndjson", "/api/v1/audit/verify"} {
		do(owner, "GET", path, nil).Want(t, 403)
		do(grantee, "GET", path, nil).Want(t, 403)
	}

	// The audit report records who, when, from where, and the request.
	report := do(auditor, "GET", "/api/v1/audit/events?event=Sharing&secret==billing%20api", nil, "X-MySafe-Min-Position", last).Want(t, 200)
	items := report.Body["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("sharing events: %v; want one", items)
	}
	e := items[0].(map[string]any)
	if e["type"] != "ShareGranted" || e["event"] != "Sharing" || e["correlationId"] != "req-share-1" || e["userAgent"] != "scenario/1" ||
		e["ip"] != "127.0.0.1" || e["at"] != t1.Format(time.RFC3339) || e["secretName"] != "=Billing API" || e["hash"] == "" ||
		e["actor"].(map[string]any)["name"] != "Olivia Owner" {
		t.Fatalf("sharing event %v; want actor, time, IP, user agent, request ID, hash", e)
	}
	all := do(admin, "GET", "/api/v1/audit/events?limit=2", nil).Want(t, 200)
	if len(all.Body["items"].([]any)) != 2 || all.Body["next"] == nil {
		t.Fatalf("first page %v; want two items and a cursor", all.Body)
	}
	next := do(admin, "GET", "/api/v1/audit/events?limit=10&cursor="+all.Body["next"].(string), nil).Want(t, 200)
	types := []string{}
	for _, it := range append(all.Body["items"].([]any), next.Body["items"].([]any)...) {
		types = append(types, it.(map[string]any)["type"].(string))
	}
	if strings.Join(types, " ") != "ShareRevoked SecretRevealed SharePermissionChanged ShareGranted SecretCreated" {
		t.Fatalf("report, newest first: %v", types)
	}
	for _, bad := range []string{"event=Nope", "type=UserRegistered", "from=monday", "limit=0", "cursor=xyz"} {
		do(auditor, "GET", "/api/v1/audit/events?"+bad, nil).Want(t, 400)
	}

	// Exports: spreadsheet-safe CSV with a header, NDJSON lines that parse,
	// every event with its hash, no secret value, and a trailer that says
	// the export is complete.
	csvRows := export(t, url, auditor, "csv")
	if csvRows[0][0] != "position" || len(csvRows) < 7 {
		t.Fatalf("CSV: %v", csvRows)
	}
	for _, row := range csvRows[1:] {
		if row[13] == "" {
			t.Fatalf("CSV row without hash: %v", row)
		}
		for _, cell := range row {
			if strings.HasPrefix(cell, "=") || strings.Contains(cell, plaintext) {
				t.Fatalf("CSV cell %q: a formula or the client secret", cell)
			}
		}
	}
	lines := export(t, url, admin, "ndjson")
	if len(lines) != len(csvRows)-1 {
		t.Fatalf("%d NDJSON lines, %d CSV rows", len(lines), len(csvRows)-1)
	}
	from := export(t, url, auditor, "ndjson&type=ShareGranted,ShareRevoked&from="+t1.Format(time.RFC3339))
	if len(from) != 2 {
		t.Fatalf("filtered export: %v; want the grant and the revoke", from)
	}
	do(auditor, "GET", "/api/v1/audit/export?format=xml", nil).Want(t, 400)

	// The untouched log verifies.
	v := do(auditor, "GET", "/api/v1/audit/verify", nil).Want(t, 200)
	if v.Body["ok"] != true || v.Body["hashed"].(float64) < 7 || v.Body["unhashed"].(float64) != 0 {
		t.Fatalf("verify: %v", v.Body)
	}
	if v := do(admin, "GET", "/api/v1/audit/verify?stream=secret-"+id, nil).Want(t, 200); v.Body["ok"] != true || v.Body["events"].(float64) != 5 {
		t.Fatalf("verify one stream: %v", v.Body)
	}
	do(admin, "GET", "/api/v1/audit/verify?stream=secret-nope", nil).Want(t, 404)
}

// export downloads an export and returns its rows: CSV records, or NDJSON
// lines as one-cell rows. It fails unless the export ended complete.
func export(t *testing.T, url, token, format string) [][]string {
	t.Helper()
	req, _ := nethttp.NewRequest("GET", url+"/api/v1/audit/export?format="+format, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("export %s: %d %s", format, resp.StatusCode, b)
	}
	var rows [][]string
	if strings.HasPrefix(format, "csv") {
		rows, err = csv.NewReader(resp.Body).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
	} else {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line["hash"] == "" {
				t.Fatalf("NDJSON line %s: %v", sc.Text(), err)
			}
			rows = append(rows, []string{sc.Text()})
		}
	}
	io.Copy(io.Discard, resp.Body)
	if resp.Trailer.Get(api.ExportEventsTrailer) == "" || resp.Header.Get(api.LogHeadHeader) == "" {
		t.Fatalf("export %s: trailer %v, header %v; want the event count and the log head", format, resp.Trailer, resp.Header)
	}
	return rows
}
