package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/projections"
)

// shareAnswer is the part of the share dialog's answer the bench reads.
type shareAnswer struct {
	Position string            `json:"position"`
	Changes  []json.RawMessage `json:"changes"`
}

// toggle picks the share dialog's next click on a secret: odd clicks share
// it with its grantee, even ones share it with no one. The dialog sends the
// whole list, so whichever of two racing clicks lands last wins, and the
// state after a click is always the one it sent.
func (b *bencher) toggle(i int) (body []byte, share bool) {
	s := &b.w.secrets[i]
	if b.toggles[i].Add(1)%2 == 1 {
		return s.share, true
	}
	return s.unshare, false
}

// shareCommand clicks Share in the dialog of secret i, as its owner.
func (b *bencher) shareCommand(ctx context.Context, i int) (ans shareAnswer, share bool, err error) {
	s := &b.w.secrets[i]
	body, share := b.toggle(i)
	err = b.c.call(ctx, http.MethodPut, "/api/v1/secrets/"+s.id+"/shares", b.w.users[s.owner].token, body, nil, http.StatusOK, &ans)
	if err == nil {
		b.w.saw(ans.Position)
	}
	return ans, share, err
}

// counters reads the service-side counters, when the bench can see them.
func (b *bencher) counters() (conflicts, commits, appends uint64) {
	if b.env.Conflicts != nil {
		conflicts = b.env.Conflicts()
	}
	if b.env.StoreStats != nil {
		commits, appends = b.env.StoreStats()
	}
	return
}

// commands: clients click Share on random secrets of the pool, each click
// sharing or unsharing (see toggle), back to back.
func (b *bencher) commands(ctx context.Context) Result {
	conf0, commits0, appends0 := b.counters()
	var noops atomic.Int64
	out := closedLoop(ctx, b.p, "commands", b.cfg.Clients, b.cfg.Duration, func(ctx context.Context, _ int, rng *rand.Rand) error {
		ans, _, err := b.shareCommand(ctx, rng.IntN(len(b.w.secrets)))
		if err == nil && len(ans.Changes) == 0 {
			noops.Add(1)
		}
		return err
	})
	conf1, commits1, appends1 := b.counters()
	r := Result{Name: "commands", Kind: "scenario", Unit: "commands", Clients: b.cfg.Clients, Summary: out.summary(),
		ErrorSamples: out.firstErrors, Baseline: "store append",
		Extra: map[string]float64{"unchanged": float64(noops.Load())},
		Note:  fmt.Sprintf("PUT /api/v1/secrets/{id}/shares toggling one grantee on %d secrets; latency per request, closed loop", len(b.w.secrets))}
	if b.env.Conflicts != nil {
		r.Extra["conflictsRetried"] = float64(conf1 - conf0)
	}
	if b.env.StoreStats != nil && commits1 > commits0 {
		r.Extra["appendsPerCommit"] = float64(appends1-appends0) / float64(commits1-commits0)
	}
	return r
}

// reportPage is the part of a report page the lag scenario reads.
type reportPage struct {
	Items []struct {
		ID     string `json:"id"`
		Shared bool   `json:"shared"`
	} `json:"items"`
}

// lag: at a fixed offered rate (open loop: a slow answer does not delay
// the next command), click Share on a secret of its owner's first report
// page; as soon as the command answers, ask for that page with
// X-MySafe-Min-Position set to the command's position and check that the
// row shows the new Shared value. Lag is the time from the command's
// answer to that page's answer, so it includes one report request; every
// tenth command also sends the same request without the header at the same
// moment, which is the lag's baseline: what the read costs when it need
// not wait.
func (b *bencher) lag(ctx context.Context) []Result {
	pool := b.w.pageOne
	busy := make([]atomic.Bool, len(b.w.secrets))
	interval := time.Duration(float64(time.Second) / b.cfg.LagRate)
	var lagRec, cmdRec, baseRec recorder
	var skipped atomic.Int64
	stop := b.p.start("lag", b.cfg.Duration, &lagRec)
	var wg sync.WaitGroup
	start := time.Now()
	next := 0
	for i := 0; ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i) * interval)
		if due.Sub(start) >= b.cfg.Duration {
			break
		}
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		// A secret whose previous command is still being checked is
		// skipped: two clicks in flight on one secret would make the
		// expected Shared value ambiguous.
		idx := -1
		for k := range pool {
			if c := pool[(next+k)%len(pool)]; busy[c].CompareAndSwap(false, true) {
				idx, next = c, next+k+1
				break
			}
		}
		if idx < 0 {
			skipped.Add(1)
			continue
		}
		withBaseline := i%10 == 0
		wg.Go(func() {
			defer busy[idx].Store(false)
			b.lagOne(ctx, idx, due, withBaseline, &lagRec, &cmdRec, &baseRec)
		})
	}
	wg.Wait()
	stop()
	elapsed := time.Since(start)
	lagOut, cmdOut, baseOut := lagRec.outcome(elapsed), cmdRec.outcome(elapsed), baseRec.outcome(elapsed)
	cmd := cmdOut.summary()
	lag := Result{Name: "lag", Kind: "scenario", Unit: "commands", OfferedRate: b.cfg.LagRate, Summary: lagOut.summary(),
		ErrorSamples: append(cmdOut.firstErrors, lagOut.firstErrors...), Baseline: "report, no wait",
		Extra: map[string]float64{"commandP50Ms": float64(cmd.P50), "commandP99Ms": float64(cmd.P99), "skipped": float64(skipped.Load())},
		Note:  "latencies are lag: command answered → report page (X-MySafe-Min-Position) answered showing the change; command latencies from their scheduled send time"}
	lag.Rate = float64(cmd.Count) / elapsed.Seconds()
	lag.Errors += cmdOut.errors
	base := Result{Name: "report, no wait", Kind: "baseline", Unit: "requests", OfferedRate: b.cfg.LagRate / 10, Summary: baseOut.summary(),
		ErrorSamples: baseOut.firstErrors, Note: "the lag's report request without X-MySafe-Min-Position, sent beside every tenth lag check"}
	return []Result{base, lag}
}

func (b *bencher) lagOne(ctx context.Context, idx int, due time.Time, withBaseline bool, lagRec, cmdRec, baseRec *recorder) {
	ans, share, err := b.shareCommand(ctx, idx)
	answered := time.Now()
	if err != nil {
		if ctx.Err() == nil {
			cmdRec.fail(err)
		}
		return
	}
	cmdRec.add([]time.Duration{answered.Sub(due)})
	s := &b.w.secrets[idx]
	owner := b.w.users[s.owner].token
	var wg sync.WaitGroup
	if withBaseline {
		wg.Go(func() {
			t0 := time.Now()
			if err := b.c.call(ctx, http.MethodGet, "/api/v1/secrets", owner, nil, nil, http.StatusOK, &reportPage{}); err != nil {
				baseRec.fail(err)
				return
			}
			baseRec.add([]time.Duration{time.Since(t0)})
		})
	}
	defer wg.Wait()
	var page reportPage
	h := http.Header{"X-Mysafe-Min-Position": {ans.Position}}
	if err := b.c.call(ctx, http.MethodGet, "/api/v1/secrets", owner, nil, h, http.StatusOK, &page); err != nil {
		lagRec.fail(err)
		return
	}
	lag := time.Since(answered)
	for _, row := range page.Items {
		if row.ID != s.id {
			continue
		}
		if row.Shared != share {
			lagRec.fail(fmt.Errorf("secret %s: report shows shared=%v after a command at %s that set it to %v", s.id, row.Shared, ans.Position, share))
			return
		}
		lagRec.add([]time.Duration{lag})
		lagRec.ok.Add(1)
		return
	}
	lagRec.fail(fmt.Errorf("secret %s is not on its owner's first report page", s.id))
}

// queries: clients ask for a report page (30 rows), a secret's details, or
// the home page cards, back to back; each kind runs on its own.
func (b *bencher) queries(ctx context.Context) []Result {
	users, secrets := b.w.users, b.w.secrets
	kinds := []struct {
		name, note string
		fn         op
	}{
		{"queries/report", "GET /api/v1/secrets: the first page, 30 rows, of a random user's report", func(ctx context.Context, _ int, rng *rand.Rand) error {
			return b.c.call(ctx, http.MethodGet, "/api/v1/secrets", users[rng.IntN(len(users))].token, nil, nil, http.StatusOK, nil)
		}},
		{"queries/details", "GET /api/v1/secrets/{id} of a random secret, as its owner", func(ctx context.Context, _ int, rng *rand.Rand) error {
			s := &secrets[rng.IntN(len(secrets))]
			return b.c.call(ctx, http.MethodGet, "/api/v1/secrets/"+s.id, users[s.owner].token, nil, nil, http.StatusOK, nil)
		}},
		{"queries/cards", fmt.Sprintf("GET /api/v1/home/cards of a random user (%d cards)", len(secrets)/len(users)), func(ctx context.Context, _ int, rng *rand.Rand) error {
			return b.c.call(ctx, http.MethodGet, "/api/v1/home/cards", users[rng.IntN(len(users))].token, nil, nil, http.StatusOK, nil)
		}},
	}
	var out []Result
	for _, k := range kinds {
		o := closedLoop(ctx, b.p, k.name, b.cfg.Clients, b.cfg.Duration, k.fn)
		out = append(out, Result{Name: k.name, Kind: "scenario", Unit: "requests", Clients: b.cfg.Clients, Summary: o.summary(),
			ErrorSamples: o.firstErrors, Baseline: "redis GET", Note: k.note})
	}
	return out
}

// fillLog fills the log up to RebuildEvents events with share clicks
// through the API, for the rebuild, and waits until the live projections
// have applied them.
func (b *bencher) fillLog(ctx context.Context) error {
	if b.env.Store == nil || b.env.Redis == nil {
		return nil // rebuild is skipped
	}
	last, err := lastPosition(ctx, b.env.Store)
	if err != nil {
		return err
	}
	if missing := int64(b.cfg.RebuildEvents) - int64(last.Commit); missing > 0 {
		var rec recorder
		stop := b.p.start(fmt.Sprintf("rebuild: fill the log with %d share clicks", missing), 0, &rec)
		err := b.parallel(ctx, int(missing), func(ctx context.Context, i int) error {
			_, _, err := b.shareCommand(ctx, i%len(b.w.secrets))
			if err == nil {
				rec.ok.Add(1)
			}
			return err
		})
		stop()
		if err != nil {
			return fmt.Errorf("fill the log: %w", err)
		}
	}
	return b.caughtUp(ctx)
}

// rebuild replays the log into an empty key prefix with a second
// projector, as a blue/green rebuild does, and times it from start to
// ready (every projection has applied the log as it stood when it
// subscribed). fillErr is what filling the log up to RebuildEvents said.
func (b *bencher) rebuild(ctx context.Context, fillErr error) Result {
	r := Result{Name: "rebuild", Kind: "scenario", Unit: "events", Baseline: "redis pipelined SET"}
	if b.env.Store == nil || b.env.Redis == nil {
		r.Note = "skipped: needs the service's log and Redis, i.e. the service run by the bench (not --target)"
		return r
	}
	last, err := lastPosition(ctx, b.env.Store)
	if err == nil {
		err = fillErr
	}
	if err != nil {
		r.Errors, r.ErrorSamples = 1, []string{err.Error()}
		return r
	}

	prefix := b.env.Prefix + "rebuild:"
	reg := prometheus.NewRegistry()
	proj := projections.NewWithConfig(projections.Config{Store: b.env.Store, Redis: b.env.Redis, Prefix: prefix,
		Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	var rec recorder
	stop := b.p.start("rebuild", 0, &rec)
	start := time.Now()
	go func() { done <- proj.Run(runCtx) }()
	tick := time.NewTicker(time.Millisecond)
	var runErr error
wait:
	for !proj.Ready() {
		select {
		case <-tick.C:
			rec.ok.Store(int64(counterMax(reg, "mysafe_projection_events_total")))
		case runErr = <-done:
			break wait
		}
	}
	elapsed := time.Since(start)
	tick.Stop()
	stop()
	cancel()
	if runErr == nil {
		runErr = <-done
	}
	events, batches := counterMax(reg, "mysafe_projection_events_total"), counterMax(reg, "mysafe_projection_batches_total")
	r.Summary = Summary{Count: int(events), Seconds: elapsed.Seconds(), Rate: events / elapsed.Seconds()}
	r.Extra = map[string]float64{"batches": batches}
	if batches > 0 {
		r.Extra["eventsPerBatch"] = events / batches
	}
	if runErr != nil && ctx.Err() == nil {
		r.Errors, r.ErrorSamples = 1, []string{runErr.Error()}
	}
	r.Note = fmt.Sprintf("a second projector replays the log (%.0f events through position %s) into an empty prefix; start to ready", events, last)
	delCtx, delCancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer delCancel()
	if err := deletePrefix(delCtx, b.env.Redis, prefix); err != nil {
		r.ErrorSamples = append(r.ErrorSamples, "delete the rebuilt keys: "+err.Error())
	}
	return r
}

// lastPosition is the position of the log's last event.
func lastPosition(ctx context.Context, s eventstore.Store) (eventstore.Position, error) {
	last, err := s.ReadAll(ctx, eventstore.ReadAllOptions{Direction: eventstore.Backwards, From: eventstore.End, Max: 1})
	if err != nil || len(last) == 0 {
		return eventstore.Start, err
	}
	return last[0].Position, nil
}

// counterMax is the largest value of a counter family across its labels
// with result "ok" or no result label: the projections read the same log,
// so the largest is the number of events replayed.
func counterMax(reg *prometheus.Registry, name string) float64 {
	families, err := reg.Gather()
	if err != nil {
		return 0
	}
	var best float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() != "ok" {
					continue metrics
				}
			}
			best = max(best, m.GetCounter().GetValue())
		}
	}
	return best
}
