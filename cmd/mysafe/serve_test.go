package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/bolt"
	"github.com/mysafe/mysafe/eventstore/esdbtest"
	api "github.com/mysafe/mysafe/http"
	"github.com/mysafe/mysafe/http/scenario"
)

// running is one `mysafe serve` in this process.
type running struct {
	url    string
	stdout *lockedBuffer
	stop   func()
}

// start runs serve as the command does and waits until it listens.
func start(t *testing.T, cfg serveConfig) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	cfg.addr = "127.0.0.1:0"
	cfg.listening = func(a string) { addr <- a }
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, out) }()
	r := &running{stdout: out}
	select {
	case a := <-addr:
		r.url = "http://" + a
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("serve did not listen within 30 s")
	}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// TestServeOnEventStoreDB runs `serve --eventstore-url esdb://...` against
// the EventStoreDB protocol test server and walks the unshare flow.
func TestServeOnEventStoreDB(t *testing.T) {
	dataDir, logDir := t.TempDir(), t.TempDir()
	backing, err := bolt.Open(filepath.Join(logDir, "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backing.Close() })
	esdb, err := esdbtest.Start(backing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { esdb.Close() })

	cfg := serveConfig{dataDir: dataDir, eventstoreURL: esdb.URL(), redisPrefix: "mysafe:", waitTimeout: 5 * time.Second}
	svc := start(t, cfg)
	if !strings.Contains(svc.stdout.String(), "Admin token") {
		t.Errorf("a fresh data dir printed no admin token: %q", svc.stdout.String())
	}
	scenario.ShareAndUnshare(t, scenario.Env{
		URL: func() string { return svc.url },
		Token: func(t *testing.T, id, name string) string {
			key, err := os.ReadFile(filepath.Join(dataDir, signingKeyFile))
			if err != nil {
				t.Fatal(err)
			}
			token, err := api.IssueToken(key, api.Identity{UserID: id, Name: name, Role: api.RoleUser}, time.Hour, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return token
		},
		LogLength: func(t *testing.T) int {
			events, err := backing.ReadAll(context.Background(), eventstore.ReadAllOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return len(events)
		},
		Restart: func(t *testing.T) {
			svc.stop()
			svc = start(t, cfg)
			if strings.Contains(svc.stdout.String(), "Admin token") {
				t.Error("a second start printed the admin token again")
			}
		},
		Stop: func(*testing.T) { svc.stop() },
		RequireNotAtRest: func(t *testing.T, value string) {
			for _, dir := range []string{dataDir, logDir} {
				err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
					if err != nil || d.IsDir() {
						return err
					}
					b, err := os.ReadFile(path)
					if err == nil && bytes.Contains(b, []byte(value)) {
						return errors.New(path + " holds the value in plaintext")
					}
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
			}
		},
	})
}

// lockedBuffer is an io.Writer safe to read while serve writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
