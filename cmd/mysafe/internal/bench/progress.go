package bench

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress writes one line per step to w; on a terminal it also redraws,
// four times a second, a line with the running step's counts.
type progress struct {
	w        io.Writer
	terminal bool
	mu       sync.Mutex
}

// say prints a line, clearing a progress line first.
func (p *progress) say(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminal {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

// start announces a timed step and, on a terminal, keeps its progress
// line up to date until the returned stop is called.
func (p *progress) start(name string, d time.Duration, rec *recorder) (stop func()) {
	if d > 0 {
		p.say("bench: %s for %s", name, d)
	} else {
		p.say("bench: %s", name)
	}
	if p == nil || !p.terminal {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	begin := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				p.mu.Lock()
				fmt.Fprint(p.w, "\r\033[K")
				p.mu.Unlock()
				return
			case <-t.C:
				el := time.Since(begin)
				ok, failed := rec.ok.Load(), rec.failed.Load()
				p.mu.Lock()
				fmt.Fprintf(p.w, "\r\033[K  %-22s %5.1fs/%-5.1fs %10d ok %6d errors %10.0f/s",
					name, el.Seconds(), max(d, el).Seconds(), ok, failed, float64(ok)/el.Seconds())
				p.mu.Unlock()
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
