// Package esdb is the EventStoreDB adapter of the event store port, over
// github.com/EventStore/EventStore-Client-Go/v4 (pinned at v4.2.0).
//
// The mapping is thin because the port is shaped after EventStoreDB. What
// the adapter adds is what the client leaves to its users:
//
//   - every call runs under a deadline (WithTimeout), streaming reads too,
//     which the client would let run forever;
//   - unavailability in all its forms (refused connections, gRPC
//     Unavailable, deadlines, a client that gave up rediscovering) is an
//     error wrapping eventstore.ErrUnavailable, so callers can answer 503
//     and retry; the adapter replaces clients that died (see conn.go);
//   - wrong expected versions become *eventstore.ConflictError, with the
//     actual revision when the server gave it;
//   - system events (streams or event types starting with "$") are skipped,
//     as the port promises, even where EventStoreDB has no server-side filter;
//   - subscriptions resubscribe by themselves after a transient drop, from
//     the last position handed to the caller (see subscription.go).
package esdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	esdbclient "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/mysafe/mysafe/eventstore"
)

// Store is the EventStoreDB adapter. It is safe for concurrent use.
type Store struct {
	cfg     *esdbclient.Configuration
	opts    options
	ctx     context.Context // ends at Close, and with it every subscription
	stopAll context.CancelFunc

	mu     sync.Mutex
	cur    *conn              // the client new operations use; nil until needed
	conns  map[*conn]struct{} // every client not yet closed, for Close
	closed bool
}

var _ eventstore.Store = (*Store)(nil)

type options struct {
	timeout    time.Duration
	minBackoff time.Duration
	maxBackoff time.Duration
	logger     *slog.Logger
}

// Option tunes a Store.
type Option func(*options)

// WithTimeout bounds every call, streaming reads and (re)subscribing
// included; the default is 10 s. Zero leaves calls to the caller's context
// alone.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithResubscribeBackoff sets the delays between resubscription attempts
// after a drop: min first, doubling up to max. The default is 50 ms to 5 s.
func WithResubscribeBackoff(min, max time.Duration) Option {
	return func(o *options) { o.minBackoff, o.maxBackoff = min, max }
}

// WithLogger receives the client library's log lines, at Debug level: most
// of what it calls errors (a subscription dropped, a node lost) the adapter
// handles and reports itself. The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Open connects to EventStoreDB with a connection string such as
// "esdb://admin:changeit@localhost:2113?tls=false" and checks that the
// server answers, within ctx and the call timeout. An unreachable server is
// an error wrapping eventstore.ErrUnavailable, so the caller may retry.
func Open(ctx context.Context, connectionString string, opts ...Option) (*Store, error) {
	o := options{timeout: 10 * time.Second, minBackoff: 50 * time.Millisecond, maxBackoff: 5 * time.Second, logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.minBackoff <= 0 || o.maxBackoff < o.minBackoff {
		return nil, fmt.Errorf("esdb: resubscribe backoff %v..%v: want 0 < min <= max", o.minBackoff, o.maxBackoff)
	}
	cfg, err := esdbclient.ParseConnectionString(connectionString)
	if err != nil {
		// The message may quote the string, password included.
		return nil, errors.New("esdb: invalid connection string")
	}
	logger := o.logger
	cfg.Logger = func(level esdbclient.LogLevel, format string, args ...any) {
		logger.Debug(fmt.Sprintf(format, args...), "component", "eventstore-client", "client_level", level)
	}
	base, stop := context.WithCancel(context.Background())
	s := &Store{cfg: cfg, opts: o, ctx: base, stopAll: stop, conns: make(map[*conn]struct{})}

	if _, err := s.head(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("esdb: open: %w", err)
	}
	return s, nil
}

// Close ends every subscription and operation and closes the clients (each
// as soon as nothing runs inside it). Later calls fail with an error
// wrapping ErrUnavailable.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cur = nil
	var idle []*esdbclient.Client
	for c := range s.conns {
		c.retired = true
		if c.refs == 0 && s.markClosed(c) {
			idle = append(idle, c.client)
		}
	}
	s.mu.Unlock()

	s.stopAll()
	for _, c := range idle {
		_ = c.Close()
	}
	return nil
}

// callContext bounds one call by the configured timeout and by Close.
func (s *Store) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	var cancel context.CancelFunc
	if s.opts.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, s.opts.timeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// Append writes events with their IDs, as JSON, with their metadata as the
// user metadata, if the stream is at the expected revision.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	op := fmt.Sprintf("append to %q", stream)
	if len(events) == 0 {
		return s.appendNothing(ctx, stream, expected)
	}
	data := make([]esdbclient.EventData, len(events))
	for i, e := range events {
		if e.ID == uuid.Nil {
			// The client would make up a random ID, and a retried
			// append would then be written twice.
			return eventstore.AppendResult{}, fmt.Errorf("esdb: %s: event %d (%s) has no ID", op, i, e.Type)
		}
		data[i] = esdbclient.EventData{
			EventID:     e.ID,
			EventType:   e.Type,
			ContentType: esdbclient.ContentTypeJson,
			Data:        e.Data,
			Metadata:    e.Metadata,
		}
	}
	callCtx, cancel := s.callContext(ctx)
	defer cancel()
	res, err := do(s, callCtx, func(c *esdbclient.Client) (*esdbclient.WriteResult, error) {
		return c.AppendToStream(callCtx, stream, esdbclient.AppendToStreamOptions{ExpectedRevision: expectedRevision(expected)}, data...)
	})
	if err != nil {
		if c, ok := asConflict(err, stream, expected); ok {
			return eventstore.AppendResult{}, c
		}
		return eventstore.AppendResult{}, wrap(ctx, op, err)
	}
	out := eventstore.AppendResult{
		NextExpectedRevision: res.NextExpectedVersion,
		Position:             eventstore.Position{Commit: res.CommitPosition, Prepare: res.PreparePosition},
	}
	if out.Position == (eventstore.Position{}) {
		// No position in the answer: EventStoreDB answers some idempotent
		// retries so. The port promises the first answer again, so look
		// the last event up.
		last, err := s.ReadStream(ctx, stream, eventstore.ReadStreamOptions{From: out.NextExpectedRevision, Max: 1})
		if err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("esdb: %s: appended, but finding its position: %w", op, err)
		}
		if len(last) == 1 {
			out.Position = last[0].Position
		}
	}
	return out, nil
}

// appendNothing checks the expected revision of an append without events
// and answers with the stream's current state, as the port asks. It does
// not ask the server to append nothing: the client would answer "revision
// 1" for a stream that has none.
func (s *Store) appendNothing(ctx context.Context, stream string, expected eventstore.ExpectedRevision) (eventstore.AppendResult, error) {
	last, err := s.ReadStream(ctx, stream, eventstore.ReadStreamOptions{Direction: eventstore.Backwards, FromEnd: true, Max: 1})
	var current *uint64
	switch {
	case errors.Is(err, eventstore.ErrStreamNotFound):
	case err != nil:
		return eventstore.AppendResult{}, err
	case len(last) == 1:
		current = &last[0].Revision
	}
	if !expected.Accepts(current) {
		return eventstore.AppendResult{}, &eventstore.ConflictError{Stream: stream, Expected: expected, Actual: current}
	}
	if current == nil {
		return eventstore.AppendResult{}, nil
	}
	return eventstore.AppendResult{NextExpectedRevision: *current, Position: last[0].Position}, nil
}

func expectedRevision(e eventstore.ExpectedRevision) esdbclient.ExpectedRevision {
	switch {
	case e.IsNoStream():
		return esdbclient.NoStream{}
	case e.IsStreamExists():
		return esdbclient.StreamExists{}
	}
	if r, ok := e.Revision(); ok {
		return esdbclient.Revision(r)
	}
	return esdbclient.Any{}
}

// ReadStream reads one stream in either direction.
func (s *Store) ReadStream(ctx context.Context, stream string, opts eventstore.ReadStreamOptions) ([]eventstore.RecordedEvent, error) {
	op := fmt.Sprintf("read stream %q", stream)
	ro := esdbclient.ReadStreamOptions{Direction: esdbclient.Forwards, From: esdbclient.Revision(opts.From)}
	if opts.Direction == eventstore.Backwards {
		ro.Direction = esdbclient.Backwards
	}
	if opts.FromEnd {
		ro.From = esdbclient.End{}
	}
	callCtx, cancel := s.callContext(ctx)
	defer cancel()
	events, err := do(s, callCtx, func(c *esdbclient.Client) ([]eventstore.RecordedEvent, error) {
		rs, err := c.ReadStream(callCtx, stream, ro, count(opts.Max))
		if err != nil {
			return nil, err
		}
		return drain(rs)
	})
	switch {
	case err == nil:
		return events, nil
	case hasCode(err, esdbclient.ErrorCodeResourceNotFound):
		return nil, fmt.Errorf("esdb: %s: %w", op, eventstore.ErrStreamNotFound)
	}
	return nil, wrap(ctx, op, err)
}

// count turns the port's Max (0: no bound) into the client's count.
func count(max uint64) uint64 {
	if max == 0 {
		return math.MaxUint64
	}
	return max
}

// drain reads rs to its end.
func drain(rs *esdbclient.ReadStream) ([]eventstore.RecordedEvent, error) {
	defer rs.Close()
	var out []eventstore.RecordedEvent
	for {
		ev, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, recorded(ev.OriginalEvent()))
	}
}

// ReadAll reads the global log, skipping system events.
//
// Two differences with EventStoreDB are ironed out here. EventStoreDB has
// no server-side filter for reads, so when Max is set and system events
// were skipped, ReadAll reads on from where the previous page ended. And
// EventStoreDB reads backwards from before a position (it takes the
// position after a record), while the port's From is inclusive, so a
// backwards read from an event's position first fetches that event.
func (s *Store) ReadAll(ctx context.Context, opts eventstore.ReadAllOptions) ([]eventstore.RecordedEvent, error) {
	callCtx, cancel := s.callContext(ctx)
	defer cancel()

	var out []eventstore.RecordedEvent
	var prev *eventstore.Position // an event already looked at; a page may start with it
	from := allPosition(opts.From)
	if opts.Direction == eventstore.Backwards && opts.From != eventstore.End && opts.From != eventstore.Start {
		at, err := s.readAllPage(callCtx, esdbclient.Forwards, from, 1)
		if err != nil {
			return nil, wrap(ctx, "read $all", err)
		}
		if len(at) == 1 && at[0].Position == opts.From {
			prev = &opts.From
			if !isSystem(at[0].StreamID, at[0].Type) {
				out = append(out, at[0])
			}
		}
	}
	dir := esdbclient.Forwards
	if opts.Direction == eventstore.Backwards {
		dir = esdbclient.Backwards
	}
	for opts.Max == 0 || uint64(len(out)) < opts.Max {
		want := count(opts.Max)
		if opts.Max > 0 {
			want = opts.Max - uint64(len(out))
			if prev != nil {
				want++ // room for the event looked at already, to keep moving
			}
		}
		page, err := s.readAllPage(callCtx, dir, from, want)
		if err != nil {
			return nil, wrap(ctx, "read $all", err)
		}
		for _, e := range page {
			if (prev != nil && e.Position == *prev) || isSystem(e.StreamID, e.Type) {
				continue
			}
			out = append(out, e)
			if opts.Max > 0 && uint64(len(out)) == opts.Max {
				return out, nil
			}
		}
		if uint64(len(page)) < want {
			break // the end of the log
		}
		last := page[len(page)-1].Position
		prev = &last
		from = esdbclient.Position{Commit: last.Commit, Prepare: last.Prepare}
	}
	return out, nil
}

// readAllPage reads up to n events of $all, system events included.
func (s *Store) readAllPage(ctx context.Context, dir esdbclient.Direction, from esdbclient.AllPosition, n uint64) ([]eventstore.RecordedEvent, error) {
	return do(s, ctx, func(c *esdbclient.Client) ([]eventstore.RecordedEvent, error) {
		rs, err := c.ReadAll(ctx, esdbclient.ReadAllOptions{Direction: dir, From: from}, n)
		if err != nil {
			return nil, err
		}
		return drain(rs)
	})
}

func allPosition(p eventstore.Position) esdbclient.AllPosition {
	switch p {
	case eventstore.Start:
		return esdbclient.Start{}
	case eventstore.End:
		return esdbclient.End{}
	}
	return esdbclient.Position{Commit: p.Commit, Prepare: p.Prepare}
}

// head is the position of the last event of the log, system events
// included, or Start when the log is empty.
func (s *Store) head(ctx context.Context) (eventstore.Position, error) {
	callCtx, cancel := s.callContext(ctx)
	defer cancel()
	last, err := s.readAllPage(callCtx, esdbclient.Backwards, esdbclient.End{}, 1)
	if err != nil {
		return eventstore.Position{}, wrap(ctx, "read the head of $all", err)
	}
	if len(last) == 0 {
		return eventstore.Start, nil
	}
	return last[0].Position, nil
}

// DeleteStream tombstones the stream: crypto-shredding must be permanent,
// and EventStoreDB's soft delete lets a stream be written again.
func (s *Store) DeleteStream(ctx context.Context, stream string, expected eventstore.ExpectedRevision) error {
	callCtx, cancel := s.callContext(ctx)
	defer cancel()
	_, err := do(s, callCtx, func(c *esdbclient.Client) (*esdbclient.DeleteResult, error) {
		return c.TombstoneStream(callCtx, stream, esdbclient.TombstoneStreamOptions{ExpectedRevision: expectedRevision(expected)})
	})
	if err == nil {
		return nil
	}
	if c, ok := asConflict(err, stream, expected); ok {
		return c
	}
	return wrap(ctx, fmt.Sprintf("delete stream %q", stream), err)
}

// isSystem: EventStoreDB's own streams and events (statistics, metadata,
// tombstones, links) start with "$"; the port never shows them.
func isSystem(stream, eventType string) bool {
	return strings.HasPrefix(stream, "$") || strings.HasPrefix(eventType, "$")
}

// recorded maps the client's event to the port's.
func recorded(e *esdbclient.RecordedEvent) eventstore.RecordedEvent {
	r := eventstore.RecordedEvent{
		ID:       e.EventID,
		Type:     e.EventType,
		StreamID: e.StreamID,
		Revision: e.EventNumber,
		Position: eventstore.Position{Commit: e.Position.Commit, Prepare: e.Position.Prepare},
		Created:  e.CreatedDate,
		Data:     e.Data,
		Metadata: e.UserMetadata,
	}
	// The wire cannot tell empty from absent; nil is what a caller that
	// wrote no metadata expects.
	if len(r.Metadata) == 0 {
		r.Metadata = nil
	}
	return r
}
