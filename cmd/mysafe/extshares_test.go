package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	api "github.com/mysafe/mysafe/http"
	"github.com/mysafe/mysafe/http/scenario"
)

// TestServeMailsIntoTheOutbox: on the embedded default, without an SMTP
// server, an external share's link lands as a file in <data-dir>/outbox;
// --external-shares=false refuses new shares.
func TestServeMailsIntoTheOutbox(t *testing.T) {
	dataDir := t.TempDir()
	svc := start(t, serveConfig{dataDir: dataDir, redisPrefix: "mysafe:", waitTimeout: 5 * time.Second})
	key, err := os.ReadFile(filepath.Join(dataDir, signingKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	token, err := api.IssueToken(key, api.Identity{UserID: "olivia", Name: "Olivia", Role: api.RoleUser}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id := scenario.Do(t, svc.url, token, "POST", "/api/v1/secrets", map[string]any{"name": "n", "url": "https://n.example.com",
		"clientId": "c"}).Want(t, 201).Body["id"].(string)
	share := map[string]any{"recipientEmail": "rita@example.com", "expiresIn": "1h", "maxAccesses": 1}
	if a := scenario.Do(t, svc.url, token, "POST", "/api/v1/secrets/"+id+"/external-shares", share).Want(t, 201); a.Body["linkSent"] != true {
		t.Fatalf("create: %v", a.Body)
	}
	entries, err := os.ReadDir(filepath.Join(dataDir, "outbox"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("outbox: %v, %v; want one message", entries, err)
	}
	svc.stop()

	off := false
	svc = start(t, serveConfig{dataDir: dataDir, redisPrefix: "mysafe:", waitTimeout: 5 * time.Second, shares: shareFlags{enabled: &off}})
	scenario.Do(t, svc.url, token, "POST", "/api/v1/secrets/"+id+"/external-shares", share).Want(t, 403)
}
