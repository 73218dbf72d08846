// Package esdbtest is an in-process gRPC server that speaks the EventStoreDB
// Streams service, backed by any eventstore.Store.
//
// No EventStoreDB server can be installed where mysafe is built, yet the
// EventStoreDB adapter (eventstore/esdb) must be tested through the real client
// library. This server answers the client the way EventStoreDB does — same
// messages, same error statuses and trailers — for the part of the protocol
// the adapter uses: appends with every expected-revision kind, stream and $all
// reads in both directions, $all subscriptions with server-side filters,
// checkpoints and the caught-up signal, and tombstones. It can also misbehave
// on purpose (DropSubscriptions, FailSubscriptions, SetUnavailable) so that
// the adapter's recovery can be tested.
//
// It is a test double, not a database: the semantics (revisions, positions,
// idempotency, deletion) are the backing store's, except where EventStoreDB
// answers differently from the port, which it reproduces so that the
// adapter's corrections get tested: a backwards $all read from a position
// starts before it. It implements no
// authentication, no stream subscriptions, no BatchAppend, no persistent
// subscriptions and no projections, and it does not answer the
// ServerFeatures service (the client copes with Unimplemented).
package esdbtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/mysafe/mysafe/eventstore"
)

// Server is a running test server. Its methods are safe for concurrent use.
type Server struct {
	backing eventstore.Store
	addr    string // host:port, kept across SetUnavailable so clients can come back

	// lifecycle serializes SetUnavailable and Close, which start and stop
	// the gRPC server.
	lifecycle sync.Mutex
	grpc      *grpc.Server // nil while unavailable or closed
	closed    bool

	mu     sync.Mutex
	subs   map[uint64]context.CancelCauseFunc // live subscriptions, for FailSubscriptions
	nextID uint64
}

// dropCause is the cancellation cause FailSubscriptions gives a
// subscription: the handler ends the call with err.
type dropCause struct{ err error }

func (d dropCause) Error() string { return d.err.Error() }

// Start listens on a random loopback port and serves the Streams service
// from backing. The caller keeps ownership of backing: Close does not close
// it.
func Start(backing eventstore.Store) (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("esdbtest: listen: %w", err)
	}
	s := &Server{
		backing: backing,
		addr:    lis.Addr().String(),
		subs:    make(map[uint64]context.CancelCauseFunc),
	}
	s.serve(lis)
	return s, nil
}

// URL is the connection string for esdb.ParseConnectionString.
func (s *Server) URL() string { return "esdb://" + s.addr + "?tls=false" }

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

func (s *Server) serve(lis net.Listener) {
	g := grpc.NewServer(
		// The client pings every 10 s even without calls in flight; gRPC's
		// default policy (5 min, no pings without streams) would answer
		// with GOAWAY "too many pings" and drop the connection mid-test.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             time.Second,
			PermitWithoutStream: true,
		}),
		// Stop waits for handlers, so none touches the backing store after
		// SetUnavailable(true) or Close returned.
		grpc.WaitForHandlers(true),
	)
	api.RegisterStreamsServer(g, &streams{srv: s})
	s.grpc = g
	go func() { _ = g.Serve(lis) }()
}

// SetUnavailable(true) stops the server: open connections are closed, calls
// in flight fail with Unavailable on the client, and new connections are
// refused, as when an EventStoreDB node goes down. SetUnavailable(false)
// serves again on the same address, so that clients reconnect to it.
func (s *Server) SetUnavailable(down bool) error {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	if s.closed {
		return errors.New("esdbtest: server is closed")
	}
	if down {
		if s.grpc != nil {
			s.grpc.Stop()
			s.grpc = nil
		}
		return nil
	}
	if s.grpc != nil {
		return nil
	}
	lis, err := listenAgain(s.addr)
	if err != nil {
		return err
	}
	s.serve(lis)
	return nil
}

// listenAgain listens on addr, retrying briefly: the port was ours a moment
// ago, but the kernel may take a little while to let go of it.
func listenAgain(addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		lis, err := net.Listen("tcp", addr)
		if err == nil {
			return lis, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("esdbtest: listen again on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// DropSubscriptions ends every live subscription with codes.Unavailable, as
// when EventStoreDB loses a subscriber's connection or drops a slow one,
// and reports how many it ended. Events already sent still reach the client
// before the error.
func (s *Server) DropSubscriptions() int {
	return s.FailSubscriptions(status.Error(codes.Unavailable, "esdbtest: subscription dropped"))
}

// FailSubscriptions ends every live subscription with err, which should be
// a gRPC status error (status.Error), and reports how many it ended.
func (s *Server) FailSubscriptions(err error) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cancel := range s.subs {
		cancel(dropCause{err})
	}
	return len(s.subs)
}

// Subscriptions reports how many subscriptions are live.
func (s *Server) Subscriptions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// SubscriptionsOpened reports how many subscriptions were ever opened, so a
// test can tell that a client resubscribed.
func (s *Server) SubscriptionsOpened() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.nextID)
}

func (s *Server) register(cancel context.CancelCauseFunc) (unregister func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.nextID
	s.nextID++
	s.subs[id] = cancel
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs, id)
	}
}

// Close stops the server for good. It does not close the backing store.
func (s *Server) Close() error {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.grpc != nil {
		s.grpc.Stop()
		s.grpc = nil
	}
	return nil
}
