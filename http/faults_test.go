package http_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/mysafe/mysafe/eventstore/bolt"
	"github.com/mysafe/mysafe/eventstore/esdb"
	"github.com/mysafe/mysafe/eventstore/esdbtest"
	api "github.com/mysafe/mysafe/http"
	"github.com/mysafe/mysafe/http/scenario"
	"github.com/mysafe/mysafe/projections/redistest"
)

// TestEventStoreOutage takes EventStoreDB away under a running service: a
// command answers 503 and appends nothing; once the store is back, commands
// work again and the projections resume where they stopped, missing nothing.
func TestEventStoreOutage(t *testing.T) {
	backing, err := bolt.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backing.Close() })
	srv, err := esdbtest.Start(backing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := esdb.Open(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb, prefix := redistest.New(t)
	svc := startService(t, store, rdb, prefix)
	token, err := api.IssueToken(signingKey, api.Identity{UserID: "olivia", Name: "Olivia", Role: api.RoleUser}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	create := func(name string) scenario.Answer {
		return scenario.Do(t, svc.url, token, "POST", "/api/v1/secrets",
			map[string]any{"name": name, "url": "https://api.example.com", "clientId": "c"})
	}
	create("before the outage").Want(t, 201)
	before := logLength(t, backing)

	if err := srv.SetUnavailable(true); err != nil {
		t.Fatal(err)
	}
	down := create("during the outage").Want(t, 503)
	if down.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if after := logLength(t, backing); after != before {
		t.Fatalf("a command during the outage appended %d events", after-before)
	}
	if err := srv.SetUnavailable(false); err != nil {
		t.Fatal(err)
	}

	// The store is back; the client reconnects on its own, within a bound.
	var second scenario.Answer
	deadline := time.Now().Add(30 * time.Second)
	for second = create("after the outage"); second.Status == 503 && time.Now().Before(deadline); second = create("after the outage") {
		time.Sleep(100 * time.Millisecond)
	}
	second.Want(t, 201)
	srv.DropSubscriptions() // and once more for the projections, mid-live
	third := create("after a dropped subscription").Want(t, 201)

	report := scenario.Do(t, svc.url, token, "GET", "/api/v1/secrets", nil,
		"X-MySafe-Min-Position", third.Body["position"].(string)).Want(t, 200)
	var names []string
	for _, it := range report.Body["items"].([]any) {
		names = append(names, it.(map[string]any)["name"].(string))
	}
	want := []string{"after a dropped subscription", "after the outage", "before the outage"}
	if len(names) != len(want) || names[0] != want[0] || names[1] != want[1] || names[2] != want[2] {
		t.Fatalf("report = %v; want %v (newest first, each once)", names, want)
	}
}
