package projections

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// counting counts the batches a projection is handed.
type counting struct {
	Projection
	calls, events atomic.Int64
}

func (c *counting) Apply(ctx context.Context, b Batch) (eventstore.Position, error) {
	c.calls.Add(1)
	c.events.Add(int64(len(b.Events)))
	return c.Projection.Apply(ctx, b)
}

// history appends a varied log: users, secrets created, shared, changed,
// revoked, revealed, disabled; about 12 events per secret.
func history(w *world, secrets int, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, 1))
	users := []string{"u0", "u1", "u2", "u3", "u4"}
	for i, u := range users {
		if w.known[u] {
			continue
		}
		w.known[u] = true
		w.user(u, fmt.Sprintf("User %d", i))
	}
	for i := range secrets {
		owner := users[rnd.IntN(len(users))]
		id := fmt.Sprintf("s%d-%03d", seed, i)
		grantee := users[(slicesIndex(users, owner)+1+rnd.IntN(len(users)-1))%len(users)]
		other := users[(slicesIndex(users, grantee)+1)%len(users)]
		name := fmt.Sprintf("Renamed %d", i)
		cmds := []any{create(id, fmt.Sprintf("Secret %d", i), "t"+fmt.Sprint(i%3)), share(grantee, false)}
		if other != owner {
			cmds = append(cmds, share(other, true))
		}
		cmds = append(cmds, domain.RevealSecret{}, domain.ChangeSharePermission{Grant: domain.Grant{
			Principal: domain.User(grantee), Permission: domain.Permission{CanView: true, CanEdit: true}}})
		if rnd.IntN(2) == 0 {
			cmds = append(cmds, revoke(grantee))
		}
		cmds = append(cmds, domain.UpdateSecret{Changes: domain.SecretChanges{Name: &name}},
			domain.CopySecret{Field: "url"}, domain.DisableSecret{})
		if rnd.IntN(2) == 0 {
			cmds = append(cmds, domain.EnableSecret{}, domain.RevealSecret{})
		}
		// Split into a few appends, as separate requests would.
		cut := 1 + rnd.IntN(len(cmds)-1)
		w.secret(owner, id, cmds[:cut]...)
		w.secret(owner, id, cmds[cut:]...)
	}
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// rebuild projects the whole log into a fresh prefix and returns its dump.
func rebuild(t *testing.T, w *world) map[string]string {
	t.Helper()
	rdb, prefix := newRedis(t)
	p := testProjector(w.store, rdb, prefix, 0)
	stop := run(t, p)
	waitFor(t, p, w.last)
	stop()
	return dump(t, rdb, prefix)
}

func TestRebuildPacksMicroBatchesAndBecomesReady(t *testing.T) {
	w := newWorld(t)
	w.user("alice", "Alice")
	w.user("bob", "Bob")
	for i := range 100 {
		id := fmt.Sprintf("s%d", i)
		cmds := []any{create(id, "Secret "+id), share("bob", false)}
		for range 17 {
			cmds = append(cmds, domain.RevealSecret{})
		}
		w.secret("alice", id, append(cmds, revoke("bob"))...)
	}
	const events = 2 + 100*20

	rdb, prefix := newRedis(t)
	c := &counting{Projection: NewSecrets(rdb, prefix, quietLogger())}
	p := testProjector(w.store, rdb, prefix, 0, c)
	if p.Ready() {
		t.Error("ready before running")
	}
	run(t, p)
	waitFor(t, p, w.last)
	waitReady(t, p)

	if got := c.events.Load(); got != events {
		t.Errorf("%d events handled, want %d", got, events)
	}
	calls := c.calls.Load()
	t.Logf("%d events rebuilt in %d batches", events, calls)
	if calls > events/10 {
		t.Errorf("%d batches for %d events: want micro-batches during catch-up", calls, events)
	}
	cards, err := NewReader(rdb, prefix).Cards(context.Background(), "alice")
	if err != nil || len(cards) != 100 {
		t.Errorf("alice has %d cards (%v), want 100", len(cards), err)
	}
}

func waitReady(t *testing.T, p *Projector) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !p.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStopAndRestartEndsLikeACleanRebuild(t *testing.T) {
	w := newWorld(t)
	history(w, 40, 1)
	rdb, prefix := newRedis(t)

	// Stop the projector at arbitrary points, small batches so that there
	// are many of them to stop between; between runs, redeliver a batch
	// overlapping the checkpoint, as after a crash between EXEC and ack.
	rnd := rand.New(rand.NewPCG(2, 2))
	for i := range 5 {
		p := testProjector(w.store, rdb, prefix, 1+rnd.IntN(8))
		stop := run(t, p)
		time.Sleep(time.Duration(rnd.IntN(20)) * time.Millisecond)
		stop()
		t.Logf("stopped at %s", p.Positions()[SecretsProjection])
		full := readAll(t, w.store, NewSecrets(rdb, prefix, nil))
		some := Batch{Events: full.Events[:len(full.Events)*(i+1)/6]}
		some.Position = some.Events[len(some.Events)-1].Position
		if _, err := NewSecrets(rdb, prefix, quietLogger()).Apply(context.Background(), some); err != nil {
			t.Fatal(err)
		}
	}
	// More history while it is down, then a last run to the end.
	history(w, 5, 3)
	p := testProjector(w.store, rdb, prefix, 3)
	stop := run(t, p)
	waitFor(t, p, w.last)
	stop()

	diffDumps(t, dump(t, rdb, prefix), rebuild(t, w))
}

func TestTwoProjectorsOnOnePrefixApplyEachEventOnce(t *testing.T) {
	// A stale second instance (a lost lease) must not double-apply: the
	// WATCHed checkpoint fences it.
	w := newWorld(t)
	history(w, 30, 4)
	rdb, prefix := newRedis(t)
	a, b := testProjector(w.store, rdb, prefix, 4), testProjector(w.store, rdb, prefix, 5)
	run(t, a)
	run(t, b)
	waitFor(t, a, w.last)
	waitFor(t, b, w.last)
	diffDumps(t, dump(t, rdb, prefix), rebuild(t, w))
}

// flaky fails its first calls, one of them by panicking.
type flaky struct {
	Projection
	calls atomic.Int64
}

func (f *flaky) Apply(ctx context.Context, b Batch) (eventstore.Position, error) {
	switch f.calls.Add(1) {
	case 1:
		panic("boom")
	case 2, 3:
		return eventstore.Position{}, errors.New("redis hiccup")
	}
	return f.Projection.Apply(ctx, b)
}

func TestFailingBatchesAreRetriedNotSkipped(t *testing.T) {
	w := newWorld(t)
	history(w, 5, 5)
	rdb, prefix := newRedis(t)
	p := testProjector(w.store, rdb, prefix, 0, &flaky{Projection: NewSecrets(rdb, prefix, quietLogger())})
	run(t, p)
	waitFor(t, p, w.last)
	diffDumps(t, dump(t, rdb, prefix), rebuild(t, w))
}

func TestWaitForGivesReadYourWrites(t *testing.T) {
	f := newFixture(t)
	f.user("alice", "Alice")
	f.user("bob", "Bob")
	ctx := context.Background()
	if err := f.p.WaitFor(ctx, eventstore.Start); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		id := fmt.Sprintf("s%d", i)
		f.secret("alice", id, create(id, "One"))
		pos := f.secret("alice", id, share("bob", false))
		waitFor(t, f.p, pos)
		if d := f.details(t, id); d == nil || !d.Shared {
			t.Fatalf("after WaitFor(%s): %+v, want %s shared", pos, d, id)
		}
		pos = f.secret("alice", id, revoke("bob"))
		waitFor(t, f.p, pos)
		if page := f.report(t, "alice", ReportQuery{}); page.Items[0].Shared {
			t.Fatalf("after WaitFor(%s) of the unshare: %s still shared", pos, id)
		}
	}
	if got := f.p.Positions()[SecretsProjection]; got.Compare(f.last) < 0 {
		t.Errorf("Positions: %s, want at least %s", got, f.last)
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	far := eventstore.Position{Commit: 1 << 40, Prepare: 1 << 40}
	if err := f.p.WaitFor(short, far); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor a position never reached: %v, want context.DeadlineExceeded", err)
	}
}

func TestRestartKnowsItsCheckpointAtOnce(t *testing.T) {
	w := newWorld(t)
	history(w, 3, 6)
	rdb, prefix := newRedis(t)
	p := testProjector(w.store, rdb, prefix, 0)
	stop := run(t, p)
	waitFor(t, p, w.last)
	stop()

	p = testProjector(w.store, rdb, prefix, 0)
	run(t, p)
	waitFor(t, p, w.last) // from the stored checkpoint, with nothing new to apply
	waitReady(t, p)
}

func TestRunEndsWithAnErrorWhenTheStoreCloses(t *testing.T) {
	w := newWorld(t)
	rdb, prefix := newRedis(t)
	p := testProjector(w.store, rdb, prefix, 0)
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	waitReady(t, p)
	w.store.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Run returned nil after the store closed; want an error")
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after the store closed")
	}
}

func TestMetrics(t *testing.T) {
	w := newWorld(t)
	history(w, 2, 7)
	rdb, prefix := newRedis(t)
	reg := prometheus.NewRegistry()
	p := NewWithConfig(Config{Store: w.store, Redis: rdb, Prefix: prefix, Logger: quietLogger(), Registerer: reg})
	run(t, p)
	waitFor(t, p, w.last)
	// A second projector on the same registry shares the collectors.
	NewWithConfig(Config{Store: w.store, Redis: rdb, Prefix: prefix, Logger: quietLogger(), Registerer: reg})

	// The batch metrics are taken after the handler returns, a moment
	// after WaitFor sees its progress.
	var got map[string]float64
	deadline := time.Now().Add(wait)
	for {
		got = gather(t, reg)
		if got["mysafe_projection_batches_total"] > 0 && got["mysafe_projection_batch_duration_seconds"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch metrics missing: %v", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Each projection counts the events it reads, under its own label.
	all := readAll(t, w.store, NewSecrets(rdb, prefix, nil))
	if n := labelled(t, reg, "mysafe_projection_events_total", SecretsProjection); n != float64(len(all.Events)) {
		t.Errorf("events_total{projection=secrets} %v, want %d", n, len(all.Events))
	}
}

// labelled is a counter's value for one projection.
func labelled(t *testing.T, reg *prometheus.Registry, name, projection string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if f.GetName() == name && l.GetName() == "projection" && l.GetValue() == projection {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// gather sums each metric family's counters and histogram sample counts.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			got[f.GetName()] += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return got
}
