package http_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/domain/secretbox"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/bolt"
	"github.com/mysafe/mysafe/eventstore/esdb"
	"github.com/mysafe/mysafe/eventstore/esdbtest"
	api "github.com/mysafe/mysafe/http"
	"github.com/mysafe/mysafe/http/scenario"
	"github.com/mysafe/mysafe/projections"
	"github.com/mysafe/mysafe/projections/redistest"
)

// backend opens the event store the service runs on, over the files in dir.
type backend func(t *testing.T, dir string) eventstore.Store

func embedded(t *testing.T, dir string) eventstore.Store {
	s, err := bolt.Open(filepath.Join(dir, "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// overESDB runs the service through the EventStoreDB adapter, talking the
// gRPC protocol to a test server backed by the embedded store.
func overESDB(t *testing.T, dir string) eventstore.Store {
	backing := embedded(t, dir)
	srv, err := esdbtest.Start(backing)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := esdb.Open(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	return closeAll{Store: s, also: []func() error{srv.Close, backing.Close}}
}

// closeAll is a store that closes what stands behind it too, so that a
// restart can open the same files again.
type closeAll struct {
	eventstore.Store
	also []func() error
}

func (c closeAll) Close() error {
	err := c.Store.Close()
	for _, f := range c.also {
		f()
	}
	return err
}

// service is mysafe's API with everything behind it, as serve wires it.
type service struct {
	t      *testing.T
	url    string
	store  eventstore.Store
	rdb    redis.UniversalClient
	prefix string
	stop   func()
}

var (
	masterKey  = bytes.Repeat([]byte{1}, secretbox.KeySize)
	signingKey = bytes.Repeat([]byte{2}, 32)
)

func startService(t *testing.T, store eventstore.Store, rdb redis.UniversalClient, prefix string) *service {
	t.Helper()
	keys, err := secretbox.New(masterKey)
	if err != nil {
		t.Fatal(err)
	}
	projector := projections.New(store, rdb, prefix, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- projector.Run(ctx) }()
	srv := httptest.NewServer(api.NewServer(api.Config{
		Store: store, Keys: keys, SigningKey: signingKey,
		ReadModels: projections.NewReader(rdb, prefix), Progress: projector,
		Ping: func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
	}))
	s := &service{t: t, url: srv.URL, store: store, rdb: rdb, prefix: prefix}
	var stopped bool
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		srv.Close()
		cancel()
		<-done
		store.Close()
	}
	t.Cleanup(s.stop)
	return s
}

func TestShareAndUnshareEndToEnd(t *testing.T) {
	for name, open := range map[string]backend{"embedded": embedded, "eventstoredb-adapter": overESDB} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			rdb, prefix := redistest.New(t)
			svc := startService(t, open(t, dir), rdb, prefix)
			prefixes := []string{prefix}
			scenario.ShareAndUnshare(t, scenario.Env{
				URL: func() string { return svc.url },
				Token: func(t *testing.T, id, name string) string {
					token, err := api.IssueToken(signingKey, api.Identity{UserID: id, Name: name, Role: api.RoleUser}, time.Hour, time.Now())
					if err != nil {
						t.Fatal(err)
					}
					return token
				},
				LogLength: func(t *testing.T) int { return logLength(t, svc.store) },
				Restart: func(t *testing.T) {
					svc.stop()
					_, prefix := redistest.New(t) // an empty prefix: the read models rebuild from the log
					prefixes = append(prefixes, prefix)
					svc = startService(t, open(t, dir), rdb, prefix)
				},
				Stop: func(*testing.T) { svc.stop() },
				RequireNotAtRest: func(t *testing.T, value string) {
					requireNotInDir(t, dir, value)
					for _, p := range prefixes {
						requireNotInRedis(t, rdb, p, value)
					}
				},
			})
		})
	}
}

func logLength(t *testing.T, s eventstore.Store) int {
	t.Helper()
	events, err := s.ReadAll(context.Background(), eventstore.ReadAllOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(events)
}

func requireNotInDir(t *testing.T, dir, plaintext string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, []byte(plaintext)) {
			return fmt.Errorf("%s holds the client secret in plaintext", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func requireNotInRedis(t *testing.T, rdb redis.UniversalClient, prefix, plaintext string) {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, prefix+"*").Result() // only this test's keys
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("no read-model keys to search")
	}
	for _, k := range keys {
		var values []string
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			values = []string{rdb.Get(ctx, k).Val()}
		case "zset":
			values = rdb.ZRange(ctx, k, 0, -1).Val()
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				values = append(values, f, v)
			}
		case "set":
			values = rdb.SMembers(ctx, k).Val()
		case "list":
			values = rdb.LRange(ctx, k, 0, -1).Val()
		default:
			t.Fatalf("Redis key %s has type %q, which this check cannot read", k, typ)
		}
		for _, v := range values {
			if strings.Contains(v, plaintext) {
				t.Fatalf("Redis key %s holds the client secret in plaintext", k)
			}
		}
	}
}
