// Package redistest gives tests a Redis to talk to and a key prefix of
// their own.
//
// The Redis is, in order: the one at $MYSAFE_TEST_REDIS_URL (a test fails if
// it is set but unreachable: CI must not pass silently on a fallback); else
// a redis-server on 127.0.0.1:6379 if one answers; else an in-process
// miniredis. $MYSAFE_TEST_REDIS_DISABLE=1 skips the first two and goes
// straight to miniredis, to test that path on a machine that runs Redis.
//
// A shared Redis may hold other people's keys, so each test gets a unique
// prefix, and cleanup deletes only the keys under it; never FLUSHDB.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Environment variables read by New.
const (
	EnvURL     = "MYSAFE_TEST_REDIS_URL"
	EnvDisable = "MYSAFE_TEST_REDIS_DISABLE"
)

// LocalAddr is where New looks for a redis-server when EnvURL is unset.
const LocalAddr = "127.0.0.1:6379"

// probe remembers whether LocalAddr answered, so that a package's tests
// dial it once.
var probe = sync.OnceValue(func() bool {
	c := redis.NewClient(&redis.Options{Addr: LocalAddr, DialTimeout: 300 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Ping(ctx).Err() == nil
})

// New returns a client and a fresh key prefix ("mysafetest:<random hex>:")
// for one test. Cleanup deletes the keys under the prefix and closes the
// client (and the miniredis, if one was started).
func New(t testing.TB) (redis.UniversalClient, string) {
	t.Helper()
	client, kind := connect(t)
	prefix := "mysafetest:" + randomHex(t) + ":"
	t.Logf("redistest: %s, prefix %q", kind, prefix)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := DeletePrefix(ctx, client, prefix); err != nil {
			t.Errorf("redistest: delete keys under %q: %v", prefix, err)
		}
		client.Close()
	})
	return client, prefix
}

func connect(t testing.TB) (redis.UniversalClient, string) {
	t.Helper()
	if os.Getenv(EnvDisable) == "" {
		if url := os.Getenv(EnvURL); url != "" {
			opts, err := redis.ParseURL(url)
			if err != nil {
				t.Fatalf("redistest: %s=%q: %v", EnvURL, url, err)
			}
			c := redis.NewClient(opts)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.Ping(ctx).Err(); err != nil {
				c.Close()
				t.Fatalf("redistest: %s=%q is set but does not answer: %v", EnvURL, url, err)
			}
			return c, "redis at " + EnvURL
		}
		if probe() {
			return redis.NewClient(&redis.Options{Addr: LocalAddr}), "redis-server at " + LocalAddr
		}
	}
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		t.Fatalf("redistest: start miniredis: %v", err)
	}
	t.Cleanup(m.Close) // runs after the client's cleanup, registered later
	return redis.NewClient(&redis.Options{Addr: m.Addr()}), "miniredis"
}

// DeletePrefix deletes every key that starts with prefix (on a single
// Redis; a cluster client would scan one node only).
func DeletePrefix(ctx context.Context, client redis.UniversalClient, prefix string) error {
	iter := client.Scan(ctx, 0, globEscape(prefix)+"*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := client.Del(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	return flush()
}

func randomHex(t testing.TB) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return hex.EncodeToString(b)
}

// globEscape quotes the characters SCAN MATCH treats as a pattern, so
// that a prefix matches only itself.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
