package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/bolt"
	"github.com/mysafe/mysafe/projections/redistest"
)

// world is an event store that tests fill through the domain, as the
// command side does: fold the stream, decide, encode, append.
type world struct {
	t     testing.TB
	store eventstore.Store
	now   time.Time
	last  eventstore.Position // of the last event appended
	known map[string]bool     // users registered by history
}

func newWorld(t testing.TB) *world {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &world{t: t, store: s, now: time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC), known: map[string]bool{}}
}

// meta stamps an event by actor, one minute after the previous one.
func (w *world) meta(actor string) domain.Meta {
	w.now = w.now.Add(time.Minute)
	return domain.Meta{Actor: domain.Actor{ID: actor}, At: w.now, CorrelationID: "corr-" + actor}
}

func encode(events []domain.Event) ([]eventstore.EventData, error) {
	out := make([]eventstore.EventData, len(events))
	for i, e := range events {
		typ, data, meta, err := domain.Encode(e)
		if err != nil {
			return nil, err
		}
		out[i] = eventstore.EventData{Type: typ, Data: data, Metadata: meta}
	}
	return out, nil
}

func (w *world) execute(stream string, decide func(history []domain.Event) ([]domain.Event, error)) eventstore.Position {
	w.t.Helper()
	res, err := eventstore.Execute(context.Background(), w.store, eventstore.Command{
		Stream: stream,
		Decide: func(history []eventstore.RecordedEvent) ([]eventstore.EventData, error) {
			var past []domain.Event
			for _, r := range history {
				if !domain.IsKnownEventType(r.Type) {
					continue // from a newer version
				}
				e, err := domain.Decode(r.Type, r.Data, r.Metadata)
				if err != nil {
					return nil, err
				}
				past = append(past, e)
			}
			events, err := decide(past)
			if err != nil {
				return nil, err
			}
			return encode(events)
		},
	})
	if err != nil {
		w.t.Fatalf("%s: %v", stream, err)
	}
	w.last = res.Position
	return res.Position
}

// user registers a user.
func (w *world) user(id, name string) eventstore.Position {
	w.t.Helper()
	return w.execute(domain.UserStream(id), func(past []domain.Event) ([]domain.Event, error) {
		var u domain.UserRecord
		for _, e := range past {
			u.Apply(e)
		}
		return domain.DecideUser(u, domain.RegisterUser{UserID: id, Name: name, Email: id + "@example.com"}, w.meta(id))
	})
}

// secret runs commands by actor on a secret, in order, and appends all
// their events at once.
func (w *world) secret(actor, id string, cmds ...any) eventstore.Position {
	w.t.Helper()
	return w.execute(domain.SecretStream(id), func(past []domain.Event) ([]domain.Event, error) {
		s := domain.Secret{ID: id}
		for _, e := range past {
			s.Apply(e)
		}
		var out []domain.Event
		for _, c := range cmds {
			events, err := domain.DecideSecret(s, c, w.meta(actor))
			if err != nil {
				return nil, fmt.Errorf("%T: %w", c, err)
			}
			for _, e := range events {
				s.Apply(e)
			}
			out = append(out, events...)
		}
		return out, nil
	})
}

func create(id, name string, tags ...string) domain.CreateSecret {
	return domain.CreateSecret{SecretID: id, Fields: domain.SecretFields{
		Name: name, URL: "https://api.example.com/" + id, ClientID: "client-" + id, Tags: tags,
	}}
}

func share(user string, canEdit bool) domain.ShareSecret {
	return domain.ShareSecret{Grant: domain.Grant{Principal: domain.User(user),
		Permission: domain.Permission{CanView: true, CanEdit: canEdit}}}
}

func revoke(user string) domain.RevokeShare { return domain.RevokeShare{Principal: domain.User(user)} }

// run starts a projector and returns it with a func that stops it and
// checks that Run ended cleanly.
func run(t testing.TB, p *Projector) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(wait):
			t.Error("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func testProjector(store eventstore.Store, rdb redis.UniversalClient, prefix string, maxBatch int, projections ...Projection) *Projector {
	cfg := Config{Store: store, Redis: rdb, Prefix: prefix, Logger: quietLogger(),
		Registerer: prometheus.NewRegistry(), MaxBatch: maxBatch}
	if len(projections) == 0 {
		projections = []Projection{NewSecrets(rdb, prefix, cfg.Logger)}
	}
	return newProjector(cfg, projections...)
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testWriter discards logs; switch to os.Stderr when debugging.
type testWriter struct{}

func (testWriter) Write(p []byte) (int, error) { return len(p), nil }

func waitFor(t testing.TB, p *Projector, pos eventstore.Position) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := p.WaitFor(ctx, pos); err != nil {
		t.Fatalf("WaitFor(%s): %v (at %v)", pos, err, p.Positions())
	}
}

// dump reads every key under prefix, the prefix cut off: strings as they
// are, sorted sets as "member=score" lines in order.
func dump(t testing.TB, rdb redis.UniversalClient, prefix string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		typ, err := rdb.Type(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v string
		switch typ {
		case "string":
			v, err = rdb.Get(ctx, key).Result()
		case "zset":
			var zs []redis.Z
			zs, err = rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
			var lines []string
			for _, z := range zs {
				lines = append(lines, fmt.Sprintf("%v=%v", z.Member, z.Score))
			}
			v = strings.Join(lines, "\n")
		case "set":
			var members []string
			members, err = rdb.SMembers(ctx, key).Result()
			slices.Sort(members)
			v = strings.Join(members, "\n")
		default:
			t.Fatalf("key %s has unexpected type %s", key, typ)
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(key, prefix)] = v
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func diffDumps(t testing.TB, got, want map[string]string) {
	t.Helper()
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	bad := 0
	for _, k := range keys {
		g, gok := got[k]
		w, wok := want[k]
		if g != w || gok != wok {
			bad++
			if bad <= 5 {
				t.Errorf("key %s:\n got  %q (present %v)\n want %q (present %v)", k, g, gok, w, wok)
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d keys differ in all", bad)
	}
}

// readAll returns the events a projection reads, as one batch.
func readAll(t testing.TB, store eventstore.Store, proj Projection) Batch {
	t.Helper()
	all, err := store.ReadAll(context.Background(), eventstore.ReadAllOptions{From: eventstore.Start})
	if err != nil {
		t.Fatal(err)
	}
	opts := eventstore.SubscribeAllOptions{StreamPrefixes: proj.StreamPrefixes()}
	var b Batch
	for _, e := range all {
		if opts.PassesFilter(e.StreamID) {
			b.Events = append(b.Events, e)
			b.Position = e.Position
		}
	}
	return b
}

func newRedis(t testing.TB) (redis.UniversalClient, string) {
	t.Helper()
	return redistest.New(t)
}

func newID() uuid.UUID { return uuid.New() }
