package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Summary is what a run measured: how many operations completed, how fast,
// and their latency distribution. Latencies are exact (every sample is
// kept and sorted), in milliseconds in JSON.
type Summary struct {
	Count   int     `json:"count"`
	Errors  int     `json:"errors"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"perSecond"`
	P50     Millis  `json:"p50Ms"`
	P95     Millis  `json:"p95Ms"`
	P99     Millis  `json:"p99Ms"`
	Max     Millis  `json:"maxMs"`
}

// Millis is a duration written as fractional milliseconds.
type Millis float64

func millis(d time.Duration) Millis { return Millis(float64(d) / float64(time.Millisecond)) }

func (m Millis) String() string {
	switch {
	case m == 0:
		return "-"
	case m < 1:
		return fmt.Sprintf("%.2fms", float64(m))
	case m < 100:
		return fmt.Sprintf("%.1fms", float64(m))
	}
	return fmt.Sprintf("%.0fms", float64(m))
}

// summarize sorts the samples in place.
func summarize(samples []time.Duration, errors int, elapsed time.Duration) Summary {
	slices.Sort(samples)
	s := Summary{Count: len(samples), Errors: errors, Seconds: elapsed.Seconds()}
	if elapsed > 0 {
		s.Rate = float64(len(samples)) / elapsed.Seconds()
	}
	if n := len(samples); n > 0 {
		at := func(q float64) Millis { return millis(samples[min(n-1, int(q*float64(n)))]) }
		s.P50, s.P95, s.P99, s.Max = at(0.50), at(0.95), at(0.99), millis(samples[n-1])
	}
	return s
}

// outcome is what a load run collected.
type outcome struct {
	samples []time.Duration
	errors  int
	// firstErrors keeps a few error messages to show.
	firstErrors []string
	elapsed     time.Duration
}

func (o outcome) summary() Summary { return summarize(o.samples, o.errors, o.elapsed) }

// recorder collects samples and errors from concurrent workers.
type recorder struct {
	mu          sync.Mutex
	samples     []time.Duration
	errors      int
	firstErrors []string
	ok, failed  atomic.Int64 // for the progress line
}

func (r *recorder) add(samples []time.Duration) {
	r.mu.Lock()
	r.samples = append(r.samples, samples...)
	r.mu.Unlock()
}

func (r *recorder) fail(err error) {
	r.failed.Add(1)
	r.mu.Lock()
	r.errors++
	if len(r.firstErrors) < 5 {
		r.firstErrors = append(r.firstErrors, err.Error())
	}
	r.mu.Unlock()
}

func (r *recorder) outcome(elapsed time.Duration) outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return outcome{samples: r.samples, errors: r.errors, firstErrors: r.firstErrors, elapsed: elapsed}
}

// op is one operation of a closed-loop worker. rng is the worker's own.
type op func(ctx context.Context, worker int, rng *rand.Rand) error

// closedLoop runs clients workers, each doing op back to back, for d. Only
// operations that started within d count, and the elapsed time runs until
// the last of them ended, so the rate is never flattered by a cut-off.
func closedLoop(ctx context.Context, p *progress, name string, clients int, d time.Duration, fn op) outcome {
	var rec recorder
	stop := p.start(name, d, &rec)
	defer stop()
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			samples := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(deadline) {
					break
				}
				if err := fn(ctx, w, rng); err != nil {
					if ctx.Err() != nil {
						break
					}
					rec.fail(err)
					continue
				}
				samples = append(samples, time.Since(t0))
				rec.ok.Add(1)
			}
			rec.add(samples)
		})
	}
	wg.Wait()
	return rec.outcome(time.Since(start))
}
