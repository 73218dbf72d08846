package esdbtest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/bolt"
	"github.com/mysafe/mysafe/eventstore/esdbtest"
)

// These tests talk to the server through the real client library, the way
// EventStoreDB would be talked to, and check what the client makes of the
// answers.

func startServer(t *testing.T) *esdbtest.Server {
	t.Helper()
	backing := newBacking(t)
	srv, err := esdbtest.Start(backing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func newClient(t *testing.T, srv *esdbtest.Server) *esdb.Client {
	t.Helper()
	cfg, err := esdb.ParseConnectionString(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = esdb.NoopLogging()
	c, err := esdb.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func event(typ string, data string) esdb.EventData {
	return esdb.EventData{
		EventID: uuid.New(), EventType: typ, ContentType: esdb.ContentTypeJson,
		Data: []byte(data), Metadata: []byte(`{"by":"test"}`),
	}
}

func drain(rs *esdb.ReadStream, err error) ([]*esdb.RecordedEvent, error) {
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []*esdb.RecordedEvent
	for {
		ev, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev.OriginalEvent())
	}
}

func code(err error) esdb.ErrorCode {
	var e *esdb.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return -1
}

func TestAppendThenReadStream(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t, startServer(t))
	before := time.Now()

	sent := []esdb.EventData{event("Created", `{"n":1}`), event("Renamed", `{"n":2}`), event("Shared", `{"n":3}`)}
	res, err := c.AppendToStream(ctx, "secret-1", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}}, sent...)
	if err != nil {
		t.Fatal(err)
	}
	if res.NextExpectedVersion != 2 || res.CommitPosition == 0 {
		t.Fatalf("append answered %+v, want revision 2 and a position", res)
	}

	got, err := drain(c.ReadStream(ctx, "secret-1", esdb.ReadStreamOptions{From: esdb.Start{}}, math.MaxUint64))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("read %d events, want 3", len(got))
	}
	for i, e := range got {
		if e.EventID != sent[i].EventID || e.EventType != sent[i].EventType || string(e.Data) != string(sent[i].Data) ||
			string(e.UserMetadata) != `{"by":"test"}` || e.StreamID != "secret-1" || e.EventNumber != uint64(i) ||
			e.ContentType != "application/json" {
			t.Errorf("event %d = %+v, want the one sent: %+v", i, e, sent[i])
		}
		// created is sent in .NET ticks; the client must read back the
		// moment of the append, not some other epoch.
		if e.CreatedDate.Before(before.Add(-time.Second)) || e.CreatedDate.After(time.Now().Add(time.Second)) {
			t.Errorf("event %d created %v, want about %v", i, e.CreatedDate, before)
		}
	}
	if got[2].Position.Commit != res.CommitPosition {
		t.Errorf("last event at %v, append said %d", got[2].Position, res.CommitPosition)
	}

	back, err := drain(c.ReadStream(ctx, "secret-1", esdb.ReadStreamOptions{Direction: esdb.Backwards, From: esdb.End{}}, 2))
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || back[0].EventNumber != 2 || back[1].EventNumber != 1 {
		t.Errorf("backwards from the end, 2: got %v", revisions(back))
	}
	mid, err := drain(c.ReadStream(ctx, "secret-1", esdb.ReadStreamOptions{From: esdb.Revision(1)}, 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(mid) != 1 || mid[0].EventNumber != 1 {
		t.Errorf("forwards from 1, 1: got %v", revisions(mid))
	}
}

func revisions(events []*esdb.RecordedEvent) []uint64 {
	var out []uint64
	for _, e := range events {
		out = append(out, e.EventNumber)
	}
	return out
}

func TestReadMissingStream(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t, startServer(t))
	_, err := drain(c.ReadStream(ctx, "nope", esdb.ReadStreamOptions{}, 10))
	if code(err) != esdb.ErrorCodeResourceNotFound {
		t.Fatalf("reading a missing stream: %v, want ErrorCodeResourceNotFound", err)
	}
}

func TestWrongExpectedVersion(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t, startServer(t))
	if _, err := c.AppendToStream(ctx, "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}}, event("A", `{}`), event("B", `{}`)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		stream   string
		expected esdb.ExpectedRevision
		want     string
	}{
		{"s", esdb.NoStream{}, "expecting 'no_stream' but got '1'"},
		{"s", esdb.Revision(0), "expecting '0' but got '1'"},
		{"other", esdb.StreamExists{}, "expecting 'stream_exists' but got 'no_stream'"},
		{"other", esdb.Revision(3), "expecting '3' but got 'no_stream'"},
	} {
		_, err := c.AppendToStream(ctx, tc.stream, esdb.AppendToStreamOptions{ExpectedRevision: tc.expected}, event("C", `{}`))
		if code(err) != esdb.ErrorCodeWrongExpectedVersion || !contains(err, tc.want) {
			t.Errorf("append to %s expecting %v: %v, want a wrong expected version %q", tc.stream, tc.expected, err, tc.want)
		}
	}
	if _, err := c.AppendToStream(ctx, "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.Revision(1)}, event("C", `{}`)); err != nil {
		t.Errorf("append at the right revision: %v", err)
	}
}

func contains(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }

func TestTombstone(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t, startServer(t))
	if _, err := c.AppendToStream(ctx, "key-1", esdb.AppendToStreamOptions{}, event("KeyCreated", `{}`)); err != nil {
		t.Fatal(err)
	}

	_, err := c.TombstoneStream(ctx, "key-1", esdb.TombstoneStreamOptions{ExpectedRevision: esdb.Revision(5)})
	if s, _ := status.FromError(err); s.Code() != codes.FailedPrecondition || !contains(err, "WrongExpectedVersion") || !contains(err, "Actual version: 0") {
		t.Fatalf("tombstone at the wrong revision: %v, want FailedPrecondition WrongExpectedVersion, actual 0", err)
	}
	if _, err := c.TombstoneStream(ctx, "key-1", esdb.TombstoneStreamOptions{ExpectedRevision: esdb.Revision(0)}); err != nil {
		t.Fatal(err)
	}

	_, err = drain(c.ReadStream(ctx, "key-1", esdb.ReadStreamOptions{}, 10))
	if code(err) != esdb.ErrorCodeStreamDeleted {
		t.Errorf("reading a tombstoned stream: %v, want ErrorCodeStreamDeleted", err)
	}
	_, err = c.AppendToStream(ctx, "key-1", esdb.AppendToStreamOptions{}, event("KeyCreated", `{}`))
	if code(err) != esdb.ErrorCodeStreamDeleted {
		t.Errorf("appending to a tombstoned stream: %v, want ErrorCodeStreamDeleted", err)
	}
	_, err = c.TombstoneStream(ctx, "key-1", esdb.TombstoneStreamOptions{ExpectedRevision: esdb.Any{}})
	if code(err) != esdb.ErrorCodeStreamDeleted {
		t.Errorf("tombstoning twice: %v, want ErrorCodeStreamDeleted", err)
	}
	if _, err := c.DeleteStream(ctx, "key-2", esdb.DeleteStreamOptions{ExpectedRevision: esdb.NoStream{}}); err != nil {
		t.Errorf("deleting a stream that never was, expecting none: %v", err)
	}
}

func TestReadAll(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t, startServer(t))
	for i := range 5 {
		if _, err := c.AppendToStream(ctx, fmt.Sprintf("s-%d", i%2), esdb.AppendToStreamOptions{}, event("E", fmt.Sprintf(`{"i":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	fwd, err := drain(c.ReadAll(ctx, esdb.ReadAllOptions{From: esdb.Start{}}, math.MaxUint64))
	if err != nil {
		t.Fatal(err)
	}
	if len(fwd) != 5 {
		t.Fatalf("read %d events of $all, want 5", len(fwd))
	}
	for i := 1; i < len(fwd); i++ {
		if fwd[i].Position.Commit <= fwd[i-1].Position.Commit {
			t.Fatalf("positions not increasing: %v then %v", fwd[i-1].Position, fwd[i].Position)
		}
	}
	last, err := drain(c.ReadAll(ctx, esdb.ReadAllOptions{Direction: esdb.Backwards, From: esdb.End{}}, 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(last) != 1 || last[0].Position != fwd[4].Position {
		t.Errorf("last event of $all: %v, want %v", last, fwd[4].Position)
	}
	from, err := drain(c.ReadAll(ctx, esdb.ReadAllOptions{From: fwd[2].Position}, 2))
	if err != nil {
		t.Fatal(err)
	}
	if len(from) != 2 || from[0].Position != fwd[2].Position {
		t.Errorf("forwards from the third event, 2: got %d events", len(from))
	}
	// Backwards, EventStoreDB starts before the position it is given.
	back, err := drain(c.ReadAll(ctx, esdb.ReadAllOptions{Direction: esdb.Backwards, From: fwd[2].Position}, 10))
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || back[0].Position != fwd[1].Position || back[1].Position != fwd[0].Position {
		t.Errorf("backwards from the third event: got %d events, want the second and the first", len(back))
	}
}

func TestSubscribeToAllWithFilters(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t, startServer(t))
	// 40 events, 1 in 10 of them in a "key-" stream of type "KeyCreated".
	for i := range 40 {
		stream, typ := fmt.Sprintf("secret-%d", i), "SecretCreated"
		if i%10 == 0 {
			stream, typ = fmt.Sprintf("key-%d", i), "KeyCreated"
		}
		if _, err := c.AppendToStream(ctx, stream, esdb.AppendToStreamOptions{}, event(typ, `{}`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		filter *esdb.SubscriptionFilter
	}{
		{"stream prefix", &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: []string{"key-"}}},
		{"stream regex", &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Regex: "^key-"}},
		{"event type prefix", &esdb.SubscriptionFilter{Type: esdb.EventFilterType, Prefixes: []string{"Key"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := c.SubscribeToAll(ctx, esdb.SubscribeToAllOptions{From: esdb.Start{}, Filter: tc.filter, MaxSearchWindow: 5})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			var events, checkpoints int
			var last esdb.Position
			for done := false; !done; {
				e := sub.Recv()
				switch {
				case e.EventAppeared != nil:
					events++
					if e.EventAppeared.Event.EventType != "KeyCreated" {
						t.Errorf("filter let %s through", e.EventAppeared.Event.EventType)
					}
					last = e.EventAppeared.Event.Position
				case e.CheckPointReached != nil:
					checkpoints++
					if e.CheckPointReached.Commit < last.Commit {
						t.Errorf("checkpoint %v behind the last event %v", *e.CheckPointReached, last)
					}
				case e.CaughtUp != nil:
					done = true
				case e.SubscriptionDropped != nil:
					t.Fatal(e.SubscriptionDropped.Error)
				}
			}
			// A window of 5 and the default multiplier of 1: a checkpoint
			// every 5 events looked at.
			if events != 4 || checkpoints != 8 {
				t.Errorf("got %d events and %d checkpoints, want 4 and 8", events, checkpoints)
			}
		})
	}
}

func TestSubscriptionGoesLiveAndIsDropped(t *testing.T) {
	ctx := testContext(t)
	srv := startServer(t)
	c := newClient(t, srv)
	sub, err := c.SubscribeToAll(ctx, esdb.SubscribeToAllOptions{From: esdb.End{}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if e := sub.Recv(); e.CaughtUp == nil {
		t.Fatalf("first message %+v, want caught up", e)
	}
	sent := event("Live", `{}`)
	if _, err := c.AppendToStream(ctx, "live", esdb.AppendToStreamOptions{}, sent); err != nil {
		t.Fatal(err)
	}
	if e := sub.Recv(); e.EventAppeared == nil || e.EventAppeared.Event.EventID != sent.EventID {
		t.Fatalf("got %+v, want the live event", e)
	}
	if n := srv.DropSubscriptions(); n != 1 {
		t.Fatalf("dropped %d subscriptions, want 1", n)
	}
	e := sub.Recv()
	if e.SubscriptionDropped == nil || status.Code(e.SubscriptionDropped.Error) != codes.Unavailable {
		t.Fatalf("got %+v, want a drop with Unavailable", e)
	}
}

func TestUnavailable(t *testing.T) {
	ctx := testContext(t)
	srv := startServer(t)
	c := newClient(t, srv)
	if _, err := c.AppendToStream(ctx, "s", esdb.AppendToStreamOptions{}, event("A", `{}`)); err != nil {
		t.Fatal(err)
	}
	if err := srv.SetUnavailable(true); err != nil {
		t.Fatal(err)
	}
	_, err := c.AppendToStream(ctx, "s", esdb.AppendToStreamOptions{}, event("B", `{}`))
	// Depending on where the append meets the closed connection, the
	// client reports the status, or the bare io.EOF of a broken stream.
	if code(err) != esdb.ErrorUnavailable && !errors.Is(err, io.EOF) {
		t.Fatalf("append while down: %v, want ErrorUnavailable or io.EOF", err)
	}
	if err := srv.SetUnavailable(false); err != nil {
		t.Fatal(err)
	}
	// The client may have given up rediscovering meanwhile; a new one
	// must get through on the same address.
	c2 := newClient(t, srv)
	if _, err := c2.AppendToStream(ctx, "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.Revision(0)}, event("B", `{}`)); err != nil {
		t.Fatalf("append after coming back: %v", err)
	}
}

// newBacking is the store behind the server: the embedded bolt store, in a
// directory of the test's own.
func newBacking(t *testing.T) eventstore.Store {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
