package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/bbolt"

	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/storetest"
)

func openTemp(t testing.TB, opts ...Option) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	s, err := Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventstore.Store {
		s, _ := openTemp(t)
		return s
	})
}

func event(data string) eventstore.EventData {
	return eventstore.EventData{ID: uuid.New(), Type: "Test", Data: []byte(data), Metadata: []byte(`{"m":1}`)}
}

func mustAppend(t testing.TB, s *Store, stream string, exp eventstore.ExpectedRevision, evs ...eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), stream, exp, evs...)
	if err != nil {
		t.Fatalf("Append(%q): %v", stream, err)
	}
	return res
}

// TestReopen: everything committed is there after Close and Open again, and
// the store goes on where it stopped.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	mustAppend(t, s, "a", eventstore.NoStream, event(`{"i":0}`), event(`{"i":1}`))
	retry := []eventstore.EventData{event(`{"i":2}`)}
	first := mustAppend(t, s, "a", eventstore.Exact(1), retry...)
	mustAppend(t, s, "b", eventstore.NoStream, event(`{"i":3}`))
	mustAppend(t, s, "gone", eventstore.NoStream, event(`{"i":4}`))
	if err := s.DeleteStream(ctx, "gone", eventstore.Any); err != nil {
		t.Fatal(err)
	}
	beforeA, _ := s.ReadStream(ctx, "a", eventstore.ReadStreamOptions{})
	beforeAll, _ := s.ReadAll(ctx, eventstore.ReadAllOptions{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	afterA, err := s2.ReadStream(ctx, "a", eventstore.ReadStreamOptions{})
	if err != nil || !reflect.DeepEqual(afterA, beforeA) {
		t.Errorf("after reopening, stream a = %v, %v; want %v", afterA, err, beforeA)
	}
	afterAll, err := s2.ReadAll(ctx, eventstore.ReadAllOptions{})
	if err != nil || !reflect.DeepEqual(afterAll, beforeAll) {
		t.Errorf("after reopening, $all = %v, %v; want %v", afterAll, err, beforeAll)
	}
	if _, err := s2.ReadStream(ctx, "gone", eventstore.ReadStreamOptions{}); !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Errorf("deleted stream after reopening: %v, want ErrStreamDeleted", err)
	}
	if again := mustAppend(t, s2, "a", eventstore.Exact(1), retry...); again != first {
		t.Errorf("retry after reopening answered %+v, want %+v", again, first)
	}
	next := mustAppend(t, s2, "a", eventstore.Exact(2), event(`{"i":5}`))
	if next.NextExpectedRevision != 3 {
		t.Errorf("next revision after reopening = %d, want 3", next.NextExpectedRevision)
	}
	// The deleted stream's event had sequence 5: numbers are never reused.
	if next.Position.Commit != 6 {
		t.Errorf("next position after reopening = %v, want sequence 6", next.Position)
	}
}

func TestFileMode(t *testing.T) {
	_, path := openTemp(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("store file mode %v, want no access for group and others", fi.Mode().Perm())
	}
}

// TestGroupCommit: appends that wait while a batch is being written share the
// next commit. The first batch is held until all the others are waiting, so
// the outcome does not depend on scheduling.
func TestGroupCommit(t *testing.T) {
	s, _ := openTemp(t)
	const n = 50
	release := make(chan struct{})
	var batches atomic.Int32
	s.beforeBatch = func(int) {
		if batches.Add(1) == 1 {
			<-release
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	wg.Go(func() { _, errs[0] = s.Append(context.Background(), "s0", eventstore.Any, event(`{}`)) })
	waitFor(t, func() bool { return batches.Load() == 1 })
	for i := 1; i < n; i++ {
		wg.Go(func() { _, errs[i] = s.Append(context.Background(), fmt.Sprint("s", i), eventstore.Any, event(`{}`)) })
	}
	waitFor(t, func() bool { return s.queued.Load() == n-1 })
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("append %d: %v", i, err)
		}
	}
	st := s.Stats()
	if st.Appends != n || st.Events != n {
		t.Errorf("Stats = %+v, want %d appends and events", st, n)
	}
	if st.Commits >= n {
		t.Errorf("%d concurrent appends took %d commits, want fewer", n, st.Commits)
	}
	t.Logf("%d appends in %d commits", st.Appends, st.Commits)
}

// TestBatchIsolation: in one batch, a failing append leaves no trace and the
// others see the writes of those before them. The batch is handed to
// commitBatch directly, so its order is the test's.
func TestBatchIsolation(t *testing.T) {
	s, _ := openTemp(t)
	mustAppend(t, s, "x", eventstore.NoStream, event(`{}`))
	dup := event(`{"dup":true}`)
	req := func(exp eventstore.ExpectedRevision, e eventstore.EventData) *appendReq {
		return &appendReq{ctx: context.Background(), stream: "x", expected: exp, events: []eventstore.EventData{e}, done: make(chan appendReply, 1)}
	}
	batch := []*appendReq{
		req(eventstore.Exact(0), dup),
		req(eventstore.Exact(0), event(`{}`)), // stale after the first
		req(eventstore.Exact(0), dup),         // a retry of the first
		req(eventstore.Exact(1), event(`{}`)),
	}
	s.commitBatch(batch)
	var replies []appendReply
	for _, r := range batch {
		replies = append(replies, <-r.done)
	}

	if replies[0].err != nil || replies[0].res.NextExpectedRevision != 1 {
		t.Errorf("first append: %+v, want revision 1", replies[0])
	}
	if !errors.Is(replies[1].err, eventstore.ErrConflict) {
		t.Errorf("stale append in the same batch: %v, want a conflict", replies[1].err)
	}
	if replies[2].err != nil || replies[2].res != replies[0].res {
		t.Errorf("retry in the same batch: %+v, want %+v", replies[2], replies[0])
	}
	if replies[3].err != nil || replies[3].res.NextExpectedRevision != 2 {
		t.Errorf("append after the first: %+v, want revision 2", replies[3])
	}
	if recs, _ := s.ReadStream(context.Background(), "x", eventstore.ReadStreamOptions{}); len(recs) != 3 {
		t.Errorf("stream holds %d events, want 3", len(recs))
	}
	if st := s.Stats(); st.Commits != 2 { // the first event, then the batch
		t.Errorf("Stats = %+v, want 2 commits", st)
	}
}

// TestPartialRetryConflicts: an append whose IDs were only partly appended
// before is not a retry; writing it would duplicate events.
func TestPartialRetryConflicts(t *testing.T) {
	s, _ := openTemp(t)
	a, b, c := event(`{"a":1}`), event(`{"b":1}`), event(`{"c":1}`)
	mustAppend(t, s, "p", eventstore.NoStream, a, b)
	mustAppend(t, s, "p", eventstore.Exact(1), c)
	cases := map[string][]eventstore.EventData{
		"first known, then new":  {a, event(`{}`)},
		"new, then known":        {event(`{}`), b},
		"known, out of order":    {b, a},
		"known, not consecutive": {a, c},
	}
	for name, evs := range cases {
		if _, err := s.Append(context.Background(), "p", eventstore.Any, evs...); !errors.Is(err, eventstore.ErrConflict) {
			t.Errorf("%s: %v, want ErrConflict", name, err)
		}
	}
	if recs, _ := s.ReadStream(context.Background(), "p", eventstore.ReadStreamOptions{}); len(recs) != 3 {
		t.Errorf("stream holds %d events, want 3", len(recs))
	}
}

func TestInvalidAppends(t *testing.T) {
	s, _ := openTemp(t)
	e := event(`{}`)
	cases := map[string]struct {
		stream string
		evs    []eventstore.EventData
	}{
		"empty stream name":    {"", []eventstore.EventData{e}},
		"stream name too long": {string(make([]byte, MaxStreamNameLen+1)), []eventstore.EventData{e}},
		"nil event ID":         {"s", []eventstore.EventData{{Type: "T"}}},
		"repeated event ID":    {"s", []eventstore.EventData{e, e}},
	}
	for name, c := range cases {
		if _, err := s.Append(context.Background(), c.stream, eventstore.Any, c.evs...); err == nil {
			t.Errorf("%s: appended, want an error", name)
		}
	}
	if st := s.Stats(); st.Appends != 0 {
		t.Errorf("invalid appends reached the writer: %+v", st)
	}
}

// TestContextEndsWhileQueued: an append whose context ends before the
// writer takes it returns the context's error and writes nothing.
func TestContextEndsWhileQueued(t *testing.T) {
	s, _ := openTemp(t)
	release := make(chan struct{})
	var batches atomic.Int32
	s.beforeBatch = func(int) {
		if batches.Add(1) == 1 {
			<-release
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.Append(context.Background(), "first", eventstore.Any, event(`{}`)) })
	waitFor(t, func() bool { return batches.Load() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, "cancelled", eventstore.Any, event(`{}`))
		errc <- err
	}()
	waitFor(t, func() bool { return s.queued.Load() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("append cancelled while queued: %v, want context.Canceled", err)
	}
	close(release)
	wg.Wait()
	if _, err := s.ReadStream(context.Background(), "cancelled", eventstore.ReadStreamOptions{}); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("cancelled append was written: ReadStream = %v", err)
	}
}

// TestClose: appends waiting for the writer fail, the batch being written
// completes, subscriptions end, and every method fails afterwards.
func TestClose(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	sub, err := s.SubscribeAll(ctx, eventstore.SubscribeAllOptions{})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var batches atomic.Int32
	s.beforeBatch = func(int) {
		if batches.Add(1) == 1 {
			<-release
		}
	}
	inBatch := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, "in-batch", eventstore.Any, event(`{}`))
		inBatch <- err
	}()
	waitFor(t, func() bool { return batches.Load() == 1 })
	queued := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, "queued", eventstore.Any, event(`{}`))
		queued <- err
	}()
	waitFor(t, func() bool { return s.queued.Load() == 1 })

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	if err := <-queued; !errors.Is(err, ErrClosed) {
		t.Errorf("append queued at Close: %v, want ErrClosed", err)
	}
	close(release)
	if err := <-inBatch; err != nil {
		t.Errorf("append in the batch being written at Close: %v, want success", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}

	for {
		_, err := sub.Recv()
		if err != nil {
			if !errors.Is(err, eventstore.ErrSubscriptionClosed) {
				t.Errorf("Recv after the store closed: %v, want ErrSubscriptionClosed", err)
			}
			break
		}
	}
	if _, err := s.Append(ctx, "late", eventstore.Any, event(`{}`)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if _, err := s.ReadStream(ctx, "in-batch", eventstore.ReadStreamOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadStream after Close: %v, want ErrClosed", err)
	}
	if _, err := s.ReadAll(ctx, eventstore.ReadAllOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadAll after Close: %v, want ErrClosed", err)
	}
	if _, err := s.SubscribeAll(ctx, eventstore.SubscribeAllOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("SubscribeAll after Close: %v, want ErrClosed", err)
	}
	if err := s.DeleteStream(ctx, "in-batch", eventstore.Any); !errors.Is(err, ErrClosed) {
		t.Errorf("DeleteStream after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestDeleteRemovesData: after DeleteStream no live key or value in the
// file holds the stream's data or its event IDs (crypto-shredding).
func TestDeleteRemovesData(t *testing.T) {
	s, _ := openTemp(t)
	secret := []byte("wrapped-key-7f3a9c")
	key := event(`{"key":"` + string(secret) + `"}`)
	mustAppend(t, s, "key-1", eventstore.NoStream, key, event(`{"rotated":true}`))
	mustAppend(t, s, "other", eventstore.NoStream, event(`{}`))
	if err := s.DeleteStream(context.Background(), "key-1", eventstore.Exact(1)); err != nil {
		t.Fatal(err)
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if bytes.Contains(v, secret) || bytes.Contains(k, key.ID[:]) {
					t.Errorf("bucket %s still holds the deleted event under key %x", name, k)
				}
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitFor polls a condition that the test has made inevitable; the timeout
// only turns a bug into a failure instead of a hang.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkAppend measures appends of one event each, every append fsync'd:
// one writer, then 16 and 64 concurrent writers sharing commits, then 16
// concurrent writers with group commit disabled for comparison.
//
//	go test -run '^$' -bench Append ./eventstore/bolt/
func BenchmarkAppend(b *testing.B) {
	data := []byte(`{"secretId":"0f8fad5b-d9cb-469f-a165-70867728950e","name":"billing api","url":"https://api.example.com"}`)
	run := func(b *testing.B, writers int, opts ...Option) {
		s, _ := openTemp(b, opts...)
		ctx := context.Background()
		var next atomic.Int64
		b.ResetTimer()
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				stream := fmt.Sprint("bench-", w)
				for next.Add(1) <= int64(b.N) {
					e := eventstore.EventData{ID: uuid.New(), Type: "SecretUsed", Data: data}
					if _, err := s.Append(ctx, stream, eventstore.Any, e); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		st := s.Stats()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		b.ReportMetric(float64(st.Appends)/float64(max(st.Commits, 1)), "appends/commit")
	}
	b.Run("sequential", func(b *testing.B) { run(b, 1) })
	b.Run("concurrent16", func(b *testing.B) { run(b, 16) })
	b.Run("concurrent64", func(b *testing.B) { run(b, 64) })
	b.Run("concurrent16-nogroup", func(b *testing.B) { run(b, 16, WithMaxBatch(1)) })
}
