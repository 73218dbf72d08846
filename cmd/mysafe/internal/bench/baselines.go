package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/bolt"
)

// baselineAppends measures what the disk allows the embedded store: the
// same number of clients appending one event each (the size of a share
// event) to a random one of as many streams as the commands scenario has
// secrets, every commit fsync'd, through the store's group commit. It uses
// a file of its own next to the service's log.
func (b *bencher) baselineAppends(ctx context.Context) Result {
	r := Result{Name: "store append", Kind: "baseline", Unit: "appends", Clients: b.cfg.Clients,
		Note: fmt.Sprintf("raw eventstore/bolt appends of one event to one of %d streams, fsync'd, group commit, in a file beside the service's log", len(b.w.secrets))}
	dir, err := os.MkdirTemp(b.env.Dir, "baseline-")
	if err != nil {
		r.Errors, r.ErrorSamples = 1, []string{err.Error()}
		return r
	}
	defer os.RemoveAll(dir)
	s, err := bolt.Open(filepath.Join(dir, "events.db"))
	if err != nil {
		r.Errors, r.ErrorSamples = 1, []string{err.Error()}
		return r
	}
	defer s.Close()
	data := []byte(`{"principal":{"type":"user","id":"bench-u001"},"permission":{"canView":true,"canEdit":false}}`)
	meta := []byte(`{"schema":1,"actor":{"id":"bench-u000","name":"Bench User 0"},"at":"2026-01-01T00:00:00Z","correlationId":"0f8fad5b-d9cb-469f-a165-70867728950e","ip":"127.0.0.1","userAgent":"Go-http-client/1.1"}`)
	streams := len(b.w.secrets)
	out := closedLoop(ctx, b.p, r.Name, b.cfg.Clients, b.cfg.BaselineDuration, func(ctx context.Context, _ int, rng *rand.Rand) error {
		e := eventstore.EventData{ID: uuid.New(), Type: "ShareGranted", Data: data, Metadata: meta}
		_, err := s.Append(ctx, "secret-baseline-"+strconv.Itoa(rng.IntN(streams)), eventstore.Any, e)
		return err
	})
	r.Summary, r.ErrorSamples = out.summary(), out.firstErrors
	if st := s.Stats(); st.Commits > 0 {
		r.Extra = map[string]float64{"appendsPerCommit": float64(st.Appends) / float64(st.Commits)}
	}
	return r
}

// baselineRedisRoundTrips measures single round trips to the read models'
// Redis with the service's client library at the same concurrency: PING,
// and GET of a value the size of a secret's details.
func (b *bencher) baselineRedisRoundTrips(ctx context.Context) []Result {
	ping := Result{Name: "redis PING", Kind: "baseline", Unit: "round trips", Clients: b.cfg.Clients}
	get := Result{Name: "redis GET", Kind: "baseline", Unit: "round trips", Clients: b.cfg.Clients}
	if b.env.Redis == nil {
		ping.Note, get.Note = "skipped: no Redis to measure (--redis-url)", "skipped: no Redis to measure (--redis-url)"
		return []Result{ping, get}
	}
	rdb := b.env.Redis
	value := b.docSizedValue(ctx)
	const keys = 1000
	prefix := b.env.Prefix + "baseline:get:"
	pipe := rdb.Pipeline()
	for i := range keys {
		pipe.Set(ctx, prefix+strconv.Itoa(i), value, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		get.Errors, get.ErrorSamples = 1, []string{err.Error()}
		return []Result{get}
	}
	defer deletePrefix(context.WithoutCancel(ctx), rdb, prefix)

	o := closedLoop(ctx, b.p, ping.Name, b.cfg.Clients, b.cfg.BaselineDuration, func(ctx context.Context, _ int, _ *rand.Rand) error {
		return rdb.Ping(ctx).Err()
	})
	ping.Summary, ping.ErrorSamples = o.summary(), o.firstErrors
	o = closedLoop(ctx, b.p, get.Name, b.cfg.Clients, b.cfg.BaselineDuration, func(ctx context.Context, _ int, rng *rand.Rand) error {
		return rdb.Get(ctx, prefix+strconv.Itoa(rng.IntN(keys))).Err()
	})
	get.Summary, get.ErrorSamples = o.summary(), o.firstErrors
	get.Note = fmt.Sprintf("GET of a %d-byte value (a secret's details) from %d keys", len(value), keys)
	return []Result{ping, get}
}

// baselineRedisPipelined measures what a rebuild could reach at best: one
// writer (a projection is one ordered writer) sending SETs of a secret
// document's size in pipelines of a projection batch's size.
func (b *bencher) baselineRedisPipelined(ctx context.Context) Result {
	r := Result{Name: "redis pipelined SET", Kind: "baseline", Unit: "writes", Clients: 1}
	if b.env.Redis == nil {
		r.Note = "skipped: no Redis to measure (--redis-url)"
		return r
	}
	rdb := b.env.Redis
	value := b.docSizedValue(ctx)
	prefix := b.env.Prefix + "baseline:set:"
	defer deletePrefix(context.WithoutCancel(ctx), rdb, prefix)
	const batch = 256
	var mu sync.Mutex
	writes := 0
	o := closedLoop(ctx, b.p, r.Name, 1, b.cfg.BaselineDuration, func(ctx context.Context, _ int, rng *rand.Rand) error {
		pipe := rdb.Pipeline()
		for range batch {
			pipe.Set(ctx, prefix+strconv.Itoa(rng.IntN(20000)), value, 0)
		}
		_, err := pipe.Exec(ctx)
		if err == nil {
			mu.Lock()
			writes += batch
			mu.Unlock()
		}
		return err
	})
	r.Summary, r.ErrorSamples = o.summary(), o.firstErrors
	r.Count, r.Rate = writes, float64(writes)/o.elapsed.Seconds()
	r.Note = fmt.Sprintf("pipelines of %d SETs of %d bytes, one writer; latencies are per pipeline", batch, len(value))
	return r
}

// docSizedValue is a secret's details as the API shows them, so that
// baselines move as many bytes as the service does.
func (b *bencher) docSizedValue(ctx context.Context) []byte {
	s := b.w.secrets[0]
	var raw []byte
	if err := b.c.call(ctx, http.MethodGet, "/api/v1/secrets/"+s.id, b.w.users[s.owner].token, nil, nil, http.StatusOK, &raw); err != nil || len(raw) < 256 {
		return []byte(strings.Repeat("x", 700))
	}
	return raw
}

// deletePrefix deletes the keys under prefix, and nothing else (the Redis
// may be shared): SCAN MATCH and DEL in batches.
func deletePrefix(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	iter := rdb.Scan(ctx, 0, globEscape(prefix)+"*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := rdb.Del(ctx, batch...).Err()
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

// DeletePrefix deletes the keys under prefix; the bench command calls it
// when the run is over.
func DeletePrefix(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	return deletePrefix(ctx, rdb, prefix)
}

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
