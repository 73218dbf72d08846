// Package storetest is the contract every eventstore.Store adapter keeps,
// written as tests. An adapter's own test is a few lines:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) eventstore.Store {
//			s, err := bolt.Open(filepath.Join(t.TempDir(), "events.db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Every subtest gets a fresh store and also uses stream names of its own, so
// the suite can run against a shared server whose log holds other events:
// it only ever looks at the streams it wrote. Waits are bounded by a generous
// timeout; nothing asserts how fast a store is.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mysafe/mysafe/eventstore"
)

// waitTimeout bounds every wait for a subscription message. It only turns a
// hang into a failure; it is not a speed requirement.
const waitTimeout = 10 * time.Second

// Run runs the contract against stores made by newStore. newStore is called
// once per subtest and registers the store's cleanup with t.
func Run(t *testing.T, newStore func(t *testing.T) eventstore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s eventstore.Store)
	}{
		{"AppendAndReadStream", testAppendAndReadStream},
		{"ReadMissingStream", testReadMissingStream},
		{"ExpectedRevision", testExpectedRevision},
		{"AppendNoEvents", testAppendNoEvents},
		{"ConcurrentWritersOneWins", testConcurrentWritersOneWins},
		{"IdempotentRetry", testIdempotentRetry},
		{"MetadataRoundTrip", testMetadataRoundTrip},
		{"StreamsAreIndependent", testStreamsAreIndependent},
		{"GlobalOrder", testGlobalOrder},
		{"SubscribeFromStart", testSubscribeFromStart},
		{"SubscribeFromPositionIsExclusive", testSubscribeFromPosition},
		{"SubscribeFilterByPrefix", testSubscribeFilter},
		{"SubscribeCatchUpThenLive", testCatchUpThenLive},
		{"SubscribeAppendsRaceWithCatchUp", testAppendsRaceWithCatchUp},
		{"SubscribeResumeFromLastProcessed", testResumeFromLastProcessed},
		{"SubscriptionCloseEndsRecv", testSubscriptionClose},
		{"DeleteStream", testDeleteStream},
		// Separate from DeleteStream so that a run against a store that
		// keeps deleted events in $all until a scavenge (a real
		// EventStoreDB) can -skip it knowingly.
		{"DeleteStreamHidesEventsFromAll", testDeleteStreamHidesEvents},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// ---- Stream and append contract ----

func testAppendAndReadStream(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	stream := newPrefix() + "order"
	evs := newEvents("OrderPlaced", 4)

	before := time.Now()
	res, err := s.Append(ctx, stream, eventstore.NoStream, evs...)
	after := time.Now()
	if err != nil {
		t.Fatalf("Append(NoStream, 4 events) = %v, want success", err)
	}
	if res.NextExpectedRevision != 3 {
		t.Errorf("NextExpectedRevision = %d, want 3 (revisions start at 0)", res.NextExpectedRevision)
	}

	all := readStream(t, s, stream, eventstore.ReadStreamOptions{})
	if len(all) != len(evs) {
		t.Fatalf("read %d events, want %d", len(all), len(evs))
	}
	for i, rec := range all {
		checkRecorded(t, rec, stream, uint64(i), evs[i])
		if i > 0 && rec.Position.Compare(all[i-1].Position) <= 0 {
			t.Errorf("event %d position %v not after event %d's %v", i, rec.Position, i-1, all[i-1].Position)
		}
		// Wide bounds: a server's clock may differ from ours; the point is
		// that the time is set and converted right (not zero, not 1970).
		if rec.Created.Before(before.Add(-time.Hour)) || rec.Created.After(after.Add(time.Hour)) {
			t.Errorf("event %d Created = %v, want about %v", i, rec.Created, before)
		}
	}
	if res.Position != all[3].Position {
		t.Errorf("AppendResult.Position = %v, want the last event's position %v", res.Position, all[3].Position)
	}

	fwd, bwd := eventstore.Forwards, eventstore.Backwards
	cases := []struct {
		name string
		opts eventstore.ReadStreamOptions
		want []int // revisions
	}{
		{"forwards from 0", eventstore.ReadStreamOptions{Direction: fwd}, []int{0, 1, 2, 3}},
		{"forwards from 2", eventstore.ReadStreamOptions{Direction: fwd, From: 2}, []int{2, 3}},
		{"forwards max 2", eventstore.ReadStreamOptions{Direction: fwd, Max: 2}, []int{0, 1}},
		{"forwards from 1 max 2", eventstore.ReadStreamOptions{Direction: fwd, From: 1, Max: 2}, []int{1, 2}},
		{"forwards max beyond the end", eventstore.ReadStreamOptions{Direction: fwd, From: 3, Max: 10}, []int{3}},
		{"forwards from past the end", eventstore.ReadStreamOptions{Direction: fwd, From: 4}, nil},
		{"backwards from end", eventstore.ReadStreamOptions{Direction: bwd, FromEnd: true}, []int{3, 2, 1, 0}},
		{"backwards from end max 1", eventstore.ReadStreamOptions{Direction: bwd, FromEnd: true, Max: 1}, []int{3}},
		{"backwards from 2", eventstore.ReadStreamOptions{Direction: bwd, From: 2}, []int{2, 1, 0}},
		{"backwards from 2 max 2", eventstore.ReadStreamOptions{Direction: bwd, From: 2, Max: 2}, []int{2, 1}},
		{"backwards from 0", eventstore.ReadStreamOptions{Direction: bwd, From: 0}, []int{0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := readStream(t, s, stream, c.opts)
			var revs []int
			for _, rec := range got {
				revs = append(revs, int(rec.Revision))
			}
			if !slices.Equal(revs, c.want) {
				t.Fatalf("ReadStream(%+v) revisions = %v, want %v", c.opts, revs, c.want)
			}
			for _, rec := range got {
				checkSame(t, rec, all[rec.Revision])
			}
		})
	}
}

func testReadMissingStream(t *testing.T, s eventstore.Store) {
	stream := newPrefix() + "never-written"
	for _, dir := range []eventstore.Direction{eventstore.Forwards, eventstore.Backwards} {
		_, err := s.ReadStream(t.Context(), stream, eventstore.ReadStreamOptions{Direction: dir, FromEnd: dir == eventstore.Backwards})
		if !errors.Is(err, eventstore.ErrStreamNotFound) {
			t.Errorf("ReadStream(direction %d) of a stream never written = %v, want ErrStreamNotFound", dir, err)
		}
	}
}

func testExpectedRevision(t *testing.T, s eventstore.Store) {
	cases := []struct {
		name     string
		existing int // events in the stream before the append
		expected eventstore.ExpectedRevision
		ok       bool
	}{
		{"Any on a new stream", 0, eventstore.Any, true},
		{"Any on an existing stream", 2, eventstore.Any, true},
		{"NoStream on a new stream", 0, eventstore.NoStream, true},
		{"NoStream on an existing stream", 2, eventstore.NoStream, false},
		{"StreamExists on a new stream", 0, eventstore.StreamExists, false},
		{"StreamExists on an existing stream", 2, eventstore.StreamExists, true},
		{"Exact on a new stream", 0, eventstore.Exact(0), false},
		{"Exact at the last revision", 2, eventstore.Exact(1), true},
		{"Exact behind the last revision", 2, eventstore.Exact(0), false},
		{"Exact beyond the last revision", 2, eventstore.Exact(5), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			stream := newPrefix() + "account"
			before := appendN(t, s, stream, c.existing)
			ev := newEvent("Deposited", 0)

			res, err := s.Append(ctx, stream, c.expected, ev)

			if c.ok {
				if err != nil {
					t.Fatalf("Append(%v) with %d events in the stream = %v, want success", c.expected, c.existing, err)
				}
				if res.NextExpectedRevision != uint64(c.existing) {
					t.Errorf("NextExpectedRevision = %d, want %d", res.NextExpectedRevision, c.existing)
				}
				got := readStream(t, s, stream, eventstore.ReadStreamOptions{})
				if len(got) != c.existing+1 {
					t.Fatalf("stream has %d events, want %d", len(got), c.existing+1)
				}
				checkRecorded(t, got[c.existing], stream, uint64(c.existing), ev)
				return
			}

			checkConflict(t, err, stream, c.expected, c.existing)
			// A conflict writes nothing.
			if c.existing == 0 {
				if _, err := s.ReadStream(ctx, stream, eventstore.ReadStreamOptions{}); !errors.Is(err, eventstore.ErrStreamNotFound) {
					t.Errorf("after the conflict, ReadStream = %v, want ErrStreamNotFound", err)
				}
				return
			}
			if got := readStream(t, s, stream, eventstore.ReadStreamOptions{}); !slices.Equal(recordIDs(got), recordIDs(before)) {
				t.Errorf("after the conflict the stream holds %v, want it unchanged %v", recordIDs(got), recordIDs(before))
			}
		})
	}
}

// checkConflict checks that err is the conflict of an append with expected
// to a stream holding `existing` events.
func checkConflict(t *testing.T, err error, stream string, expected eventstore.ExpectedRevision, existing int) {
	t.Helper()
	if !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("Append(%v) with %d events in the stream = %v, want an error matching ErrConflict", expected, existing, err)
	}
	var ce *eventstore.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("conflict %v (%T) is not a *eventstore.ConflictError", err, err)
	}
	if ce.Stream != stream {
		t.Errorf("ConflictError.Stream = %q, want %q", ce.Stream, stream)
	}
	if ce.Expected != expected {
		t.Errorf("ConflictError.Expected = %v, want %v", ce.Expected, expected)
	}
	// Actual may be nil when the store does not say, but never wrong.
	switch {
	case existing == 0 && ce.Actual != nil:
		t.Errorf("ConflictError.Actual = %d, want nil for a stream without events", *ce.Actual)
	case existing > 0 && ce.Actual != nil && *ce.Actual != uint64(existing-1):
		t.Errorf("ConflictError.Actual = %d, want %d", *ce.Actual, existing-1)
	}
}

func testAppendNoEvents(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	stream := newPrefix() + "quiet"
	before := appendN(t, s, stream, 2)

	res, err := s.Append(ctx, stream, eventstore.Exact(1))
	if err != nil {
		t.Fatalf("Append(Exact(1)) of no events to a stream at revision 1 = %v, want success", err)
	}
	if res.NextExpectedRevision != 1 {
		t.Errorf("NextExpectedRevision = %d, want 1", res.NextExpectedRevision)
	}
	_, err = s.Append(ctx, stream, eventstore.Exact(0))
	checkConflict(t, err, stream, eventstore.Exact(0), 2)

	if got := readStream(t, s, stream, eventstore.ReadStreamOptions{}); !slices.Equal(recordIDs(got), recordIDs(before)) {
		t.Errorf("stream holds %v, want it unchanged %v", recordIDs(got), recordIDs(before))
	}
}

// testConcurrentWritersOneWins: 20 writers that all loaded revision 0 append
// at once; exactly one may win, the others must see a conflict.
func testConcurrentWritersOneWins(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	stream := newPrefix() + "contended"
	appendN(t, s, stream, 1)

	const writers = 20
	evs := newEvents("Withdrawn", writers)
	errs := make([]error, writers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			<-start
			_, errs[i] = s.Append(ctx, stream, eventstore.Exact(0), evs[i])
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, eventstore.ErrConflict):
			t.Errorf("writer %d: %v, want success or ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	got := readStream(t, s, stream, eventstore.ReadStreamOptions{})
	if len(got) != 2 {
		t.Fatalf("stream has %d events, want 2 (the first and the winner's)", len(got))
	}
	checkRecorded(t, got[1], stream, 1, evs[winner])
}

// testIdempotentRetry: appending the same event IDs again (a client retrying
// after a lost answer) writes nothing and answers as the first append did,
// also when the stream has moved on since, so the expected revision of the
// retry is stale.
func testIdempotentRetry(t *testing.T, s eventstore.Store) {
	cases := []struct {
		name     string
		existing int
		expected eventstore.ExpectedRevision
	}{
		{"NoStream", 0, eventstore.NoStream},
		{"Exact", 2, eventstore.Exact(1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			stream := newPrefix() + "retried"
			before := appendN(t, s, stream, c.existing)
			evs := newEvents("SecretShared", 2)

			first, err := s.Append(ctx, stream, c.expected, evs...)
			if err != nil {
				t.Fatalf("first Append(%v) = %v", c.expected, err)
			}
			again, err := s.Append(ctx, stream, c.expected, evs...)
			if err != nil {
				t.Fatalf("retried Append(%v) with the same event IDs = %v, want success", c.expected, err)
			}
			if again != first {
				t.Errorf("retry answered %+v, want the first answer %+v", again, first)
			}

			later := newEvent("SecretUnshared", 9)
			if _, err := s.Append(ctx, stream, eventstore.Exact(first.NextExpectedRevision), later); err != nil {
				t.Fatalf("Append after the first: %v", err)
			}
			stale, err := s.Append(ctx, stream, c.expected, evs...)
			if err != nil {
				t.Fatalf("retry with the now stale %v = %v, want success", c.expected, err)
			}
			if stale != first {
				t.Errorf("retry with the now stale %v answered %+v, want the first answer %+v", c.expected, stale, first)
			}

			want := append(recordIDs(before), evs[0].ID, evs[1].ID, later.ID)
			if got := recordIDs(readStream(t, s, stream, eventstore.ReadStreamOptions{})); !slices.Equal(got, want) {
				t.Errorf("stream holds %v, want each event once: %v", got, want)
			}
		})
	}
}

// testMetadataRoundTrip appends several events with metadata in one append
// (a known bug once lost the metadata of all but the first) and checks that
// every way of reading returns the same bytes.
func testMetadataRoundTrip(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	prefix := newPrefix()
	stream := prefix + "meta"
	evs := []eventstore.EventData{
		{ID: uuid.New(), Type: "A", Data: []byte(`{"name":"héllo ✓"}`), Metadata: []byte(`{"correlationId":"c-1","ip":"10.0.0.1"}`)},
		{ID: uuid.New(), Type: "B", Data: []byte(`{"n":2}`), Metadata: []byte(`{"correlationId":"c-2"}`)},
		{ID: uuid.New(), Type: "C", Data: []byte(`{}`)}, // no metadata
		{ID: uuid.New(), Type: "D", Data: []byte(`[1,2,3]`), Metadata: []byte(`{"causationId":"x"}`)},
	}
	res, err := s.Append(ctx, stream, eventstore.NoStream, evs...)
	if err != nil {
		t.Fatal(err)
	}

	byStream := readStream(t, s, stream, eventstore.ReadStreamOptions{})
	if len(byStream) != len(evs) {
		t.Fatalf("ReadStream: %d events, want %d", len(byStream), len(evs))
	}
	for i := range evs {
		checkRecorded(t, byStream[i], stream, uint64(i), evs[i])
	}

	fromAll := ownEvents(readAll(t, s, eventstore.ReadAllOptions{From: byStream[0].Position}), prefix)
	_, p := subscribe(t, t.Context(), s, eventstore.SubscribeAllOptions{StreamPrefixes: []string{prefix}})
	fromSub := p.untilCaughtUp(t)
	for name, got := range map[string][]eventstore.RecordedEvent{"ReadAll": fromAll, "SubscribeAll": fromSub} {
		if len(got) != len(evs) {
			t.Errorf("%s: %d events, want %d", name, len(got), len(evs))
			continue
		}
		for i := range got {
			checkSame(t, got[i], byStream[i])
		}
	}
	if res.Position != byStream[3].Position {
		t.Errorf("AppendResult.Position = %v, want %v", res.Position, byStream[3].Position)
	}
}

// testStreamsAreIndependent: a stream whose name extends another's is a
// different stream, with its own revisions.
func testStreamsAreIndependent(t *testing.T, s eventstore.Store) {
	prefix := newPrefix()
	short, long := prefix+"x", prefix+"x1"
	a := appendN(t, s, short, 2)
	b := appendN(t, s, long, 3)
	if _, err := s.Append(t.Context(), short, eventstore.Exact(1), newEvent("More", 0)); err != nil {
		t.Errorf("Append(Exact(1)) to %q after 3 events in %q: %v", short, long, err)
	}
	if got := readStream(t, s, long, eventstore.ReadStreamOptions{}); !slices.Equal(recordIDs(got), recordIDs(b)) {
		t.Errorf("%q holds %v, want %v", long, recordIDs(got), recordIDs(b))
	}
	if got := readStream(t, s, short, eventstore.ReadStreamOptions{Max: 2}); !slices.Equal(recordIDs(got), recordIDs(a)) {
		t.Errorf("%q starts with %v, want %v", short, recordIDs(got), recordIDs(a))
	}
}

// ---- $all ----

func testGlobalOrder(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	prefix := newPrefix()
	plan := []struct {
		stream string
		n      int
	}{{"a", 1}, {"b", 2}, {"a", 1}, {"c", 1}, {"b", 1}, {"a", 3}}

	var want []uuid.UUID
	var results []eventstore.AppendResult
	for i, step := range plan {
		evs := newEvents("Step", step.n)
		res, err := s.Append(ctx, prefix+step.stream, eventstore.Any, evs...)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && res.Position.Compare(results[i-1].Position) <= 0 {
			t.Errorf("append %d landed at %v, not after append %d at %v", i, res.Position, i-1, results[i-1].Position)
		}
		results = append(results, res)
		want = append(want, eventIDs(evs)...)
	}
	first := readStream(t, s, prefix+"a", eventstore.ReadStreamOptions{Max: 1})[0].Position
	last := results[len(results)-1].Position

	fwd := ownEvents(readAll(t, s, eventstore.ReadAllOptions{From: first}), prefix)
	if !slices.Equal(recordIDs(fwd), want) {
		t.Fatalf("ReadAll forwards from the first event: %v, want the append order %v", recordIDs(fwd), want)
	}
	for i, rec := range fwd {
		if i > 0 && rec.Position.Compare(fwd[i-1].Position) <= 0 {
			t.Errorf("ReadAll event %d at %v, not after %v", i, rec.Position, fwd[i-1].Position)
		}
		// $all and the stream agree on every event.
		same := readStream(t, s, rec.StreamID, eventstore.ReadStreamOptions{From: rec.Revision, Max: 1})
		checkSame(t, rec, same[0])
	}

	bwd := ownEvents(readAll(t, s, eventstore.ReadAllOptions{Direction: eventstore.Backwards, From: last}), prefix)
	if !slices.Equal(recordIDs(bwd), reversed(want)) {
		t.Errorf("ReadAll backwards from the last append: %v, want %v", recordIDs(bwd), reversed(want))
	}

	// From is inclusive in both directions; Max bounds the count.
	if got := readAll(t, s, eventstore.ReadAllOptions{From: first, Max: 3}); len(got) != 3 || got[0].ID != want[0] {
		t.Errorf("ReadAll forwards from the first event, max 3: %v, want 3 events starting with %v", recordIDs(got), want[0])
	}
	if got := readAll(t, s, eventstore.ReadAllOptions{Direction: eventstore.Backwards, From: last, Max: 1}); len(got) != 1 || got[0].ID != want[len(want)-1] {
		t.Errorf("ReadAll backwards from the last append, max 1: %v, want [%v]", recordIDs(got), want[len(want)-1])
	}
	// A shared server may have logged events of its own since, so look a
	// little further back than one event.
	fromEnd := ownEvents(readAll(t, s, eventstore.ReadAllOptions{Direction: eventstore.Backwards, From: eventstore.End, Max: 100}), prefix)
	if len(fromEnd) == 0 || fromEnd[0].ID != want[len(want)-1] {
		t.Errorf("ReadAll backwards from End: own events %v, want the last append's event %v first", recordIDs(fromEnd), want[len(want)-1])
	}
}

// ---- Subscriptions ----

func testSubscribeFromStart(t *testing.T, s eventstore.Store) {
	prefix := newPrefix()
	appendN(t, s, prefix+"one", 2)
	appendN(t, s, prefix+"two", 1)
	want := ownEvents(readAll(t, s, eventstore.ReadAllOptions{}), prefix)

	_, p := subscribe(t, t.Context(), s, eventstore.SubscribeAllOptions{From: eventstore.Start, StreamPrefixes: []string{prefix}})
	got := p.untilCaughtUp(t)
	checkSameList(t, "catch-up from Start", got, want)

	sentinel := appendN(t, s, prefix+"two", 1)[0]
	if ev := p.nextEvent(t); ev.ID != sentinel.ID {
		t.Errorf("first live event %v, want the one appended after catching up, %v", ev.ID, sentinel.ID)
	}
}

func testSubscribeFromPosition(t *testing.T, s eventstore.Store) {
	prefix := newPrefix()
	recs := appendN(t, s, prefix+"s", 5)

	_, p := subscribe(t, t.Context(), s, eventstore.SubscribeAllOptions{From: recs[1].Position, StreamPrefixes: []string{prefix}})
	checkSameList(t, "catch-up from the second event's position", p.untilCaughtUp(t), recs[2:])
}

func testSubscribeFilter(t *testing.T, s eventstore.Store) {
	prefix := newPrefix()
	alpha := []string{prefix + "alpha-1"}

	// Live: subscribed before anything is written.
	_, live := subscribe(t, t.Context(), s, eventstore.SubscribeAllOptions{StreamPrefixes: alpha})
	if got := live.untilCaughtUp(t); len(got) != 0 {
		t.Errorf("catch-up of an empty selection delivered %v", recordIDs(got))
	}

	streams := []string{"alpha-1", "beta-1", "alpha-10", "gamma-1", "alpha-2"}
	for _, name := range streams {
		appendN(t, s, prefix+name, 1)
	}
	byStream := map[string]uuid.UUID{}
	for _, rec := range ownEvents(readAll(t, s, eventstore.ReadAllOptions{}), prefix) {
		byStream[strings.TrimPrefix(rec.StreamID, prefix)] = rec.ID
	}
	if got, want := recordIDs(live.events(t, 2)), []uuid.UUID{byStream["alpha-1"], byStream["alpha-10"]}; !slices.Equal(got, want) {
		t.Errorf("live events with prefix alpha-1: %v, want alpha-1's and alpha-10's %v", got, want)
	}

	cases := []struct {
		name     string
		prefixes []string
		want     []string
	}{
		{"one prefix", []string{"alpha"}, []string{"alpha-1", "alpha-10", "alpha-2"}},
		{"two prefixes", []string{"beta", "gamma"}, []string{"beta-1", "gamma-1"}},
		{"longer prefix", []string{"alpha-1"}, []string{"alpha-1", "alpha-10"}},
		{"prefix matching nothing", []string{"delta"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var prefixes []string
			for _, pre := range c.prefixes {
				prefixes = append(prefixes, prefix+pre)
			}
			_, p := subscribe(t, t.Context(), s, eventstore.SubscribeAllOptions{StreamPrefixes: prefixes})
			var got []string
			for _, rec := range p.untilCaughtUp(t) {
				got = append(got, strings.TrimPrefix(rec.StreamID, prefix))
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("prefixes %v delivered streams %v, want %v", c.prefixes, got, c.want)
			}
		})
	}
}

func testCatchUpThenLive(t *testing.T, s eventstore.Store) {
	prefix := newPrefix()
	old := appendN(t, s, prefix+"x", 2)
	_, p := subscribe(t, t.Context(), s, eventstore.SubscribeAllOptions{StreamPrefixes: []string{prefix}})
	checkSameList(t, "catch-up", p.untilCaughtUp(t), old)

	var want []eventstore.RecordedEvent
	want = append(want, appendN(t, s, prefix+"y", 1)...)
	want = append(want, appendN(t, s, prefix+"x", 2)...)
	checkSameList(t, "live", p.events(t, len(want)), want)
}

// testAppendsRaceWithCatchUp: writers keep appending while a subscription
// catches up and turns live. It must deliver every event once, in log order,
// and signal CaughtUp exactly once.
func testAppendsRaceWithCatchUp(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	prefix := newPrefix()
	for range 10 {
		appendN(t, s, prefix+"history", 10)
	}

	const writers, perWriter = 4, 25
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter)
	for w := range writers {
		wg.Go(func() {
			<-start
			for i := range perWriter {
				if _, err := s.Append(ctx, fmt.Sprintf("%sw%d", prefix, w), eventstore.Any, newEvent("Raced", i)); err != nil {
					errs <- err
				}
			}
		})
	}
	_, p := subscribe(t, ctx, s, eventstore.SubscribeAllOptions{StreamPrefixes: []string{prefix}})
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("racing append: %v", err)
	}
	sentinel := appendN(t, s, prefix+"sentinel", 1)[0]

	var got []eventstore.RecordedEvent
	for {
		ev := p.nextEvent(t)
		got = append(got, *ev)
		if ev.ID == sentinel.ID {
			break
		}
	}
	want := ownEvents(readAll(t, s, eventstore.ReadAllOptions{}), prefix)
	if len(want) != 100+writers*perWriter+1 {
		t.Fatalf("ReadAll has %d of our events, want %d", len(want), 100+writers*perWriter+1)
	}
	checkSameList(t, "subscription racing appends", got, want)

	// CaughtUp comes exactly once, wherever the race put it.
	if p.caughtUps == 0 {
		if extra := p.untilCaughtUp(t); len(extra) > 0 {
			t.Errorf("events after the sentinel, before CaughtUp: %v", recordIDs(extra))
		}
	}
	sentinel = appendN(t, s, prefix+"sentinel", 1)[0]
	if ev := p.nextEvent(t); ev.ID != sentinel.ID {
		t.Errorf("after the last sentinel got %v, want the new sentinel %v", ev.ID, sentinel.ID)
	}
	if p.caughtUps != 1 {
		t.Errorf("CaughtUp signalled %d times, want once", p.caughtUps)
	}
}

// testResumeFromLastProcessed: a consumer that stops and resubscribes from
// the last position it processed sees every event exactly once.
func testResumeFromLastProcessed(t *testing.T, s eventstore.Store) {
	prefix := newPrefix()
	for range 5 {
		appendN(t, s, prefix+"a", 1)
		appendN(t, s, prefix+"b", 1)
	}
	sub, p := subscribe(t, t.Context(), s, eventstore.SubscribeAllOptions{StreamPrefixes: []string{prefix}})
	processed := p.events(t, 4)
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	appendN(t, s, prefix+"c", 3)

	_, p2 := subscribe(t, t.Context(), s, eventstore.SubscribeAllOptions{From: processed[3].Position, StreamPrefixes: []string{prefix}})
	processed = append(processed, p2.untilCaughtUp(t)...)

	want := ownEvents(readAll(t, s, eventstore.ReadAllOptions{}), prefix)
	checkSameList(t, "before and after the restart", processed, want)
}

func testSubscriptionClose(t *testing.T, s eventstore.Store) {
	prefix := newPrefix()
	appendN(t, s, prefix+"x", 1)

	t.Run("Close while Recv waits", func(t *testing.T) {
		sub, p := subscribe(t, t.Context(), s, eventstore.SubscribeAllOptions{StreamPrefixes: []string{prefix}})
		p.untilCaughtUp(t) // the pump is now blocked in Recv
		if err := sub.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := p.err(t); !errors.Is(err, eventstore.ErrSubscriptionClosed) {
			t.Errorf("Recv after Close = %v, want ErrSubscriptionClosed", err)
		}
		if err := recvWithin(t, sub); !errors.Is(err, eventstore.ErrSubscriptionClosed) {
			t.Errorf("Recv again = %v, want ErrSubscriptionClosed", err)
		}
		sub.Close() // a second Close must not panic
	})
	t.Run("context ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		_, p := subscribe(t, ctx, s, eventstore.SubscribeAllOptions{StreamPrefixes: []string{prefix}})
		p.untilCaughtUp(t)
		cancel()
		if err := p.err(t); !errors.Is(err, eventstore.ErrSubscriptionClosed) {
			t.Errorf("Recv after the context ended = %v, want ErrSubscriptionClosed", err)
		}
	})
}

// ---- DeleteStream ----

func testDeleteStream(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	prefix := newPrefix()
	doomed, kept := prefix+"key-doomed", prefix+"key-kept"
	appendN(t, s, doomed, 2)
	keptRecs := appendN(t, s, kept, 1)

	err := s.DeleteStream(ctx, doomed, eventstore.Exact(0))
	checkConflict(t, err, doomed, eventstore.Exact(0), 2)
	if err := s.DeleteStream(ctx, doomed, eventstore.Exact(1)); err != nil {
		t.Fatalf("DeleteStream(Exact(1)) of a stream at revision 1 = %v", err)
	}

	for _, opts := range []eventstore.ReadStreamOptions{{}, {Direction: eventstore.Backwards, FromEnd: true}} {
		if _, err := s.ReadStream(ctx, doomed, opts); !errors.Is(err, eventstore.ErrStreamDeleted) {
			t.Errorf("ReadStream(%+v) of a deleted stream = %v, want ErrStreamDeleted", opts, err)
		}
	}
	for _, exp := range []eventstore.ExpectedRevision{eventstore.Any, eventstore.NoStream, eventstore.Exact(1)} {
		if _, err := s.Append(ctx, doomed, exp, newEvent("Again", 0)); !errors.Is(err, eventstore.ErrStreamDeleted) {
			t.Errorf("Append(%v) to a deleted stream = %v, want ErrStreamDeleted", exp, err)
		}
	}
	if err := s.DeleteStream(ctx, doomed, eventstore.Any); !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Errorf("DeleteStream of a deleted stream = %v, want ErrStreamDeleted", err)
	}
	// Other streams are untouched.
	if got := readStream(t, s, kept, eventstore.ReadStreamOptions{}); !slices.Equal(recordIDs(got), recordIDs(keptRecs)) {
		t.Errorf("the other stream holds %v, want %v", recordIDs(got), recordIDs(keptRecs))
	}

	// A stream that never existed can be deleted too, so it never will.
	never := prefix + "never"
	if err := s.DeleteStream(ctx, never, eventstore.Any); err != nil {
		t.Fatalf("DeleteStream(Any) of a stream never written = %v", err)
	}
	if _, err := s.Append(ctx, never, eventstore.Any, newEvent("Late", 0)); !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Errorf("Append to a deleted, never written stream = %v, want ErrStreamDeleted", err)
	}
}

// testDeleteStreamHidesEventsFromAll: deleted events are gone from the
// global log too (a shredded key must not come back through $all).
func testDeleteStreamHidesEvents(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	prefix := newPrefix()
	doomed, kept := prefix+"key-doomed", prefix+"key-kept"
	appendN(t, s, doomed, 1)
	want := appendN(t, s, kept, 1)
	appendN(t, s, doomed, 1)

	_, live := subscribe(t, ctx, s, eventstore.SubscribeAllOptions{From: eventstore.Start, StreamPrefixes: []string{prefix + "key-kept"}})
	live.untilCaughtUp(t)
	if err := s.DeleteStream(ctx, doomed, eventstore.Any); err != nil {
		t.Fatal(err)
	}

	for _, dir := range []eventstore.Direction{eventstore.Forwards, eventstore.Backwards} {
		from := eventstore.Start
		if dir == eventstore.Backwards {
			from = eventstore.End
		}
		if got := ownEvents(readAll(t, s, eventstore.ReadAllOptions{Direction: dir, From: from}), prefix); !slices.Equal(recordIDs(got), recordIDs(want)) {
			t.Errorf("ReadAll(direction %d) after the delete: %v, want only the kept stream's %v", dir, recordIDs(got), recordIDs(want))
		}
	}
	_, p := subscribe(t, ctx, s, eventstore.SubscribeAllOptions{StreamPrefixes: []string{prefix}})
	checkSameList(t, "subscription after the delete", p.untilCaughtUp(t), want)

	// Positions keep increasing past the deleted events.
	next := appendN(t, s, kept, 1)
	if next[0].Position.Compare(want[0].Position) <= 0 {
		t.Errorf("event appended after the delete at %v, not after %v", next[0].Position, want[0].Position)
	}
	checkSameList(t, "live after the delete", p.events(t, 1), next)
	checkSameList(t, "live subscription opened before the delete", live.events(t, 1), next)
}

// ---- Helpers ----

// newPrefix returns a stream name prefix no other test uses.
func newPrefix() string {
	return "st" + strings.ReplaceAll(uuid.NewString(), "-", "")[:16] + "_"
}

func newEvent(typ string, i int) eventstore.EventData {
	return eventstore.EventData{
		ID:       uuid.New(),
		Type:     typ,
		Data:     fmt.Appendf(nil, `{"n":%d}`, i),
		Metadata: fmt.Appendf(nil, `{"seq":%d}`, i),
	}
}

func newEvents(typ string, n int) []eventstore.EventData {
	evs := make([]eventstore.EventData, n)
	for i := range evs {
		evs[i] = newEvent(typ, i)
	}
	return evs
}

// appendN appends n new events to stream in one append (with Any, whatever
// the stream holds) and returns them as recorded. n == 0 appends nothing.
func appendN(t *testing.T, s eventstore.Store, stream string, n int) []eventstore.RecordedEvent {
	t.Helper()
	if n == 0 {
		return nil
	}
	res, err := s.Append(t.Context(), stream, eventstore.Any, newEvents("Filler", n)...)
	if err != nil {
		t.Fatalf("Append(%q, %d events): %v", stream, n, err)
	}
	return readStream(t, s, stream, eventstore.ReadStreamOptions{From: res.NextExpectedRevision + 1 - uint64(n)})
}

func readStream(t *testing.T, s eventstore.Store, stream string, opts eventstore.ReadStreamOptions) []eventstore.RecordedEvent {
	t.Helper()
	recs, err := s.ReadStream(t.Context(), stream, opts)
	if err != nil {
		t.Fatalf("ReadStream(%q, %+v): %v", stream, opts, err)
	}
	return recs
}

func readAll(t *testing.T, s eventstore.Store, opts eventstore.ReadAllOptions) []eventstore.RecordedEvent {
	t.Helper()
	recs, err := s.ReadAll(t.Context(), opts)
	if err != nil {
		t.Fatalf("ReadAll(%+v): %v", opts, err)
	}
	return recs
}

// ownEvents keeps the events of the streams a test wrote.
func ownEvents(recs []eventstore.RecordedEvent, prefix string) []eventstore.RecordedEvent {
	var own []eventstore.RecordedEvent
	for _, rec := range recs {
		if strings.HasPrefix(rec.StreamID, prefix) {
			own = append(own, rec)
		}
	}
	return own
}

func recordIDs(recs []eventstore.RecordedEvent) []uuid.UUID {
	ids := make([]uuid.UUID, len(recs))
	for i, rec := range recs {
		ids[i] = rec.ID
	}
	return ids
}

func eventIDs(evs []eventstore.EventData) []uuid.UUID {
	ids := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	return ids
}

func reversed[T any](s []T) []T {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

// checkRecorded compares a recorded event with what was appended.
func checkRecorded(t *testing.T, got eventstore.RecordedEvent, stream string, rev uint64, want eventstore.EventData) {
	t.Helper()
	if got.ID != want.ID || got.Type != want.Type || got.StreamID != stream || got.Revision != rev {
		t.Errorf("recorded %v %q in %q@%d, want %v %q in %q@%d", got.ID, got.Type, got.StreamID, got.Revision, want.ID, want.Type, stream, rev)
	}
	if !bytes.Equal(got.Data, want.Data) {
		t.Errorf("event %v data %q, want %q", got.ID, got.Data, want.Data)
	}
	if !bytes.Equal(got.Metadata, want.Metadata) {
		t.Errorf("event %v metadata %q, want %q", got.ID, got.Metadata, want.Metadata)
	}
	if got.Created.IsZero() {
		t.Errorf("event %v has no Created time", got.ID)
	}
}

// checkSame compares one event read two ways.
func checkSame(t *testing.T, got, want eventstore.RecordedEvent) {
	t.Helper()
	if got.ID != want.ID || got.Type != want.Type || got.StreamID != want.StreamID ||
		got.Revision != want.Revision || got.Position != want.Position || !got.Created.Equal(want.Created) ||
		!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Metadata, want.Metadata) {
		t.Errorf("event read two ways differs:\n got  %s\n want %s", describe(got), describe(want))
	}
}

func checkSameList(t *testing.T, what string, got, want []eventstore.RecordedEvent) {
	t.Helper()
	if !slices.Equal(recordIDs(got), recordIDs(want)) {
		t.Fatalf("%s: events %v, want exactly %v", what, recordIDs(got), recordIDs(want))
	}
	for i := range got {
		checkSame(t, got[i], want[i])
	}
}

func describe(r eventstore.RecordedEvent) string {
	return fmt.Sprintf("%v %q %q@%d at %v created %v data %q metadata %q",
		r.ID, r.Type, r.StreamID, r.Revision, r.Position, r.Created, r.Data, r.Metadata)
}

// pump turns a subscription's blocking Recv into a channel, so that the
// test can wait for a message with a timeout.
type pump struct {
	msgs      chan received
	caughtUps int // CaughtUp messages consumed so far
}

type received struct {
	m   eventstore.SubscriptionMessage
	err error
}

// subscribe opens a subscription that is closed when the test ends.
func subscribe(t *testing.T, ctx context.Context, s eventstore.Store, opts eventstore.SubscribeAllOptions) (eventstore.Subscription, *pump) {
	t.Helper()
	sub, err := s.SubscribeAll(ctx, opts)
	if err != nil {
		t.Fatalf("SubscribeAll(%+v): %v", opts, err)
	}
	p := &pump{msgs: make(chan received)}
	stop := make(chan struct{})
	go func() {
		for {
			m, err := sub.Recv()
			select {
			case p.msgs <- received{m, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		sub.Close()
		close(stop)
	})
	return sub, p
}

func (p *pump) next(t *testing.T) (eventstore.SubscriptionMessage, error) {
	t.Helper()
	select {
	case r := <-p.msgs:
		if r.err == nil && r.m.CaughtUp {
			p.caughtUps++
		}
		return r.m, r.err
	case <-time.After(waitTimeout):
		t.Fatalf("no subscription message within %v", waitTimeout)
		return eventstore.SubscriptionMessage{}, nil
	}
}

// nextEvent returns the next event, passing over checkpoints and CaughtUp.
func (p *pump) nextEvent(t *testing.T) *eventstore.RecordedEvent {
	t.Helper()
	for {
		m, err := p.next(t)
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if m.Event != nil {
			return m.Event
		}
	}
}

// events returns the next n events.
func (p *pump) events(t *testing.T, n int) []eventstore.RecordedEvent {
	t.Helper()
	var evs []eventstore.RecordedEvent
	for len(evs) < n {
		evs = append(evs, *p.nextEvent(t))
	}
	return evs
}

// untilCaughtUp returns the events before the CaughtUp signal.
func (p *pump) untilCaughtUp(t *testing.T) []eventstore.RecordedEvent {
	t.Helper()
	var evs []eventstore.RecordedEvent
	for {
		m, err := p.next(t)
		switch {
		case err != nil:
			t.Fatalf("Recv before CaughtUp: %v", err)
		case m.CaughtUp:
			return evs
		case m.Event != nil:
			evs = append(evs, *m.Event)
		}
	}
}

// err waits for the error that ends the subscription.
func (p *pump) err(t *testing.T) error {
	t.Helper()
	for {
		if _, err := p.next(t); err != nil {
			return err
		}
	}
}

// recvWithin calls Recv on a subscription the test has no pump for (or no
// longer uses) and returns its error, failing if it blocks.
func recvWithin(t *testing.T, sub eventstore.Subscription) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := sub.Recv()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(waitTimeout):
		t.Fatalf("Recv did not return within %v", waitTimeout)
		return nil
	}
}
