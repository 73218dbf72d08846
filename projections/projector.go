// Package projections keeps mysafe's read models in Redis up to date with
// the event log, and reads them.
//
// The event store's ordered subscription is exposed as a watermill
// message.Subscriber (subscriber.go); each projection is a handler of a
// watermill router (this file) that applies micro-batches of events to
// Redis together with its checkpoint in one MULTI/EXEC, so that its effect
// is exactly once however often a batch is delivered. The read models are
// disposable: a projector started on a fresh key prefix rebuilds them from
// the log. Each read model has its own file with its Redis schema, handler
// and reader (secrets.go and the screens built on it: report.go, cards.go,
// details.go).
package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/eventstore"
)

// DefaultPrefix is the Redis key prefix used when none is given.
const DefaultPrefix = "mysafe:"

// Projection is one read model fed by one ordered subscription.
type Projection interface {
	// Name names the projection in logs, metrics and its checkpoint key.
	Name() string
	// StreamPrefixes selects the streams it reads.
	StreamPrefixes() []string
	// Checkpoint loads the position of the last event it applied.
	Checkpoint(ctx context.Context) (eventstore.Position, error)
	// Apply applies a batch exactly once: events at or before the stored
	// checkpoint are skipped, and the changes and the new checkpoint are
	// written atomically. It returns the checkpoint stored afterwards.
	Apply(ctx context.Context, b Batch) (eventstore.Position, error)
}

// Config configures a Projector beyond what New takes.
type Config struct {
	Store eventstore.Store      // the log the projections follow
	Redis redis.UniversalClient // where the read models live
	// Prefix starts every Redis key; "" means DefaultPrefix. A fresh
	// prefix rebuilds the read models from the start of the log.
	Prefix string
	Logger *slog.Logger // nil means slog.Default()
	// Registerer receives the projection metrics; nil means
	// prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// MaxBatch bounds the events per message; 0 means DefaultMaxBatch.
	MaxBatch int
}

// Projector runs the projections: it feeds each from the event store
// through a watermill router, and tracks how far each has got so that
// queries can wait for their own writes.
type Projector struct {
	router *message.Router
	sub    *Subscriber
	log    *slog.Logger
	names  []string

	mu       sync.Mutex
	progress map[string]*progress
	changed  chan struct{} // closed and replaced whenever progress moves
}

// progress is how far one projection has got.
type progress struct {
	pos   eventstore.Position
	ready bool // it has applied everything up to its first caught-up signal
}

// New returns a Projector with mysafe's projections, writing under prefix
// ("" means DefaultPrefix). A fresh prefix rebuilds the read models from
// the log. Metrics go to prometheus.DefaultRegisterer.
func New(store eventstore.Store, rdb redis.UniversalClient, prefix string, logger *slog.Logger) *Projector {
	return NewWithConfig(Config{Store: store, Redis: rdb, Prefix: prefix, Logger: logger})
}

// NewWithConfig is New with every option.
func NewWithConfig(cfg Config) *Projector {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return newProjector(cfg, NewSecrets(cfg.Redis, cfg.Prefix, cfg.Logger), NewAudit(cfg.Redis, cfg.Prefix, cfg.Logger),
		NewExternalShares(cfg.Redis, cfg.Prefix, cfg.Logger))
}

func newProjector(cfg Config, projections ...Projection) *Projector {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.DefaultRegisterer
	}
	p := &Projector{log: cfg.Logger, progress: map[string]*progress{}, changed: make(chan struct{})}

	topics := map[string]Topic{}
	for _, proj := range projections {
		name := proj.Name()
		p.names = append(p.names, name)
		p.progress[name] = &progress{}
		topics[name] = Topic{
			StreamPrefixes: proj.StreamPrefixes(),
			Checkpoint: func(ctx context.Context) (eventstore.Position, error) {
				pos, err := proj.Checkpoint(ctx)
				if err == nil {
					// Positions already applied before a restart count for
					// WaitFor at once, before any new message arrives.
					p.advance(name, pos, false)
				}
				return pos, err
			},
		}
	}
	p.sub = NewSubscriber(cfg.Store, SubscriberConfig{Topics: topics, MaxBatch: cfg.MaxBatch, Logger: cfg.Logger})

	wlog := watermill.NewSlogLoggerWithLevelMapping(cfg.Logger, map[slog.Level]slog.Level{
		// The router narrates every start and stop at Info; that is
		// debugging detail for us.
		slog.LevelInfo: slog.LevelDebug,
	})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, wlog)
	if err != nil {
		panic(fmt.Sprintf("projections: new router: %v", err)) // only on an invalid config, which is constant here
	}
	m := newMetrics(cfg.Registerer)
	// Outermost first. Retry is bounded: once it gives up, the message is
	// nacked and the subscriber redelivers it after its own backoff, so a
	// projection never skips an event; it stops moving until the cause is
	// fixed. Metrics sit inside Retry to count every attempt, Recoverer
	// innermost so that a panic is an error Retry and metrics see.
	router.AddMiddleware(
		middleware.CorrelationID,
		middleware.Retry{
			MaxRetries:          5,
			InitialInterval:     50 * time.Millisecond,
			MaxInterval:         2 * time.Second,
			Multiplier:          2,
			MaxElapsedTime:      15 * time.Second,
			RandomizationFactor: 0.2,
			ResetContextOnRetry: true,
			Logger:              wlog,
		}.Middleware,
		m.middleware,
		middleware.Recoverer,
	)
	for _, proj := range projections {
		router.AddConsumerHandler(proj.Name(), proj.Name(), p.sub, p.handler(proj, m))
	}
	p.router = router
	return p
}

// handler applies one message to a projection and records its progress.
func (p *Projector) handler(proj Projection, m *metrics) message.NoPublishHandlerFunc {
	name := proj.Name()
	events := m.events.WithLabelValues(name)
	return func(msg *message.Message) error {
		b, err := DecodeBatch(msg)
		if err != nil {
			return err
		}
		pos, err := proj.Apply(msg.Context(), b)
		if err != nil {
			return fmt.Errorf("%s: apply batch up to %s: %w", name, b.Position, err)
		}
		events.Add(float64(len(b.Events)))
		p.advance(name, pos, b.CaughtUp)
		return nil
	}
}

// Run runs the projections until ctx is cancelled, then stops them,
// waiting for the batch in progress. A Projector runs once.
func (p *Projector) Run(ctx context.Context) error {
	err := p.router.Run(ctx)
	p.sub.Close()
	if err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	if ctx.Err() == nil {
		// The router only stops by itself when every subscription ended,
		// which happens when the event store was closed.
		return errors.New("projections: stopped: the event store subscriptions ended")
	}
	return nil
}

// Ready reports whether every projection has applied everything the log
// held when it subscribed (its first caught-up signal).
func (p *Projector) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.progress {
		if !pr.ready {
			return false
		}
	}
	return true
}

// WaitFor blocks until every projection has applied the log up to pos, so
// that a query after a command sees the command's effect. It returns
// ctx.Err() if ctx ends first.
func (p *Projector) WaitFor(ctx context.Context, pos eventstore.Position) error {
	for {
		p.mu.Lock()
		done := true
		for _, pr := range p.progress {
			if pr.pos.Compare(pos) < 0 {
				done = false
				break
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitForProjection is WaitFor for one projection only, for a query that
// reads that projection alone.
func (p *Projector) WaitForProjection(ctx context.Context, name string, pos eventstore.Position) error {
	for {
		p.mu.Lock()
		pr, ok := p.progress[name]
		done := ok && pr.pos.Compare(pos) >= 0
		changed := p.changed
		p.mu.Unlock()
		if !ok {
			return fmt.Errorf("projections: no projection %q", name)
		}
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Positions returns how far each projection has got, by name.
func (p *Projector) Positions() map[string]eventstore.Position {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]eventstore.Position, len(p.progress))
	for name, pr := range p.progress {
		out[name] = pr.pos
	}
	return out
}

// advance records a projection's progress and wakes the waiters.
func (p *Projector) advance(name string, pos eventstore.Position, caughtUp bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr := p.progress[name]
	moved := false
	if pos.Compare(pr.pos) > 0 {
		pr.pos, moved = pos, true
	}
	if caughtUp && !pr.ready {
		pr.ready, moved = true, true
	}
	if moved {
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// metrics are the projections' Prometheus metrics, labelled by projection.
type metrics struct {
	batches  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	events   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		batches: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mysafe", Subsystem: "projection", Name: "batches_total",
			Help: "Batches handled by a projection, by result (ok or error); retries count again.",
		}, []string{"projection", "result"})),
		duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "mysafe", Subsystem: "projection", Name: "batch_duration_seconds",
			Help:    "Time to apply one batch to a projection.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5ms .. 4s
		}, []string{"projection"})),
		events: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mysafe", Subsystem: "projection", Name: "events_total",
			Help: "Events delivered to a projection and handled (applied or found already applied).",
		}, []string{"projection"})),
	}
}

// register registers c, or returns the collector already registered under
// its name so that several Projectors (tests, a rebuild beside the live
// one) share the metrics.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("projections: register metrics: %v", err))
	}
	return c
}

func (m *metrics) middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		name := message.HandlerNameFromCtx(msg.Context())
		start := time.Now()
		out, err := h(msg)
		result := "ok"
		if err != nil {
			result = "error"
		}
		m.batches.WithLabelValues(name, result).Inc()
		m.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		return out, err
	}
}
