// Package eventstore is the port between mysafe and its log of events.
//
// The port is shaped after EventStoreDB's own API so that the EventStoreDB
// adapter (eventstore/esdb) is a thin mapping and the embedded default
// (eventstore/bolt) behaves the same way: streams hold events numbered from
// revision 0, appends are checked against an expected revision, event IDs make
// a retried append idempotent, and every event also has a position in the
// global, ordered log ($all) that subscriptions follow.
//
// The contract every adapter keeps is written down as tests in
// eventstore/storetest; an adapter's own test is a few lines that run it.
package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Store is the event store port.
type Store interface {
	// Append writes events to the end of a stream atomically, if the stream is
	// at the expected revision. Appending events whose IDs were already
	// appended at the same place again writes nothing and answers as the first
	// append did (idempotent retry; EventStoreDB guarantees it for every
	// expected revision but Any). A mismatch is a *ConflictError.
	Append(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (AppendResult, error)

	// ReadStream reads up to max events of one stream. A stream that never
	// existed is ErrStreamNotFound; a deleted one is ErrStreamDeleted.
	ReadStream(ctx context.Context, stream string, opts ReadStreamOptions) ([]RecordedEvent, error)

	// ReadAll reads up to max events of the global log in order.
	ReadAll(ctx context.Context, opts ReadAllOptions) ([]RecordedEvent, error)

	// SubscribeAll follows the global log from an exclusive position: it
	// delivers the events after `from` that pass the filter (catch-up),
	// signals CaughtUp once, then delivers new events as they are appended
	// (live). An adapter may recover from a transient drop itself, without
	// losing or repeating an event; once Recv returns an error the
	// subscription is over.
	SubscribeAll(ctx context.Context, opts SubscribeAllOptions) (Subscription, error)

	// DeleteStream tombstones a stream: its events are no longer readable and
	// the stream can never be written again. Used to crypto-shred a secret by
	// deleting the stream that holds its wrapped data key. On EventStoreDB the
	// events stay in $all and on disk until the next scavenge, so operations
	// must schedule scavenges for shredding to be final.
	DeleteStream(ctx context.Context, stream string, expected ExpectedRevision) error

	// Close releases the store. It ends every open subscription.
	Close() error
}

// EventData is an event about to be appended.
type EventData struct {
	// ID identifies the event; appending the same ID at the same place again
	// is a no-op. It must not be uuid.Nil.
	ID       uuid.UUID
	Type     string
	Data     []byte // JSON
	Metadata []byte // JSON, may be empty
}

// RecordedEvent is an event as it stands in the log.
type RecordedEvent struct {
	ID       uuid.UUID
	Type     string
	StreamID string
	Revision uint64   // 0-based position in its stream
	Position Position // place in the global log
	Created  time.Time
	Data     []byte
	Metadata []byte
}

// AppendResult tells where an append landed.
type AppendResult struct {
	// NextExpectedRevision is the revision of the last event written, the
	// expected revision for the next append.
	NextExpectedRevision uint64
	// Position is the global position of the last event written.
	Position Position
}

// Position is a place in the global log. Positions are ordered; they are not
// contiguous (EventStoreDB's are byte offsets), so treat them as opaque
// cursors. The embedded store uses Commit == Prepare == sequence number.
type Position struct {
	Commit  uint64
	Prepare uint64
}

// Start is the position before the first event of the log.
var Start = Position{}

// End is the position after the last event of the log, for backwards reads.
var End = Position{Commit: ^uint64(0), Prepare: ^uint64(0)}

// Compare orders positions: -1 if p is before q, 0 if equal, +1 if after.
func (p Position) Compare(q Position) int {
	switch {
	case p.Commit < q.Commit:
		return -1
	case p.Commit > q.Commit:
		return 1
	case p.Prepare < q.Prepare:
		return -1
	case p.Prepare > q.Prepare:
		return 1
	}
	return 0
}

// String renders a position as the opaque text the API hands out.
func (p Position) String() string {
	return strconv.FormatUint(p.Commit, 10) + "-" + strconv.FormatUint(p.Prepare, 10)
}

// ParsePosition reads a position written by Position.String.
func ParsePosition(s string) (Position, error) {
	c, pr, ok := strings.Cut(s, "-")
	if !ok {
		return Position{}, fmt.Errorf("position %q: want <commit>-<prepare>", s)
	}
	commit, err1 := strconv.ParseUint(c, 10, 64)
	prepare, err2 := strconv.ParseUint(pr, 10, 64)
	if err1 != nil || err2 != nil {
		return Position{}, fmt.Errorf("position %q: want <commit>-<prepare> in decimal", s)
	}
	return Position{Commit: commit, Prepare: prepare}, nil
}

// ExpectedRevision is the condition an append or delete puts on the stream.
type ExpectedRevision struct {
	kind     expectKind
	revision uint64
}

type expectKind uint8

const (
	expectAny expectKind = iota
	expectNoStream
	expectStreamExists
	expectExact
)

var (
	// Any accepts the stream in any state.
	Any = ExpectedRevision{kind: expectAny}
	// NoStream requires that the stream has no events yet.
	NoStream = ExpectedRevision{kind: expectNoStream}
	// StreamExists requires that the stream has at least one event.
	StreamExists = ExpectedRevision{kind: expectStreamExists}
)

// Exact requires that the stream's last event has this revision.
func Exact(revision uint64) ExpectedRevision {
	return ExpectedRevision{kind: expectExact, revision: revision}
}

// IsAny, IsNoStream, IsStreamExists and Revision let adapters map the
// condition onto their own API.
func (e ExpectedRevision) IsAny() bool          { return e.kind == expectAny }
func (e ExpectedRevision) IsNoStream() bool     { return e.kind == expectNoStream }
func (e ExpectedRevision) IsStreamExists() bool { return e.kind == expectStreamExists }

// Revision returns the exact revision required, if the condition is Exact.
func (e ExpectedRevision) Revision() (uint64, bool) { return e.revision, e.kind == expectExact }

// Accepts tells whether a stream whose last revision is current (nil when
// the stream has no events) meets the condition. Adapters that check the
// condition themselves use it so that every adapter decides alike.
func (e ExpectedRevision) Accepts(current *uint64) bool {
	switch e.kind {
	case expectNoStream:
		return current == nil
	case expectStreamExists:
		return current != nil
	case expectExact:
		return current != nil && *current == e.revision
	}
	return true
}

func (e ExpectedRevision) String() string {
	switch e.kind {
	case expectNoStream:
		return "no stream"
	case expectStreamExists:
		return "stream exists"
	case expectExact:
		return strconv.FormatUint(e.revision, 10)
	}
	return "any"
}

// Direction of a read.
type Direction uint8

const (
	Forwards Direction = iota
	Backwards
)

// ReadStreamOptions selects events of one stream.
type ReadStreamOptions struct {
	Direction Direction
	// From is the first revision to read (inclusive). Reading backwards with
	// FromEnd set starts at the last event instead.
	From    uint64
	FromEnd bool
	// Max bounds the number of events; 0 means no bound.
	Max uint64
}

// ReadAllOptions selects events of the global log.
type ReadAllOptions struct {
	Direction Direction
	// From is inclusive, as in EventStoreDB: Start reads from the first event
	// forwards, End reads from the last event backwards.
	From Position
	// Max bounds the number of events; 0 means no bound.
	Max uint64
}

// SubscribeAllOptions selects what a subscription delivers.
type SubscribeAllOptions struct {
	// From is exclusive: the first event delivered is the one after it.
	// Start delivers the whole log.
	From Position
	// Filter keeps only events of streams with one of these name prefixes;
	// empty keeps every non-system event. System events (stream name or
	// event type starting with "$") are never delivered.
	StreamPrefixes []string
}

// Subscription is an open subscription to the global log.
type Subscription interface {
	// Recv blocks until the next message. An error ends the subscription:
	// ErrSubscriptionClosed after Close or when the subscribing context ends,
	// anything else when it was dropped (the caller may resubscribe from the
	// last position it processed).
	Recv() (SubscriptionMessage, error)
	// Close ends the subscription and releases its resources.
	Close() error
}

// SubscriptionMessage is one of: an event, the caught-up signal, or a
// checkpoint (how far a filtered subscription has looked, even when nothing
// matched, so a restart need not rescan).
type SubscriptionMessage struct {
	Event      *RecordedEvent
	CaughtUp   bool
	Checkpoint *Position
}

// PassesFilter reports whether a subscription with these options delivers
// events of the given stream. Adapters that filter themselves use it.
func (o SubscribeAllOptions) PassesFilter(stream string) bool {
	if strings.HasPrefix(stream, "$") {
		return false
	}
	if len(o.StreamPrefixes) == 0 {
		return true
	}
	for _, p := range o.StreamPrefixes {
		if strings.HasPrefix(stream, p) {
			return true
		}
	}
	return false
}

var (
	// ErrConflict is what every *ConflictError matches with errors.Is.
	ErrConflict = errors.New("wrong expected revision")
	// ErrStreamNotFound: the stream has no events.
	ErrStreamNotFound = errors.New("stream not found")
	// ErrStreamDeleted: the stream was deleted and cannot be read or written.
	ErrStreamDeleted = errors.New("stream deleted")
	// ErrSubscriptionClosed: the subscription was closed by its owner.
	ErrSubscriptionClosed = errors.New("subscription closed")
	// ErrUnavailable: the store cannot be reached; the operation may be retried.
	ErrUnavailable = errors.New("event store unavailable")
)

// ConflictError is an append or delete whose expected revision did not hold.
type ConflictError struct {
	Stream   string
	Expected ExpectedRevision
	// Actual is the stream's last revision, nil if the stream has no events
	// or the store did not say.
	Actual *uint64
}

func (e *ConflictError) Error() string {
	actual := "no stream"
	if e.Actual != nil {
		actual = strconv.FormatUint(*e.Actual, 10)
	}
	return fmt.Sprintf("append to %q: wrong expected revision: expected %s, actual %s", e.Stream, e.Expected, actual)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }
