package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mysafe/mysafe/eventstore"
)

// memory fills the log up to MemorySecrets secrets and MemoryEvents events
// through the API, restarts the service as a process of its own on that
// log with an empty key prefix, and samples its resident memory while it
// rebuilds the read models and then while it serves a mixed load for
// Duration: share clicks, details, report pages.
func (b *bencher) memory(ctx context.Context) Result {
	r := Result{Name: "memory", Kind: "scenario", Unit: "events"}
	if b.env.Restart == nil || b.env.Store == nil {
		r.Note = "skipped: needs the service run by the bench (not --target)"
		return r
	}
	fail := func(err error) Result {
		r.Errors++
		r.ErrorSamples = append(r.ErrorSamples, err.Error())
		return r
	}
	if err := b.fillSecrets(ctx, b.cfg.MemorySecrets); err != nil {
		return fail(err)
	}
	if err := b.fillEvents(ctx, b.cfg.MemoryEvents); err != nil {
		return fail(err)
	}
	last, err := lastPosition(ctx, b.env.Store)
	if err != nil {
		return fail(err)
	}

	url, pid, external, err := b.env.Restart(ctx)
	if err != nil {
		return fail(fmt.Errorf("restart the service: %w", err))
	}
	b.env.Store = nil // closed with the service that owned it
	b.c.close()
	b.c = newClient(url, b.cfg.Clients*2)
	sampler := newRSSSampler(pid)
	defer sampler.stop()

	var rec recorder
	stop := b.p.start(fmt.Sprintf("memory: a new process (pid %d) rebuilds %d events", pid, last.Commit), 0, &rec)
	start := time.Now()
	err = b.waitReady(ctx)
	rebuilt := time.Since(start)
	stop()
	if err != nil {
		return fail(err)
	}
	afterRebuild := sampler.sample()
	sampler.setPhase("load")

	users, secrets := b.w.users, b.w.secrets
	out := closedLoop(ctx, b.p, "memory: mixed load", b.cfg.Clients, b.cfg.Duration, func(ctx context.Context, _ int, rng *rand.Rand) error {
		switch i := rng.IntN(10); {
		case i < 2:
			_, _, err := b.shareCommand(ctx, rng.IntN(len(secrets)))
			return err
		case i < 7:
			s := &secrets[rng.IntN(len(secrets))]
			return b.c.call(ctx, http.MethodGet, "/api/v1/secrets/"+s.id, users[s.owner].token, nil, nil, http.StatusOK, nil)
		default:
			return b.c.call(ctx, http.MethodGet, "/api/v1/secrets", users[rng.IntN(len(users))].token, nil, nil, http.StatusOK, nil)
		}
	})
	end := sampler.sample()
	if end.err != nil {
		return fail(end.err)
	}
	mb := func(kb int64) float64 { return float64(kb) / 1024 }
	r.Summary = Summary{Count: int(last.Commit), Errors: out.errors, Seconds: rebuilt.Seconds(), Rate: float64(last.Commit) / rebuilt.Seconds()}
	r.ErrorSamples = out.firstErrors
	r.Extra = map[string]float64{
		"secrets": float64(len(secrets)), "events": float64(last.Commit),
		"peakRssMB": mb(end.hwm), "rssAfterRebuildMB": mb(afterRebuild.rss), "rssAfterLoadMB": mb(end.rss),
		"rssAnonMB": mb(end.anon), "rssFileMB": mb(end.file), "loadRequestsPerSecond": out.summary().Rate,
	}
	sampler.mu.Lock()
	for phase, p := range sampler.peaks {
		r.Extra["sampledPeakRssMB/"+phase] = mb(p.rss)
		r.Extra["sampledPeakAnonMB/"+phase] = mb(p.anon)
		r.Extra["sampledPeakFileMB/"+phase] = mb(p.file)
	}
	sampler.mu.Unlock()
	r.Note = fmt.Sprintf("mysafe serve as its own process (pid %d) on the filled log and an empty prefix: rebuild %s (rate = events/s of that rebuild), then %s of mixed load; RSS from /proc, peak = VmHWM; file = bbolt's mapped log pages",
		pid, rebuilt.Round(time.Millisecond), b.cfg.Duration)
	if !external {
		r.Note += "; the read models live in the in-process Redis, inside this RSS (use --redis-url to measure the service alone)"
	}
	return r
}

// fillSecrets creates secrets through the API until there are n, owners
// and grantees taken round robin; they join the pool the other scenarios
// use.
func (b *bencher) fillSecrets(ctx context.Context, n int) error {
	have := len(b.w.secrets)
	if n <= have {
		return nil
	}
	more := make([]secret, n-have)
	var rec recorder
	stop := b.p.start(fmt.Sprintf("memory: create %d secrets", n-have), 0, &rec)
	defer stop()
	err := b.parallel(ctx, len(more), func(ctx context.Context, i int) error {
		s, err := b.createSecret(ctx, have+i)
		more[i] = s
		if err == nil {
			rec.ok.Add(1)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create secrets: %w", err)
	}
	b.w.secrets = append(b.w.secrets, more...)
	b.toggles = make([]atomic.Uint64, len(b.w.secrets)) // parity restarts; unchanged clicks are fine
	return nil
}

// fillEvents clicks Share through the API until the log holds n events.
func (b *bencher) fillEvents(ctx context.Context, n int) error {
	last, err := lastPosition(ctx, b.env.Store)
	if err != nil {
		return err
	}
	missing := int64(n) - int64(last.Commit)
	if missing <= 0 {
		return nil
	}
	var rec recorder
	stop := b.p.start(fmt.Sprintf("memory: fill the log with %d share clicks", missing), 0, &rec)
	defer stop()
	var next atomic.Int64
	return b.parallel(ctx, int(missing), func(ctx context.Context, _ int) error {
		_, _, err := b.shareCommand(ctx, int(next.Add(1))%len(b.w.secrets))
		if err == nil {
			rec.ok.Add(1)
		}
		return err
	})
}

// waitReady polls /readyz until the service has caught up with its log.
func (b *bencher) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Minute)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.c.base+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := b.c.http.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the restarted service was not ready within 30 minutes")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// createSecret creates the i-th bench secret through the API.
func (b *bencher) createSecret(ctx context.Context, i int) (secret, error) {
	w := b.w
	owner := i % len(w.users)
	grantee := i % len(w.grantees)
	body, _ := json.Marshal(map[string]any{
		"name":         fmt.Sprintf("Bench API %d", i),
		"url":          fmt.Sprintf("https://api%d.bench.example.com/v1", i),
		"clientId":     fmt.Sprintf("bench-client-%d", i),
		"clientSecret": fmt.Sprintf("bench-secret-value-%d", i),
		"identifier":   fmt.Sprintf("bench-%d", i),
		"method":       "POST",
		"tags":         []string{"bench", fmt.Sprintf("team-%d", i%7)},
		"notes":        "Created by mysafe bench.",
	})
	var ans struct {
		ID       string `json:"id"`
		Position string `json:"position"`
	}
	if err := b.c.call(ctx, http.MethodPost, "/api/v1/secrets", w.users[owner].token, body, nil, http.StatusCreated, &ans); err != nil {
		return secret{}, err
	}
	pos, err := eventstore.ParsePosition(ans.Position)
	if err != nil {
		return secret{}, err
	}
	w.saw(ans.Position)
	share, _ := json.Marshal(map[string]any{"grants": []any{map[string]any{
		"principal": map[string]string{"type": "user", "id": w.grantees[grantee].id}, "canView": true, "canEdit": false}}})
	return secret{id: ans.ID, owner: owner, grantee: grantee, pos: pos, share: share, unshare: []byte(`{"grants":[]}`)}, nil
}

// rss is one reading of a process's memory, in kB, from /proc.
type rss struct {
	rss, hwm, anon, file int64
	err                  error
}

// rssSampler reads a process's memory every 20 ms and keeps the peaks of
// its parts seen in each phase (VmHWM keeps the peak of the whole).
type rssSampler struct {
	pid   int
	mu    sync.Mutex
	phase string
	peaks map[string]rss // by phase
	done  chan struct{}
	wg    sync.WaitGroup
}

// setPhase names what the process does from now on.
func (s *rssSampler) setPhase(phase string) {
	s.mu.Lock()
	s.phase = phase
	s.mu.Unlock()
}

func newRSSSampler(pid int) *rssSampler {
	s := &rssSampler{pid: pid, phase: "rebuild", peaks: map[string]rss{}, done: make(chan struct{})}
	s.wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				s.sample()
			}
		}
	})
	return s
}

func (s *rssSampler) stop() {
	close(s.done)
	s.wg.Wait()
}

func (s *rssSampler) sample() rss {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		return rss{err: fmt.Errorf("read the service's memory: %w", err)}
	}
	defer f.Close()
	var r rss
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		switch name {
		case "VmRSS":
			r.rss = kb
		case "VmHWM":
			r.hwm = kb
		case "RssAnon":
			r.anon = kb
		case "RssFile":
			r.file = kb
		}
	}
	s.mu.Lock()
	p := s.peaks[s.phase]
	p.rss, p.anon, p.file = max(p.rss, r.rss), max(p.anon, r.anon), max(p.file, r.file)
	s.peaks[s.phase] = p
	s.mu.Unlock()
	return r
}
