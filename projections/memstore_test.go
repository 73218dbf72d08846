package projections

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/mysafe/mysafe/eventstore"
)

// memStore is a tiny in-memory eventstore.Store for the subscriber's tests:
// it can drop its open subscriptions on demand, which the real stores
// cannot be made to do. Positions are Commit == Prepare == 1-based index.
type memStore struct {
	mu      sync.Mutex
	log     []eventstore.RecordedEvent
	notify  chan struct{} // closed and replaced on every append
	subs    map[*memSub]bool
	opened  int // SubscribeAll calls
	closing chan struct{}
	once    sync.Once
}

func newMemStore() *memStore {
	return &memStore{notify: make(chan struct{}), subs: map[*memSub]bool{}, closing: make(chan struct{})}
}

func (m *memStore) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var current *uint64
	for _, e := range m.log {
		if e.StreamID == stream {
			r := e.Revision
			current = &r
		}
	}
	if !expected.Accepts(current) {
		return eventstore.AppendResult{}, &eventstore.ConflictError{Stream: stream, Expected: expected, Actual: current}
	}
	next := uint64(0)
	if current != nil {
		next = *current + 1
	}
	var res eventstore.AppendResult
	for _, e := range events {
		seq := uint64(len(m.log) + 1)
		rec := eventstore.RecordedEvent{ID: e.ID, Type: e.Type, StreamID: stream, Revision: next,
			Position: eventstore.Position{Commit: seq, Prepare: seq}, Created: time.Now().UTC(), Data: e.Data, Metadata: e.Metadata}
		m.log = append(m.log, rec)
		res = eventstore.AppendResult{NextExpectedRevision: next, Position: rec.Position}
		next++
	}
	close(m.notify)
	m.notify = make(chan struct{})
	return res, nil
}

func (m *memStore) ReadStream(ctx context.Context, stream string, opts eventstore.ReadStreamOptions) ([]eventstore.RecordedEvent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []eventstore.RecordedEvent
	for _, e := range m.log {
		if e.StreamID == stream && e.Revision >= opts.From {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, eventstore.ErrStreamNotFound
	}
	return out, nil
}

func (m *memStore) ReadAll(ctx context.Context, opts eventstore.ReadAllOptions) ([]eventstore.RecordedEvent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.log), nil
}

func (m *memStore) DeleteStream(ctx context.Context, stream string, expected eventstore.ExpectedRevision) error {
	return errors.New("memStore: DeleteStream not implemented")
}

func (m *memStore) Close() error {
	m.once.Do(func() { close(m.closing) })
	return nil
}

func (m *memStore) SubscribeAll(ctx context.Context, opts eventstore.SubscribeAllOptions) (eventstore.Subscription, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opened++
	s := &memSub{m: m, ctx: ctx, opts: opts, pos: opts.From.Commit, done: make(chan struct{})}
	m.subs[s] = true
	return s, nil
}

// drop makes every open subscription end with err.
func (m *memStore) drop(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range m.subs {
		s.dropErr = err
		delete(m.subs, s)
	}
	close(m.notify)
	m.notify = make(chan struct{})
}

func (m *memStore) subscriptions() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.opened
}

type memSub struct {
	m        *memStore
	ctx      context.Context
	opts     eventstore.SubscribeAllOptions
	pos      uint64 // guarded by m.mu
	caughtUp bool
	dropErr  error
	done     chan struct{}
	once     sync.Once
}

// Recv delivers the events after pos that pass the filter; when it skipped
// some and reached the end, a checkpoint; once at the end, CaughtUp.
func (s *memSub) Recv() (eventstore.SubscriptionMessage, error) {
	for {
		s.m.mu.Lock()
		if s.dropErr != nil {
			s.m.mu.Unlock()
			return eventstore.SubscriptionMessage{}, s.dropErr
		}
		select {
		case <-s.done:
			s.m.mu.Unlock()
			return eventstore.SubscriptionMessage{}, eventstore.ErrSubscriptionClosed
		case <-s.ctx.Done():
			s.m.mu.Unlock()
			return eventstore.SubscriptionMessage{}, eventstore.ErrSubscriptionClosed
		case <-s.m.closing:
			s.m.mu.Unlock()
			return eventstore.SubscriptionMessage{}, eventstore.ErrSubscriptionClosed
		default:
		}
		skipped := false
		for s.pos < uint64(len(s.m.log)) {
			e := s.m.log[s.pos]
			s.pos++
			if s.opts.PassesFilter(e.StreamID) {
				s.m.mu.Unlock()
				return eventstore.SubscriptionMessage{Event: &e}, nil
			}
			skipped = true
		}
		if skipped {
			p := eventstore.Position{Commit: s.pos, Prepare: s.pos}
			s.m.mu.Unlock()
			return eventstore.SubscriptionMessage{Checkpoint: &p}, nil
		}
		if !s.caughtUp {
			s.caughtUp = true
			s.m.mu.Unlock()
			return eventstore.SubscriptionMessage{CaughtUp: true}, nil
		}
		notify := s.m.notify
		s.m.mu.Unlock()
		select {
		case <-notify:
		case <-s.done:
		case <-s.ctx.Done():
		case <-s.m.closing:
		}
	}
}

func (s *memSub) Close() error {
	s.once.Do(func() { close(s.done) })
	s.m.mu.Lock()
	delete(s.m.subs, s)
	s.m.mu.Unlock()
	return nil
}
