package esdb

import (
	"context"
	"fmt"

	esdbclient "github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/mysafe/mysafe/eventstore"
)

// The client library's connection handling has traps that this file works
// around (client v4.2.0, esdb/impl.go and esdb/client.go):
//
//   - Every call first asks a connection goroutine for a connection, over an
//     unbuffered channel and without looking at the call's context. While
//     that goroutine (re)discovers the node, which it does on the first call
//     and after any Unavailable answer, every call waits.
//   - When discovery fails MaxDiscoverAttempts times in a row (about a
//     second with the defaults when the node refuses connections), that
//     goroutine exits and the client is dead: later calls fail with
//     ErrorCodeConnectionClosed, and calls that were already waiting to
//     talk to it wait forever.
//   - A rediscovery replaces the gRPC connection without closing the old
//     one, which lives on, reconnecting in the background.
//   - Closing a client while a call waits on that channel is a data race
//     (and panics the waiting call).
//
// So the Store keeps a succession of clients and never lets more than one
// goroutine talk to a client that may be discovering:
//
//   - A new client is probed first by one goroutine (GetServerVersion makes
//     it discover the node and nothing more); operations wait for the probe
//     under their own context. A failed probe makes them fail as
//     unavailable at once, and retires the client.
//   - A client that answered Unavailable, or died, is retired: new
//     operations get a fresh client.
//   - Every client method runs on a goroutine of its own (hold), so its
//     caller is released when its context ends, and that goroutine holds a
//     reference to the client until the method returns. A retired client is
//     closed, with its connection, when its last reference goes, so never
//     while a goroutine is inside it.
//
// What remains: an operation that took a client just before it was retired
// can make it rediscover, and if that fails, another operation's late error
// report can wait forever on the dead client. That takes a race within
// microseconds at the start of an outage and costs a goroutine.

// conn is one client with its probe result and its references.
type conn struct {
	client *esdbclient.Client
	ready  chan struct{} // closed when the probe is over
	err    error         // the probe's error, set before ready is closed

	refs    int // guarded by Store.mu, as are the fields below
	retired bool
	closed  bool
}

// acquire returns a connected client with a reference for the caller, who
// must release it. It creates and probes a client when there is none.
func (s *Store) acquire(ctx context.Context) (*conn, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errClosed
	}
	if s.cur == nil {
		client, err := esdbclient.NewClient(s.cfg)
		if err != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("esdb: new client: %w", err)
		}
		s.cur = &conn{client: client, ready: make(chan struct{}), refs: 1}
		s.conns[s.cur] = struct{}{}
		go s.probe(s.cur)
	}
	c := s.cur
	c.refs++
	s.mu.Unlock()

	select {
	case <-c.ready:
	case <-ctx.Done():
		s.release(c)
		return nil, ctx.Err()
	}
	if c.err != nil {
		s.release(c)
		return nil, c.err
	}
	return c, nil
}

// probe connects c's client, alone, and opens the gate for the operations
// waiting on it. It holds the reference acquire gave it.
func (s *Store) probe(c *conn) {
	defer s.release(c)
	version, err := serverVersion(c.client)
	if err != nil {
		// Whatever the client says went wrong, the node could not be
		// reached: the caller may try again later.
		c.err = fmt.Errorf("esdb: connect: %w: %w", eventstore.ErrUnavailable, err)
		s.retire(c)
	} else if version.Major != 0 && version.Major < 23 {
		// Servers before 23.x send no caught-up signal, which projections
		// wait for. (Zero: the server did not say.)
		s.opts.logger.Warn("EventStoreDB is too old to signal caught-up subscriptions",
			"version", fmt.Sprintf("%d.%d.%d", version.Major, version.Minor, version.Patch))
	}
	close(c.ready)
}

func serverVersion(client *esdbclient.Client) (v *esdbclient.ServerVersion, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errClientPanic, r)
		}
	}()
	return client.GetServerVersion()
}

// release drops one reference to c, closing its client if it was retired
// and this was the last one.
func (s *Store) release(c *conn) {
	s.mu.Lock()
	c.refs--
	closeNow := c.retired && c.refs == 0 && s.markClosed(c)
	s.mu.Unlock()
	if closeNow {
		_ = c.client.Close()
	}
}

// retire stops handing c out; its client is closed once nothing uses it.
func (s *Store) retire(c *conn) {
	s.mu.Lock()
	if s.cur == c {
		s.cur = nil
	}
	c.retired = true
	closeNow := c.refs == 0 && s.markClosed(c)
	s.mu.Unlock()
	if closeNow {
		_ = c.client.Close()
	}
}

// markClosed records that c is being closed; false means it already was.
// The caller holds s.mu.
func (s *Store) markClosed(c *conn) bool {
	if c.closed {
		return false
	}
	c.closed = true
	delete(s.conns, c)
	return true
}

// do runs op on a client under ctx and looks after the client: it retires
// one that answered Unavailable or died. It retries op once, on a fresh
// client, only when the client was already closed, because then op reached
// no server.
func do[T any](s *Store, ctx context.Context, op func(*esdbclient.Client) (T, error)) (T, error) {
	v, _, err := hold(s, ctx, op, nil)
	return v, err
}

// hold is do for results that go on using the client, such as a
// subscription, when dispose is not nil: on success the caller gets the
// client with a reference, to release when the result is done with; a
// result that comes after ctx ended, when nobody is left to use it, goes to
// dispose.
//
// op runs on a goroutine of its own, so that the caller is free when ctx
// ends even if the client is not (see above). op's calls use ctx too, so a
// call released late fails at once instead of acting on the server. A
// panic in the client (it has panic("unreachable code") paths) becomes an
// error.
func hold[T any](s *Store, ctx context.Context, op func(*esdbclient.Client) (T, error), dispose func(T)) (T, *conn, error) {
	type result struct {
		v   T
		err error
	}
	var zero T
	for attempt := 0; ; attempt++ {
		c, err := s.acquire(ctx)
		if err != nil {
			return zero, nil, err
		}
		done := make(chan result) // unbuffered: a handover, or nothing
		abandoned := make(chan struct{})
		go func() {
			defer s.release(c)
			var r result
			func() {
				defer func() {
					if p := recover(); p != nil {
						r = result{err: fmt.Errorf("%w: %v", errClientPanic, p)}
					}
				}()
				r.v, r.err = op(c.client)
			}()
			keep := r.err == nil && dispose != nil
			if keep {
				s.addRef(c) // the caller's, or dispose's
			}
			select {
			case done <- r:
			case <-abandoned:
				if keep {
					dispose(r.v)
					s.release(c)
				}
			}
		}()

		var r result
		select {
		case r = <-done:
		case <-ctx.Done():
			select {
			case r = <-done: // finished too: its answer beats the deadline
			default:
				close(abandoned)
				r = result{err: ctx.Err()}
			}
		}
		switch {
		case r.err == nil && dispose != nil:
			return r.v, c, nil
		case r.err == nil:
			return r.v, nil, nil
		case clientDead(r.err):
			s.retire(c)
			if attempt == 0 && connectionClosed(r.err) {
				continue
			}
		case unavailable(r.err):
			s.retire(c)
		}
		return zero, nil, r.err
	}
}

func (s *Store) addRef(c *conn) {
	s.mu.Lock()
	c.refs++
	s.mu.Unlock()
}
