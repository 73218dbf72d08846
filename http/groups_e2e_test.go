package http_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/domain/secretbox"
	"github.com/mysafe/mysafe/eventstore"
	api "github.com/mysafe/mysafe/http"
	"github.com/mysafe/mysafe/http/scenario"
	"github.com/mysafe/mysafe/projections"
	"github.com/mysafe/mysafe/projections/redistest"
)

// testClock is a clock tests move by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// fullService is the API wired as serve wires it, with what these tests
// change in its config.
type fullService struct {
	url    string
	api    *api.Server
	store  eventstore.Store
	rdb    redis.UniversalClient
	prefix string
	dir    string
	clock  *testClock
}

func startFullService(t *testing.T, open backend, configure func(*api.Config)) *fullService {
	t.Helper()
	dir := t.TempDir()
	store := open(t, dir)
	rdb, prefix := redistest.New(t)
	keys, err := secretbox.New(masterKey)
	if err != nil {
		t.Fatal(err)
	}
	clk := &testClock{now: time.Date(2026, 3, 3, 9, 0, 0, 0, time.UTC)}
	projector := projections.New(store, rdb, prefix, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- projector.Run(ctx) }()
	cfg := api.Config{
		Store: store, Keys: keys, SigningKey: signingKey, Now: clk.Now,
		ReadModels: projections.NewReader(rdb, prefix), Progress: projector,
		Audit: projections.NewAuditReader(rdb, prefix),
		Ping:  func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
	}
	if configure != nil {
		configure(&cfg)
	}
	server := api.NewServer(cfg)
	srv := httptest.NewServer(server)
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		store.Close()
	})
	return &fullService{url: srv.URL, api: server, store: store, rdb: rdb, prefix: prefix, dir: dir, clock: clk}
}

// caller is a user with a token of the service.
type caller struct {
	id, token string
	svc       *fullService
	t         *testing.T
}

func (s *fullService) caller(t *testing.T, id, name string, role api.Role) *caller {
	t.Helper()
	// Tokens are checked against the service's clock.
	token, err := api.IssueToken(signingKey, api.Identity{UserID: id, Name: name, Role: role}, 1000*time.Hour, s.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &caller{id: id, token: token, svc: s, t: t}
}

func (c *caller) do(method, path string, body any, headers ...string) scenario.Answer {
	c.t.Helper()
	return scenario.Do(c.t, c.svc.url, c.token, method, path, body, headers...)
}

// listed finds the element with the id in a list of the answer.
func listed(a scenario.Answer, list, key, id string) map[string]any {
	items, _ := a.Body[list].([]any)
	for _, it := range items {
		if m, ok := it.(map[string]any); ok && m[key] == id {
			return m
		}
	}
	return nil
}

// captureLogs sends slog's default logger to a buffer for the test.
func captureLogs(t *testing.T) *syncBuffer {
	t.Helper()
	buf := &syncBuffer{}
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prev) })
	return buf
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestGroupsScenario is the groups issue's story: an owner shares a secret
// with group "ops" (members M1, M2); both see it; M1 is removed from ops
// and loses it at once while M2 keeps it; the access-at-an-instant queries
// answer both periods; the owner unshares ops and the secret reads as not
// shared, with nobody in its access list.
func TestGroupsScenario(t *testing.T) {
	for name, open := range map[string]backend{"embedded": embedded, "eventstoredb-adapter": overESDB} {
		t.Run(name, func(t *testing.T) { groupsScenario(t, open) })
	}
}

func groupsScenario(t *testing.T, open backend) {
	svc := startFullService(t, open, nil)
	owner := svc.caller(t, "olivia", "Olivia Owner", api.RoleUser)
	m1 := svc.caller(t, "m1", "Mia One", api.RoleUser)
	m2 := svc.caller(t, "m2", "Max Two", api.RoleUser)
	outsider := svc.caller(t, "oscar", "Oscar Outsider", api.RoleUser)
	admin := svc.caller(t, "root", "Admin", api.RoleAdmin)
	for _, u := range []*caller{owner, m1, m2, outsider, admin} {
		u.do("GET", "/api/v1/home/cards", nil).Want(t, 200)
	}

	// The owner makes the group and a secret.
	g := owner.do("POST", "/api/v1/groups", map[string]any{"name": "ops", "description": "on call", "allowMembersToView": true}).Want(t, 201)
	groupID := g.Body["id"].(string)
	owner.do("POST", "/api/v1/groups/"+groupID+"/members", map[string]any{"userId": "m1"}).Want(t, 200)
	owner.do("POST", "/api/v1/groups/"+groupID+"/members", map[string]any{"userId": "m2"}).Want(t, 200)
	plaintext := "cs-group-" + svc.prefix
	id := owner.do("POST", "/api/v1/secrets", map[string]any{"name": "Ops API", "url": "https://ops.example.com",
		"clientId": "ops", "clientSecret": plaintext}).Want(t, 201).Body["id"].(string)

	// Shared with the group: both members see it.
	t1 := svc.clock.Add(time.Hour)
	pos := owner.do("PUT", "/api/v1/secrets/"+id+"/shares", map[string]any{"grants": []any{
		map[string]any{"principal": map[string]any{"type": "group", "id": groupID}, "canView": true}}}).Want(t, 200).Body["position"].(string)
	for _, m := range []*caller{m1, m2} {
		if listed(m.do("GET", "/api/v1/secrets", nil, "X-MySafe-Min-Position", pos).Want(t, 200), "items", "id", id) == nil {
			t.Fatalf("%s's report does not list the secret shared with ops", m.id)
		}
		if listed(m.do("GET", "/api/v1/home/cards", nil, "X-MySafe-Min-Position", pos).Want(t, 200), "cards", "id", id) == nil {
			t.Fatalf("%s's cards do not show it", m.id)
		}
		if got := m.do("POST", "/api/v1/secrets/"+id+"/reveal", nil).Want(t, 200).Body["clientSecret"]; got != plaintext {
			t.Fatalf("%s reveals %v", m.id, got)
		}
	}
	access := m1.do("GET", "/api/v1/secrets/"+id, nil).Want(t, 200).Body["access"].([]any)
	if len(access) != 1 {
		t.Fatalf("access %v; want the group as one grantee", access)
	}
	a := access[0].(map[string]any)
	if p := a["principal"].(map[string]any); p["type"] != "group" || p["id"] != groupID || p["name"] != "ops" || a["memberCount"] != 2.0 {
		t.Fatalf("access entry %v; want group ops with 2 members", a)
	}
	effective := owner.do("GET", "/api/v1/secrets/"+id+"/access/effective", nil).Want(t, 200)
	for _, u := range []string{"olivia", "m1", "m2"} {
		found := false
		for _, e := range effective.Body["users"].([]any) {
			found = found || e.(map[string]any)["user"].(map[string]any)["id"] == u
		}
		if !found {
			t.Errorf("effective access %s lacks %s", effective.Raw, u)
		}
	}
	outsider.do("GET", "/api/v1/secrets/"+id, nil).Want(t, 404)
	outsider.do("GET", "/api/v1/secrets/"+id+"/access/effective", nil).Want(t, 404)
	members := m2.do("GET", "/api/v1/groups/"+groupID, nil).Want(t, 200).Body["members"].([]any)
	if len(members) != 2 || members[0].(map[string]any)["addedBy"].(map[string]any)["id"] != "olivia" || members[0].(map[string]any)["addedAt"] == "" {
		t.Errorf("members %v; want two, added by olivia, with a time", members)
	}
	outsider.do("GET", "/api/v1/groups/"+groupID, nil).Want(t, 404)
	m2.do("POST", "/api/v1/groups/"+groupID+"/members", map[string]any{"userId": "oscar"}).Want(t, 403)

	// M1 leaves ops: access goes at once, before any read model moves.
	t2 := svc.clock.Add(time.Hour)
	pos = owner.do("DELETE", "/api/v1/groups/"+groupID+"/members/m1", nil).Want(t, 200).Body["position"].(string)
	m1.do("POST", "/api/v1/secrets/"+id+"/reveal", nil).Want(t, 404)
	m1.do("GET", "/api/v1/secrets/"+id, nil).Want(t, 404)
	if listed(m1.do("GET", "/api/v1/secrets", nil, "X-MySafe-Min-Position", pos).Want(t, 200), "items", "id", id) != nil {
		t.Fatal("m1's report still lists the secret after leaving ops")
	}
	if listed(m2.do("GET", "/api/v1/secrets", nil, "X-MySafe-Min-Position", pos).Want(t, 200), "items", "id", id) == nil {
		t.Fatal("m2 lost the secret when m1 left")
	}

	// Access at an instant answers both periods, for each member.
	reaches := func(user string, at time.Time) bool {
		t.Helper()
		a := admin.do("GET", "/api/v1/users/"+user+"/access?at="+at.Format(time.RFC3339Nano), nil).Want(t, 200)
		return listed(a, "secrets", "secretId", id) != nil
	}
	ε := time.Second
	for _, c := range []struct {
		user string
		at   time.Time
		want bool
	}{{"m1", t1.Add(ε), true}, {"m1", t2.Add(ε), false}, {"m2", t1.Add(ε), true}, {"m2", t2.Add(ε), true}, {"m1", t1.Add(-ε), false}} {
		if got := reaches(c.user, c.at); got != c.want {
			t.Errorf("%s could read the secret at %s: %v; want %v", c.user, c.at.Format(time.RFC3339), got, c.want)
		}
	}

	// The owner unshares ops: Shared reads No, access is empty.
	svc.clock.Add(time.Hour)
	pos = owner.do("PUT", "/api/v1/secrets/"+id+"/shares", map[string]any{"grants": []any{}}).Want(t, 200).Body["position"].(string)
	if row := listed(owner.do("GET", "/api/v1/secrets", nil, "X-MySafe-Min-Position", pos).Want(t, 200), "items", "id", id); row == nil || row["shared"] != false {
		t.Fatalf("owner's row %v; want shared:false", row)
	}
	if a := owner.do("GET", "/api/v1/secrets/"+id, nil).Want(t, 200).Body["access"].([]any); len(a) != 0 {
		t.Fatalf("access %v; want []", a)
	}
	if listed(m2.do("GET", "/api/v1/secrets", nil, "X-MySafe-Min-Position", pos).Want(t, 200), "items", "id", id) != nil {
		t.Fatal("m2 still lists the unshared secret")
	}
	m2.do("POST", "/api/v1/secrets/"+id+"/reveal", nil).Want(t, 404)

	// Unknown principals are a 400 naming them, and change nothing.
	before := logLength(t, svc.store)
	for _, p := range []map[string]any{{"type": "group", "id": "no-such-group"}, {"type": "user", "id": "nobody"}} {
		a := owner.do("PUT", "/api/v1/secrets/"+id+"/shares", map[string]any{"grants": []any{map[string]any{"principal": p}}}).Want(t, 400)
		if a.Body["field"] != "grants[0].principal.id" || !strings.Contains(a.Body["detail"].(string), p["id"].(string)) {
			t.Errorf("unknown %v: %v", p, a.Body)
		}
	}
	owner.do("POST", "/api/v1/groups/"+groupID+"/members", map[string]any{"userId": "nobody"}).Want(t, 400)
	owner.do("POST", "/api/v1/groups", map[string]any{"description": "no name"}).Want(t, 400)
	if after := logLength(t, svc.store); after != before {
		t.Fatalf("bad requests appended %d events", after-before)
	}
}

// TestDirectorySearch: the share dialog finds a user by part of the name,
// by username and by e-mail, and a group by name; an admin imports users.
func TestDirectorySearch(t *testing.T) {
	svc := startFullService(t, embedded, nil)
	admin := svc.caller(t, "root", "Admin", api.RoleAdmin)
	owner := svc.caller(t, "olivia", "Olivia Owner", api.RoleUser)
	owner.do("GET", "/api/v1/home/cards", nil).Want(t, 200)
	admin.do("PUT", "/api/v1/users/gus", map[string]any{"name": "Gus Grantee", "username": "gus.g", "email": "gus@example.com"}).Want(t, 200)
	owner.do("PUT", "/api/v1/users/eve", map[string]any{"name": "Eve"}).Want(t, 403)
	admin.do("PUT", "/api/v1/users/bad", map[string]any{"name": "Bad", "email": "not-an-address"}).Want(t, 400)
	pos := owner.do("POST", "/api/v1/groups", map[string]any{"name": "Ops team"}).Want(t, 201).Body["position"].(string)

	find := func(q string) []string {
		t.Helper()
		a := owner.do("GET", "/api/v1/principals?q="+q, nil, "X-MySafe-Min-Position", pos).Want(t, 200)
		var out []string
		for _, p := range a.Body["principals"].([]any) {
			p := p.(map[string]any)
			out = append(out, p["type"].(string)+":"+p["name"].(string))
		}
		return out
	}
	for q, want := range map[string]string{"rant": "user:Gus Grantee", "GUS.G": "user:Gus Grantee",
		"gus%40example.com": "user:Gus Grantee", "ops": "group:Ops team", "team": "group:Ops team"} {
		if got := find(q); len(got) != 1 || got[0] != want {
			t.Errorf("search %q: %v; want [%s]", q, got, want)
		}
	}
	owner.do("GET", "/api/v1/principals", nil).Want(t, 400)

	// An imported user is a principal before they ever sign in; a rename
	// shows where their name appears.
	id := owner.do("POST", "/api/v1/secrets", map[string]any{"name": "n", "url": "https://n.example.com", "clientId": "c"}).Want(t, 201).Body["id"].(string)
	owner.do("POST", "/api/v1/secrets/"+id+"/shares", map[string]any{"principal": map[string]any{"type": "user", "id": "gus"}}).Want(t, 200)
	pos = admin.do("PUT", "/api/v1/users/gus", map[string]any{"name": "Gus G. Grantee", "username": "gus.g", "email": "gus@example.com"}).Want(t, 200).Body["position"].(string)
	d := owner.do("GET", "/api/v1/secrets/"+id, nil, "X-MySafe-Min-Position", pos).Want(t, 200)
	if name := d.Body["access"].([]any)[0].(map[string]any)["principal"].(map[string]any)["name"]; name != "Gus G. Grantee" {
		t.Errorf("grantee name %v after the rename", name)
	}
}
