package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/bbolt"

	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/bolt"
	"github.com/mysafe/mysafe/http/scenario"
)

// mysafe runs the audit commands as the binary does.
func mysafe(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "mysafe", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(exportCommand(), auditCommand())
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestExportAndVerifyADataDir(t *testing.T) {
	dir := t.TempDir()
	if out, err := mysafe(t, "audit", "generate", "--data-dir", dir, "--events", "300", "--per-stream", "40"); err != nil {
		t.Fatalf("generate: %v\n%s", err, out)
	}
	csvPath := filepath.Join(t.TempDir(), "audit.csv")
	if out, err := mysafe(t, "export", "--data-dir", dir, "--format", "csv", "--type", "ShareGranted,ShareRevoked", "--out", csvPath); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	f, err := os.Open(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(rows) < 10 || rows[0][4] != "type" {
		t.Fatalf("CSV: %d rows, %v", len(rows), err)
	}
	for _, r := range rows[1:] {
		if r[4] != "ShareGranted" && r[4] != "ShareRevoked" {
			t.Fatalf("row of type %s; want shares only", r[4])
		}
	}
	if _, err := mysafe(t, "export", "--data-dir", dir, "--format", "xml", "--out", csvPath); err == nil {
		t.Fatal("--format xml accepted")
	}
	if out, err := mysafe(t, "audit", "verify", "--data-dir", dir); err != nil || !strings.Contains(out, "300 events checked") || !strings.Contains(out, "OK") {
		t.Fatalf("verify: %v\n%s", err, out)
	}

	// Flip one byte of event 123 in the file.
	store, err := bolt.Open(filepath.Join(dir, "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	target, err := store.ReadAll(context.Background(), eventstore.ReadAllOptions{From: eventstore.Position{Commit: 123, Prepare: 123}, Max: 1})
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(filepath.Join(dir, "events.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("log"))
		key := binary.BigEndian.AppendUint64(nil, 123)
		rec := bytes.Clone(b.Get(key))
		i := bytes.Index(rec, []byte(`"ip":"`))
		rec[i+7] ^= 0x01 // one byte of the client IP in the metadata
		return b.Put(key, rec)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, err := mysafe(t, "audit", "verify", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), target[0].ID.String()) {
		t.Fatalf("verify after the flip: %v\n%s; want event %s named", err, out, target[0].ID)
	}
}

func TestExportAndVerifyAgainstARunningServer(t *testing.T) {
	svc := start(t, serveConfig{dataDir: t.TempDir(), redisPrefix: "mysafe:", waitTimeout: 5 * time.Second})
	lines := strings.Split(strings.TrimSpace(svc.stdout.String()), "\n")
	admin := lines[len(lines)-1]
	scenario.Do(t, svc.url, admin, "POST", "/api/v1/secrets", map[string]any{"name": "Billing", "url": "https://b.example.com",
		"clientId": "c", "clientSecret": "never-exported"}).Want(t, 201)

	path := filepath.Join(t.TempDir(), "audit.ndjson")
	if out, err := mysafe(t, "export", "--target", svc.url, "--token", admin, "--format", "ndjson", "--out", path); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("never-exported")) {
		t.Fatal("the export holds the client secret")
	}
	n := 0
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var row map[string]any
		if err := json.Unmarshal(line, &row); err != nil || row["hash"] == "" {
			t.Fatalf("line %s: %v", line, err)
		}
		n++
	}
	if n < 3 { // the admin's registration, the key, the secret
		t.Fatalf("%d lines; want at least 3", n)
	}
	if out, err := mysafe(t, "audit", "verify", "--target", svc.url, "--token", admin); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	if _, err := mysafe(t, "audit", "verify", "--target", svc.url); err == nil {
		t.Fatal("verify --target without a token succeeded")
	}
}
