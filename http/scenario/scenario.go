// Package scenario holds the end-to-end scenarios that every way of running
// mysafe must pass: through the HTTP API, whatever event store and Redis
// stand behind it. Tests of each wiring run them with an Env of their own.
package scenario

import (
	"bytes"
	"encoding/json"
	"io"
	nethttp "net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// Env is a running mysafe as a scenario sees it.
type Env struct {
	// URL is the service's base URL, e.g. http://127.0.0.1:8080. It may
	// change after Restart.
	URL func() string
	// Token issues a bearer token for a user with the role "user".
	Token func(t *testing.T, userID, name string) string
	// LogLength counts the events in the log.
	LogLength func(t *testing.T) int
	// Restart stops the service and starts it again on the same data, with
	// read models rebuilt from the log.
	Restart func(t *testing.T)
	// RequireNotAtRest fails the test if the value is stored anywhere at
	// rest: the data dir, Redis. Called once the service has stopped.
	RequireNotAtRest func(t *testing.T, value string)
	// Stop stops the service.
	Stop func(t *testing.T)
}

// user is a caller with a token.
type user struct {
	id, token string
	env       Env
}

// Answer is an HTTP answer with its JSON body.
type Answer struct {
	Status int
	Header nethttp.Header
	Body   map[string]any
	Raw    string
}

// Do sends one request with an optional JSON body (a string or []byte is
// sent as is) and header name/value pairs.
func Do(t *testing.T, baseURL, token, method, path string, body any, headers ...string) Answer {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := nethttp.NewRequest(method, baseURL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := Answer{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &a.Body)
	return a
}

func (u *user) do(t *testing.T, method, path string, body any, headers ...string) Answer {
	t.Helper()
	return Do(t, u.env.URL(), u.token, method, path, body, headers...)
}

// Want fails the test unless the answer has the status.
func (a Answer) Want(t *testing.T, status int) Answer {
	t.Helper()
	if a.Status != status {
		t.Fatalf("status %d; want %d; body %s", a.Status, status, a.Raw)
	}
	return a
}

// item finds the element with the id in a list of the answer.
func item(a Answer, list, id string) map[string]any {
	items, _ := a.Body[list].([]any)
	for _, it := range items {
		if m, ok := it.(map[string]any); ok && m["id"] == id {
			return m
		}
	}
	return nil
}

// ShareAndUnshare walks the unshare flow a newcomer tries with curl: an
// owner, a grantee and an outsider; then a restart; then a look at rest.
func ShareAndUnshare(t *testing.T, env Env) {
	newUser := func(id, name string) *user { return &user{id: id, token: env.Token(t, id, name), env: env} }
	owner := newUser("olivia", "Olivia Owner")
	grantee := newUser("gus", "Gus Grantee")
	outsider := newUser("oscar", "Oscar Outsider")
	for _, u := range []*user{owner, grantee, outsider} {
		u.do(t, "GET", "/api/v1/home/cards", nil).Want(t, 200) // first sight records the user
	}
	plaintext := "cs-" + uuid.NewString()

	// 1. The owner creates a secret: not shared.
	created := owner.do(t, "POST", "/api/v1/secrets", map[string]any{
		"name": "Billing API", "url": "https://billing.example.com", "clientId": "billing-client",
		"clientSecret": plaintext, "method": "POST", "tags": []string{"prod"}, "notes": "rotate monthly",
	}).Want(t, 201)
	id, pos := created.Body["id"].(string), created.Body["position"].(string)
	report := owner.do(t, "GET", "/api/v1/secrets", nil, "X-MySafe-Min-Position", pos).Want(t, 200)
	row := item(report, "items", id)
	if row == nil || row["shared"] != false || row["status"] != "enabled" || row["lastUsed"] != nil {
		t.Fatalf("owner's report row = %v; want it listed, not shared, enabled, never used", row)
	}
	if owner := row["owner"].(map[string]any); owner["id"] != "olivia" || owner["name"] != "Olivia Owner" {
		t.Errorf("owner = %v", owner)
	}
	if c := item(owner.do(t, "GET", "/api/v1/home/cards", nil, "X-MySafe-Min-Position", pos).Want(t, 200), "cards", id); c == nil || c["shared"] != false || c["type"] != "apiSecret" {
		t.Fatalf("owner's card = %v; want an apiSecret card, not shared", c)
	}
	if grantee.do(t, "GET", "/api/v1/secrets/"+id, nil).Status != 404 {
		t.Fatal("the grantee reads details before any share")
	}

	// 2. The owner shares with the grantee (can view) in the share dialog.
	shared := owner.do(t, "PUT", "/api/v1/secrets/"+id+"/shares", map[string]any{
		"grants": []any{map[string]any{"principal": map[string]any{"type": "user", "id": "gus"}, "canView": true}},
	}).Want(t, 200)
	if shared.Body["message"] != "Shared" {
		t.Errorf("share answer = %v; want message Shared", shared.Body)
	}
	pos = shared.Body["position"].(string)
	if row := item(owner.do(t, "GET", "/api/v1/secrets?shared=yes", nil, "X-MySafe-Min-Position", pos).Want(t, 200), "items", id); row == nil || row["shared"] != true {
		t.Fatalf("owner's report (shared=yes) row = %v; want shared", row)
	}
	if c := item(owner.do(t, "GET", "/api/v1/home/cards", nil, "X-MySafe-Min-Position", pos), "cards", id); c == nil || c["shared"] != true {
		t.Fatalf("owner's card = %v; want shared", c)
	}
	if row := item(grantee.do(t, "GET", "/api/v1/secrets", nil, "X-MySafe-Min-Position", pos).Want(t, 200), "items", id); row == nil {
		t.Fatal("the grantee's report does not list the shared secret")
	}
	details := grantee.do(t, "GET", "/api/v1/secrets/"+id, nil).Want(t, 200)
	access := details.Body["access"].([]any)
	if len(access) != 1 {
		t.Fatalf("access = %v; want the grantee only", access)
	}
	g := access[0].(map[string]any)
	principal, grantedBy := g["principal"].(map[string]any), g["grantedBy"].(map[string]any)
	if principal["type"] != "user" || principal["id"] != "gus" || principal["name"] != "Gus Grantee" ||
		g["canView"] != true || g["canEdit"] != false || grantedBy["id"] != "olivia" || g["grantedAt"] == "" {
		t.Fatalf("access entry = %v; want gus, can view, not edit, granted by olivia", g)
	}
	if _, ok := details.Body["clientSecret"]; ok || strings.Contains(details.Raw, plaintext) {
		t.Fatal("details show the client secret")
	}
	if got := grantee.do(t, "POST", "/api/v1/secrets/"+id+"/reveal", nil).Want(t, 200).Body["clientSecret"]; got != plaintext {
		t.Fatalf("grantee reveals %q; want the client secret", got)
	}
	for _, c := range []struct{ field, want string }{{"clientId", "billing-client"}, {"clientSecret", plaintext}} {
		if got := grantee.do(t, "POST", "/api/v1/secrets/"+id+"/copy", map[string]any{"field": c.field}).Want(t, 200).Body["value"]; got != c.want {
			t.Fatalf("grantee copies %s: %q; want %q", c.field, got, c.want)
		}
	}
	grantee.do(t, "POST", "/api/v1/secrets/"+id+"/copy", map[string]any{"field": "notes"}).Want(t, 400)

	// 3. The owner removes the grantee in the dialog and saves.
	unshared := owner.do(t, "PUT", "/api/v1/secrets/"+id+"/shares", map[string]any{"grants": []any{}}).Want(t, 200)
	if unshared.Body["message"] != "Shared" {
		t.Errorf("unshare answer = %v; want message Shared, as the dialog's toast says", unshared.Body)
	}
	pos = unshared.Body["position"].(string)
	checkUnshared := func(t *testing.T, pos string) {
		t.Helper()
		if row := item(owner.do(t, "GET", "/api/v1/secrets", nil, "X-MySafe-Min-Position", pos).Want(t, 200), "items", id); row == nil || row["shared"] != false {
			t.Fatalf("owner's report row = %v; want shared:false", row)
		}
		if c := item(owner.do(t, "GET", "/api/v1/home/cards", nil, "X-MySafe-Min-Position", pos), "cards", id); c == nil || c["shared"] != false {
			t.Fatalf("owner's card = %v; want shared:false", c)
		}
		d := owner.do(t, "GET", "/api/v1/secrets/"+id, nil, "X-MySafe-Min-Position", pos).Want(t, 200)
		if a, ok := d.Body["access"].([]any); !ok || len(a) != 0 {
			t.Fatalf("access = %v; want []", d.Body["access"])
		}
		if row := item(grantee.do(t, "GET", "/api/v1/secrets", nil, "X-MySafe-Min-Position", pos).Want(t, 200), "items", id); row != nil {
			t.Fatal("the grantee's report still lists the secret")
		}
		grantee.do(t, "GET", "/api/v1/secrets/"+id, nil).Want(t, 404)
		grantee.do(t, "POST", "/api/v1/secrets/"+id+"/reveal", nil).Want(t, 404)
	}
	checkUnshared(t, pos)

	// 4. The history tells the story, with actor and time, and no secret.
	checkHistory := func(t *testing.T) {
		t.Helper()
		h := owner.do(t, "GET", "/api/v1/secrets/"+id+"/history", nil).Want(t, 200)
		if strings.Contains(h.Raw, plaintext) || strings.Contains(h.Raw, "sealed") {
			t.Fatal("the history shows the client secret")
		}
		var types []string
		for _, e := range h.Body["events"].([]any) {
			e := e.(map[string]any)
			if e["actor"].(map[string]any)["id"] == "" || e["at"] == "" {
				t.Errorf("event without actor or time: %v", e)
			}
			types = append(types, e["type"].(string))
		}
		want := "SecretCreated ShareGranted SecretRevealed SecretCopied SecretCopied ShareRevoked"
		if strings.Join(types, " ") != want {
			t.Fatalf("history = %v; want %s", types, want)
		}
		grantee.do(t, "GET", "/api/v1/secrets/"+id+"/history", nil).Want(t, 404)
	}
	checkHistory(t)

	// 7. Bad requests are refused clearly and change nothing.
	before := env.LogLength(t)
	outsider.do(t, "GET", "/api/v1/secrets/"+id, nil).Want(t, 404)
	if st := outsider.do(t, "PUT", "/api/v1/secrets/"+id+"/shares", map[string]any{"grants": []any{}}).Status; st != 403 && st != 404 {
		t.Errorf("outsider's share dialog: %d; want 403 or 404", st)
	}
	(&user{env: env}).do(t, "GET", "/api/v1/secrets", nil).Want(t, 401)
	noName := owner.do(t, "POST", "/api/v1/secrets", map[string]any{"url": "https://x.example.com", "clientId": "c"}).Want(t, 400)
	if noName.Body["field"] != "name" || !strings.Contains(noName.Body["detail"].(string), "name") ||
		!strings.HasPrefix(noName.Header.Get("Content-Type"), "application/problem+json") {
		t.Errorf("missing name: %v %v; want a problem naming name", noName.Header.Get("Content-Type"), noName.Body)
	}
	owner.do(t, "POST", "/api/v1/secrets", `{"name": "x",`).Want(t, 400)
	owner.do(t, "POST", "/api/v1/secrets", bytes.Repeat([]byte("a"), 2<<20)).Want(t, 413)
	owner.do(t, "PUT", "/api/v1/secrets/"+id+"/shares", map[string]any{
		"grants": []any{map[string]any{"principal": map[string]any{"type": "user", "id": "nobody"}}},
	}).Want(t, 400)
	owner.do(t, "DELETE", "/api/v1/secrets/"+id+"/shares/user/gus", nil).Want(t, 404)
	if after := env.LogLength(t); after != before {
		t.Fatalf("bad requests appended %d events", after-before)
	}

	// 5. Stopped and started again on the same data dir, with read models
	// rebuilt from the log, everything still holds.
	env.Restart(t)
	checkUnshared(t, pos)
	checkHistory(t)

	// 6. The plaintext is nowhere at rest: not in the data dir, not in Redis.
	env.Stop(t)
	env.RequireNotAtRest(t, plaintext)
}
