package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	"github.com/mysafe/mysafe/eventstore"
)

// Metadata keys of the messages the Subscriber sends.
const (
	// MetadataPosition holds the position a message brings its projection
	// to (eventstore.Position.String), for logs and diagnostics; the payload
	// holds it too.
	MetadataPosition = "mysafe_position"
	// MetadataCaughtUp is "true" on the message that ends the catch-up
	// phase: once it is acked, the projection has applied the whole log as
	// it stood when it subscribed.
	MetadataCaughtUp = "mysafe_caught_up"
	// MetadataEvents is the number of events in the message.
	MetadataEvents = "mysafe_events"
)

// DefaultMaxBatch bounds the events packed into one message.
const DefaultMaxBatch = 256

// Topic is what one Subscribe call follows: the streams and where to start.
type Topic struct {
	// StreamPrefixes selects streams by category (see
	// eventstore.SubscribeAllOptions); empty means every non-system stream.
	StreamPrefixes []string
	// Checkpoint loads the projection's checkpoint, the position of the last
	// event it applied; the subscription starts after it. It is called once
	// per Subscribe, and retried with backoff while it fails (Redis may be
	// down when the process starts).
	Checkpoint func(ctx context.Context) (eventstore.Position, error)
}

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	// Topics maps each topic name (one per projection) to what it follows.
	Topics map[string]Topic
	// MaxBatch bounds the events packed into one message; 0 means
	// DefaultMaxBatch.
	MaxBatch int
	// MinBackoff and MaxBackoff bound the wait before redelivering a nacked
	// message and before resubscribing after a drop; 0 means 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives drops and retries; nil means slog.Default().
	Logger *slog.Logger
}

// Subscriber is a watermill message.Subscriber over the event store. Each
// Subscribe call opens one ordered store subscription and turns it into
// messages, one at a time: the next message is sent only after the previous
// one is acked, and a nacked message is sent again after a backoff, so a
// projection sees the log in order, exactly as far as it acknowledged.
//
// A message carries a micro-batch of consecutive events: whatever the store
// has ready, up to MaxBatch, without waiting for more. During catch-up the
// store is far ahead, so batches are full and a rebuild costs one Redis
// transaction per MaxBatch events; live, a batch is usually one event.
// Message UUID is the ID of the last event of the batch; DecodeBatch reads
// the payload.
type Subscriber struct {
	store   eventstore.Store
	cfg     SubscriberConfig
	log     *slog.Logger
	closing chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	mu      sync.Mutex // guards closed against a Subscribe racing Close
	closed  bool
}

// NewSubscriber returns a Subscriber reading from store.
func NewSubscriber(store eventstore.Store, cfg SubscriberConfig) *Subscriber {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Subscriber{store: store, cfg: cfg, log: log, closing: make(chan struct{})}
}

// Subscribe starts following topic. The channel is closed when ctx ends,
// when Close is called, or when the store itself is closed.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	t, ok := s.cfg.Topics[topic]
	if !ok {
		return nil, fmt.Errorf("subscribe: unknown topic %q", topic)
	}
	if t.Checkpoint == nil {
		return nil, fmt.Errorf("subscribe: topic %q has no Checkpoint func", topic)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("subscribe: subscriber is closed")
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-s.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		f := &follower{s: s, topic: topic, t: t, out: out, log: s.log.With("topic", topic)}
		f.run(ctx)
	}()
	return out, nil
}

// Close ends every subscription, closes their channels and waits for their
// goroutines. It is idempotent.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.once.Do(func() { close(s.closing) })
	s.wg.Wait()
	return nil
}

// follower is the state of one Subscribe call.
type follower struct {
	s     *Subscriber
	topic string
	t     Topic
	out   chan<- *message.Message
	log   *slog.Logger
	// acked is how far the projection has acknowledged: the next store
	// subscription starts after it.
	acked eventstore.Position
}

// item is one thing read from the store subscription.
type item struct {
	msg eventstore.SubscriptionMessage
	err error // the subscription ended
}

func (f *follower) run(ctx context.Context) {
	b := f.backoff()
	for {
		pos, err := f.t.Checkpoint(ctx)
		if err == nil {
			f.acked = pos
			break
		}
		f.log.Error("projections: cannot load checkpoint; retrying", "error", err)
		if !b.wait(ctx) {
			return
		}
	}
	b.reset()
	for {
		err := f.follow(ctx, b)
		if ctx.Err() != nil || errors.Is(err, eventstore.ErrSubscriptionClosed) {
			// Closed by us, by our caller's context, or by the store's own
			// Close: nothing to resubscribe to.
			return
		}
		f.log.Warn("projections: store subscription dropped; resubscribing", "error", err, "from", f.acked.String())
		if !b.wait(ctx) {
			return
		}
	}
}

// follow runs one store subscription from f.acked until it ends, and
// returns why it ended.
func (f *follower) follow(ctx context.Context, b *backoff) error {
	sub, err := f.s.store.SubscribeAll(ctx, eventstore.SubscribeAllOptions{From: f.acked, StreamPrefixes: f.t.StreamPrefixes})
	if err != nil {
		return fmt.Errorf("subscribe from %s: %w", f.acked, err)
	}
	// The reader turns the blocking Recv into a channel so that a batch can
	// take what is ready without waiting. Its buffer is one batch: the store
	// reads ahead while the projection applies the previous batch.
	items := make(chan item, f.s.cfg.MaxBatch)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := sub.Recv()
			select {
			case items <- item{msg: m, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		sub.Close() // unblocks Recv
		<-done
	}()

	var next *item // an item read while filling a batch that ends it
	live := false  // the store has said CaughtUp on this subscription
	for {
		var it item
		if next != nil {
			it, next = *next, nil
		} else {
			select {
			case it = <-items:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if it.err != nil {
			return it.err
		}
		batch := Batch{Position: f.acked}
		batch.add(it.msg)
		// Fill the batch. Live, take what is ready without waiting, so a
		// lone event goes out at once. While catching up, more is certain
		// to come until CaughtUp, so wait for a full batch: the store reader
		// refills the buffer a chunk at a time, and sending what happens to
		// be buffered made half-full batches (mysafe bench's rebuild
		// averaged 140 of 256), each costing its projection a Redis
		// transaction.
	fill:
		for len(batch.Events) < f.s.cfg.MaxBatch && !batch.CaughtUp {
			var it item
			if live {
				select {
				case it = <-items:
				default:
					break fill
				}
			} else {
				select {
				case it = <-items:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if it.err != nil {
				next = &it
				break fill
			}
			batch.add(it.msg)
		}
		live = live || batch.CaughtUp
		if len(batch.Events) == 0 && !batch.CaughtUp && batch.Position.Compare(f.acked) <= 0 {
			continue // a checkpoint that tells nothing new
		}
		if !f.deliver(ctx, batch) {
			return ctx.Err()
		}
		f.acked = batch.Position
		b.reset() // the subscription works: a later drop starts from the short wait
	}
}

// deliver sends the batch and waits for its ack, sending it again after a
// backoff each time it is nacked. It returns false if ctx ended first.
func (f *follower) deliver(ctx context.Context, batch Batch) bool {
	b := f.backoff()
	payload, err := encodeBatch(batch)
	for err != nil {
		// Only a time outside JSON's years could do this. Skipping the
		// events would make the read model silently wrong; stay here,
		// loudly, until shut down.
		f.log.Error("projections: cannot encode batch; stuck", "position", batch.Position.String(), "error", err)
		if !b.wait(ctx) {
			return false
		}
	}
	id := batch.Position.String()
	if n := len(batch.Events); n > 0 {
		id = batch.Events[n-1].ID.String()
	}
	correlation := correlationID(batch, id)
	for attempt := 1; ; attempt++ {
		// A watermill message can be acked once, so each attempt is a new
		// message with the same UUID, payload and metadata.
		msg := message.NewMessage(id, payload)
		msg.Metadata.Set(MetadataPosition, batch.Position.String())
		msg.Metadata.Set(MetadataEvents, strconv.Itoa(len(batch.Events)))
		if batch.CaughtUp {
			msg.Metadata.Set(MetadataCaughtUp, "true")
		}
		middleware.SetCorrelationID(correlation, msg)
		msgCtx, cancel := context.WithCancel(ctx)
		// The batch itself rides along in the context, so that a handler in
		// this process reads it without decoding the payload again (see
		// DecodeBatch); the payload stays the message's portable form.
		msg.SetContext(context.WithValue(msgCtx, batchKey{}, &batch))

		select {
		case f.out <- msg:
		case <-ctx.Done():
			cancel()
			return false
		}
		select {
		case <-msg.Acked():
			cancel()
			return true
		case <-msg.Nacked():
			cancel()
			f.log.Warn("projections: message nacked; redelivering", "uuid", id, "attempt", attempt)
			if !b.wait(ctx) {
				return false
			}
		case <-ctx.Done():
			cancel()
			return false
		}
	}
}

// correlationID is the correlation ID the command that appended the last
// event recorded in its metadata (so a projection's logs join the
// request's), else the message UUID.
func correlationID(b Batch, fallback string) string {
	if n := len(b.Events); n > 0 {
		var m struct {
			CorrelationID string `json:"correlationId"`
		}
		if json.Unmarshal(b.Events[n-1].Metadata, &m) == nil && m.CorrelationID != "" {
			return m.CorrelationID
		}
	}
	return fallback
}

func (f *follower) backoff() *backoff {
	return &backoff{min: f.s.cfg.MinBackoff, max: f.s.cfg.MaxBackoff, next: f.s.cfg.MinBackoff}
}

// backoff is a capped exponential wait.
type backoff struct {
	min, max, next time.Duration
}

func (b *backoff) reset() { b.next = b.min }

// wait sleeps for the current interval and doubles it; false if ctx ended.
func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.max)
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Batch is what one message carries: consecutive events of the
// subscription, and how far the projection gets by applying them.
type Batch struct {
	// Events are in log order; empty for a message that only advances the
	// checkpoint or only signals the end of catch-up.
	Events []eventstore.RecordedEvent
	// Position is the checkpoint after this message: the position of the
	// last event, or further when the store reported a checkpoint (it looked
	// further and found nothing for this topic).
	Position eventstore.Position
	// CaughtUp is set on the message that ends the catch-up phase.
	CaughtUp bool
}

func (b *Batch) add(m eventstore.SubscriptionMessage) {
	switch {
	case m.Event != nil:
		b.Events = append(b.Events, *m.Event)
		b.advance(m.Event.Position)
	case m.Checkpoint != nil:
		// Checkpoints may lag events already seen; only move forward.
		b.advance(*m.Checkpoint)
	case m.CaughtUp:
		b.CaughtUp = true
	}
}

func (b *Batch) advance(p eventstore.Position) {
	if p.Compare(b.Position) > 0 {
		b.Position = p
	}
}

// wireBatch is the payload of a message. Data and metadata are kept as
// bytes (base64 in JSON) so that the transport never depends on them
// being valid JSON.
type wireBatch struct {
	Position string      `json:"position"`
	Events   []wireEvent `json:"events"`
}

type wireEvent struct {
	ID       uuid.UUID `json:"id"`
	Type     string    `json:"type"`
	Stream   string    `json:"stream"`
	Revision uint64    `json:"revision"`
	Position string    `json:"position"`
	Created  time.Time `json:"created"`
	Data     []byte    `json:"data"`
	Metadata []byte    `json:"metadata,omitempty"`
}

func encodeBatch(b Batch) ([]byte, error) {
	w := wireBatch{Position: b.Position.String(), Events: make([]wireEvent, len(b.Events))}
	for i, e := range b.Events {
		w.Events[i] = wireEvent{ID: e.ID, Type: e.Type, Stream: e.StreamID, Revision: e.Revision,
			Position: e.Position.String(), Created: e.Created, Data: e.Data, Metadata: e.Metadata}
	}
	return json.Marshal(w)
}

// batchKey is the context key of the batch a message carries in memory.
type batchKey struct{}

// DecodeBatch reads the batch a Subscriber message carries: the batch
// itself when the message came from a Subscriber in this process (its
// events are shared: read them, do not change them), else the payload.
func DecodeBatch(msg *message.Message) (Batch, error) {
	if b, ok := msg.Context().Value(batchKey{}).(*Batch); ok {
		return *b, nil
	}
	var w wireBatch
	if err := json.Unmarshal(msg.Payload, &w); err != nil {
		return Batch{}, fmt.Errorf("decode batch %s: %w", msg.UUID, err)
	}
	pos, err := eventstore.ParsePosition(w.Position)
	if err != nil {
		return Batch{}, fmt.Errorf("decode batch %s: %w", msg.UUID, err)
	}
	b := Batch{Position: pos, CaughtUp: msg.Metadata.Get(MetadataCaughtUp) == "true",
		Events: make([]eventstore.RecordedEvent, len(w.Events))}
	for i, e := range w.Events {
		p, err := eventstore.ParsePosition(e.Position)
		if err != nil {
			return Batch{}, fmt.Errorf("decode batch %s: event %s: %w", msg.UUID, e.ID, err)
		}
		b.Events[i] = eventstore.RecordedEvent{ID: e.ID, Type: e.Type, StreamID: e.Stream, Revision: e.Revision,
			Position: p, Created: e.Created, Data: e.Data, Metadata: e.Metadata}
	}
	return b, nil
}
