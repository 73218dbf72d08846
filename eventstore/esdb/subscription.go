package esdb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	esdbclient "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mysafe/mysafe/eventstore"
)

// maxPanics is how many times in a row the client may panic on a
// subscription, with nothing delivered in between, before the adapter stops
// resubscribing: a panic that repeats at the same place is a bug, not a blip.
const maxPanics = 3

// SubscribeAll follows $all from an exclusive position with a server-side
// stream filter: the given prefixes, or when there are none a regular
// expression that keeps every stream not starting with "$". Events of
// system types ("$" prefixes, such as the "$streamDeleted" tombstone that
// EventStoreDB writes into the deleted stream itself) are skipped here,
// since a server filter works on stream names or on event types, not both.
//
// Unlike the client's, the subscription survives transient drops: see
// Recv. It ends when ctx ends, when it is closed, or when the Store is.
// Opening it is one call: if the server is unreachable then, SubscribeAll
// fails with an error wrapping eventstore.ErrUnavailable.
func (s *Store) SubscribeAll(ctx context.Context, opts eventstore.SubscribeAllOptions) (eventstore.Subscription, error) {
	subCtx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(s.ctx, cancel)
	sub := &subscription{
		store:   s,
		opts:    opts,
		ctx:     subCtx,
		cancel:  func() { stopOnClose(); cancel() },
		backoff: s.opts.minBackoff,
		filter:  &esdbclient.SubscriptionFilter{Type: esdbclient.StreamFilterType, Prefixes: opts.StreamPrefixes},
	}
	if len(opts.StreamPrefixes) == 0 {
		sub.filter.Regex = "^[^$]"
	}
	// Whatever ends the subscription's context also lets go of the
	// client's subscription, even if nobody calls Recv again.
	context.AfterFunc(subCtx, sub.closeCurrent)

	if opts.From == eventstore.End {
		// Pin "now" to a position, so that a resubscription after a drop
		// does not skip what was appended meanwhile.
		head, err := s.head(ctx)
		if err != nil {
			sub.cancel()
			return nil, err
		}
		if head != eventstore.Start {
			sub.advance(head)
		}
	} else if opts.From != eventstore.Start {
		sub.advance(opts.From)
	}
	if err := sub.open(); err != nil {
		sub.cancel()
		return nil, wrap(ctx, "subscribe to $all", err)
	}
	return sub, nil
}

// subscription is the adapter's Subscription. Recv is for one goroutine, as
// the port says; Close may be called from any.
type subscription struct {
	store  *Store
	opts   eventstore.SubscribeAllOptions
	filter *esdbclient.SubscriptionFilter
	ctx    context.Context
	cancel context.CancelFunc

	// Recv's state. last is the last position handed to the caller (event
	// or checkpoint): resubscriptions start after it, and nothing at or
	// before it is handed out again.
	last     eventstore.Position
	hasLast  bool
	caughtUp bool
	backoff  time.Duration
	panics   int
	err      error // the error that ended the subscription, returned again

	mu      sync.Mutex // guards cur and curConn, which closeCurrent also touches
	cur     *esdbclient.Subscription
	curConn *conn
}

// Recv returns the next event, checkpoint or caught-up signal.
//
// When the server drops the subscription, Recv classifies the drop, which
// the client reports as a raw gRPC error: if it was ours (Close, context
// done) Recv returns eventstore.ErrSubscriptionClosed; if it is transient
// (Unavailable, a lost connection, a client panic) Recv resubscribes, with
// backoff, from the last position it handed out, exclusive, so that no
// event is lost or handed out twice; anything else ends the subscription
// with that error.
//
// CaughtUp is handed out once. A resubscription catches up again, from
// where the caller already was, and says so again; that second signal is
// swallowed, because the caller's readiness never lapsed.
func (s *subscription) Recv() (eventstore.SubscriptionMessage, error) {
	for {
		if s.err != nil {
			return eventstore.SubscriptionMessage{}, s.err
		}
		if s.ended() {
			return s.fail(eventstore.ErrSubscriptionClosed)
		}
		s.mu.Lock()
		cur := s.cur
		s.mu.Unlock()
		if cur == nil {
			if err := s.resubscribe(); err != nil {
				return s.fail(err)
			}
			continue
		}

		ev := recv(cur)
		switch {
		case ev.EventAppeared != nil:
			s.healthy()
			e := ev.EventAppeared.OriginalEvent()
			pos := eventstore.Position{Commit: e.Position.Commit, Prepare: e.Position.Prepare}
			if isSystem(e.StreamID, e.EventType) || !s.opts.PassesFilter(e.StreamID) || s.seen(pos) {
				continue
			}
			s.advance(pos)
			r := recorded(e)
			return eventstore.SubscriptionMessage{Event: &r}, nil
		case ev.CheckPointReached != nil:
			s.healthy()
			pos := eventstore.Position{Commit: ev.CheckPointReached.Commit, Prepare: ev.CheckPointReached.Prepare}
			// EventStoreDB may checkpoint behind the last event it sent;
			// the caller only ever moves forward.
			if s.seen(pos) {
				continue
			}
			s.advance(pos)
			return eventstore.SubscriptionMessage{Checkpoint: &pos}, nil
		case ev.CaughtUp != nil:
			s.healthy()
			if !s.caughtUp {
				s.caughtUp = true
				return eventstore.SubscriptionMessage{CaughtUp: true}, nil
			}
		case ev.SubscriptionDropped != nil:
			if err := s.dropped(cur, ev.SubscriptionDropped.Error); err != nil {
				return s.fail(err)
			}
		}
		// FellBehind says the server went back to reading history for a
		// slow consumer; the caller keeps receiving all the same.
	}
}

// recv is the client's Recv with its panics turned into drops.
func recv(sub *esdbclient.Subscription) (ev *esdbclient.SubscriptionEvent) {
	defer func() {
		if r := recover(); r != nil {
			ev = &esdbclient.SubscriptionEvent{SubscriptionDropped: &esdbclient.SubscriptionDropped{
				Error: fmt.Errorf("%w: %v", errClientPanic, r),
			}}
		}
	}()
	return sub.Recv()
}

// ended reports whether the subscription was closed, its context ended or
// the store closed. The store's end reaches s.ctx through a goroutine, so
// it is looked at directly too: nothing may come after Store.Close.
func (s *subscription) ended() bool {
	return s.ctx.Err() != nil || s.store.ctx.Err() != nil
}

func (s *subscription) seen(pos eventstore.Position) bool {
	return s.hasLast && pos.Compare(s.last) <= 0
}

func (s *subscription) advance(pos eventstore.Position) {
	s.last, s.hasLast = pos, true
}

// healthy resets the retry state once the server delivers again.
func (s *subscription) healthy() {
	s.backoff = s.store.opts.minBackoff
	s.panics = 0
}

// dropped handles the end of the client's subscription cur. It returns nil
// when Recv should resubscribe, or the error that ends the subscription.
func (s *subscription) dropped(cur *esdbclient.Subscription, err error) error {
	s.mu.Lock()
	c := s.curConn
	if s.cur != cur {
		c = nil // closeCurrent got there first
	}
	s.mu.Unlock()
	s.closeCurrent()
	if s.ended() {
		return eventstore.ErrSubscriptionClosed
	}
	switch {
	case errors.Is(err, errClientPanic):
		s.panics++
		if s.panics > maxPanics {
			return fmt.Errorf("esdb: subscription to $all: %w", err)
		}
	case unavailable(err):
		// The connection is likely gone: new operations should get a
		// client that connects afresh.
		if c != nil {
			s.store.retire(c)
		}
	case status.Code(err) == codes.Canceled:
		// Canceled though we did not cancel: the connection was closed
		// under the subscription. Resubscribing puts it on another one.
	default:
		return fmt.Errorf("esdb: subscription to $all dropped: %w", err)
	}
	if !s.pause() {
		return eventstore.ErrSubscriptionClosed
	}
	return nil
}

// resubscribe opens a new client subscription, retrying transient failures
// with backoff until it succeeds or the subscription ends.
func (s *subscription) resubscribe() error {
	for {
		err := s.open()
		switch {
		case err == nil:
			return nil
		case s.ended() || errors.Is(err, errClosed):
			return eventstore.ErrSubscriptionClosed
		case !unavailable(err) && status.Code(err) != codes.Canceled:
			return wrap(s.ctx, "resubscribe to $all", err)
		}
		if !s.pause() {
			return eventstore.ErrSubscriptionClosed
		}
	}
}

// open subscribes after the last position handed out (or from the start
// position), waiting for the server's confirmation no longer than the call
// timeout. The subscription itself lives as long as s.ctx.
func (s *subscription) open() error {
	var from esdbclient.AllPosition = esdbclient.Start{}
	if s.hasLast {
		from = esdbclient.Position{Commit: s.last.Commit, Prepare: s.last.Prepare}
	}
	waitCtx, cancel := s.store.callContext(s.ctx)
	defer cancel()
	sub, c, err := hold(s.store, waitCtx, func(client *esdbclient.Client) (*esdbclient.Subscription, error) {
		return client.SubscribeToAll(s.ctx, esdbclient.SubscribeToAllOptions{From: from, Filter: s.filter})
	}, func(late *esdbclient.Subscription) { _ = late.Close() })
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		// closeCurrent may have run already; do its work for this one.
		_ = sub.Close()
		s.store.release(c)
		return eventstore.ErrSubscriptionClosed
	}
	s.cur, s.curConn = sub, c
	return nil
}

// closeCurrent closes the client's subscription, if any, and lets go of
// its client. It is idempotent and safe to call from any goroutine.
func (s *subscription) closeCurrent() {
	s.mu.Lock()
	cur, c := s.cur, s.curConn
	s.cur, s.curConn = nil, nil
	s.mu.Unlock()
	if cur != nil {
		_ = cur.Close()
		s.store.release(c)
	}
}

// pause waits out the backoff, doubling it for next time; false means the
// subscription ended meanwhile.
func (s *subscription) pause() bool {
	t := time.NewTimer(s.backoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
		return false
	}
	s.backoff = min(2*s.backoff, s.store.opts.maxBackoff)
	return true
}

// fail ends the subscription with err, which Recv returns from now on.
func (s *subscription) fail(err error) (eventstore.SubscriptionMessage, error) {
	s.err = err
	s.cancel()
	s.closeCurrent()
	return eventstore.SubscriptionMessage{}, err
}

// Close ends the subscription; Recv then returns
// eventstore.ErrSubscriptionClosed.
func (s *subscription) Close() error {
	s.cancel()
	return nil
}
