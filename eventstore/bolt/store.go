// Package bolt is mysafe's embedded default event store: one bbolt file,
// fsync'd on every commit, implementing eventstore.Store.
//
// Appends go through a single writer goroutine that groups whatever appends
// are waiting into one read-write transaction, so concurrent writers share one
// fsync without any fixed batching delay (bbolt's own DB.Batch waits up to
// 10 ms for company, which halves the throughput of 16 concurrent writers
// compared with one sequential writer). Before it commits, the writer lets
// the goroutines ready to run have their turn: under load some of them are
// about to append, and a commit that takes them too costs one fsync instead
// of several (mysafe bench: 4.5 appends per commit became 16 under the share
// commands, +15% commands/s); idle, that turn is instant.
//
// bbolt maps the file into memory; the store drops the mapped pages again
// whenever the process holds more file-backed memory than a budget
// (WithMappedBudget), so that reading a large log does not leave it all
// resident.
//
// File layout (every number in a key is big-endian, so byte order is numeric
// order):
//
//	log    seq                  → record (stream, revision, event ID, type, created, data, metadata)
//	heads  stream               → flags and last revision
//	revs   streamKey + revision → seq
//	ids    streamKey + event ID → revision (for idempotent retries)
//
// seq is the global sequence number, 1-based and never reused; the position
// of an event is Position{Commit: seq, Prepare: seq}. Deleting a stream
// removes its records from every bucket, so readers simply skip those
// sequence numbers. streamKey is the stream name prefixed with its length, so
// no stream's keys are a prefix range of another's.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/mysafe/mysafe/eventstore"
)

// ErrClosed is returned by every method called after Close, and by appends
// still waiting for the writer when Close is called. It matches
// eventstore.ErrUnavailable: during a shutdown, the caller should see the
// store as unavailable.
var ErrClosed = fmt.Errorf("%w: bolt store closed", eventstore.ErrUnavailable)

// MaxStreamNameLen bounds stream names. Names are part of bbolt keys, which
// may not exceed 32 KiB, and short keys keep pages dense.
const MaxStreamNameLen = 1024

var (
	bucketLog   = []byte("log")
	bucketHeads = []byte("heads")
	bucketRevs  = []byte("revs")
	bucketIDs   = []byte("ids")
)

const (
	defaultMaxBatch = 512
	// subscriptionChunk bounds how many log records a subscription reads in
	// one read-only transaction, so that a long catch-up does not pin old
	// pages (and the file's growth) for its whole duration.
	subscriptionChunk = 512
)

// Option configures Open.
type Option func(*options)

type options struct {
	maxBatch     int
	openTimeout  time.Duration
	mappedBudget int64
}

// WithMappedBudget bounds the file-backed memory resident in the process
// (default 64 MiB; 0 means no bound): past it, the store drops the log's
// pages from its memory map. bbolt maps the whole file, and reads would
// otherwise leave every page they touched resident, a catch-up all of them
// (see release_linux.go). Linux only; elsewhere a no-op.
func WithMappedBudget(bytes int64) Option {
	return func(o *options) { o.mappedBudget = bytes }
}

// WithMaxBatch bounds how many appends share one transaction (default 512).
// 1 disables group commit, which is only useful to measure it.
func WithMaxBatch(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxBatch = n
		}
	}
}

// WithOpenTimeout bounds how long Open waits for the file lock held by
// another process (default 1s); without it a second `mysafe serve` on the
// same file would hang instead of failing.
func WithOpenTimeout(d time.Duration) Option {
	return func(o *options) { o.openTimeout = d }
}

// Stats counts the writer's work since Open.
type Stats struct {
	// Commits is the number of write transactions committed (one fsync each).
	Commits uint64
	// Appends is the number of Append calls answered by the writer,
	// whatever their outcome.
	Appends uint64
	// Events is the number of events written.
	Events uint64
}

// Store is the bbolt event store. It is safe for concurrent use.
type Store struct {
	db       *bbolt.DB
	maxBatch int

	// reqs is unbuffered: appends waiting to be taken by the writer are the
	// goroutines blocked sending on it, so an append whose context ends while
	// it waits simply stops waiting, and nothing can be left in a buffer
	// when the writer exits.
	reqs        chan *appendReq
	closing     chan struct{}
	writerDone  chan struct{}
	releaseDone chan struct{}
	// reads counts the records read since the memory was last checked:
	// random reads map pages fast, so a check is due every
	// releaseCheckRecords besides every releaseCheckEvery.
	reads       atomic.Int64
	checkMemory chan struct{}
	closeOnce   sync.Once
	closeErr    error

	// notify is closed and replaced after every commit that wrote events;
	// subscriptions waiting for new events wait on it.
	mu     sync.Mutex
	notify chan struct{}

	commits, appends, events atomic.Uint64
	// queued counts appends waiting for the writer; tests use it to know
	// that a batch will find them.
	queued atomic.Int64

	// beforeBatch, when set by tests, runs in the writer before each batch.
	beforeBatch func(n int)
}

var _ eventstore.Store = (*Store)(nil)

// Open opens or creates the store file at path (mode 0600) and starts its
// writer. Call Close to release the file.
func Open(path string, opts ...Option) (*Store, error) {
	o := options{maxBatch: defaultMaxBatch, openTimeout: time.Second, mappedBudget: 64 << 20}
	for _, opt := range opts {
		opt(&o)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: o.openTimeout})
	if err != nil {
		return nil, fmt.Errorf("open event store %q: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketLog, bucketHeads, bucketRevs, bucketIDs} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open event store %q: %w", path, err)
	}
	s := &Store{
		db:          db,
		maxBatch:    o.maxBatch,
		reqs:        make(chan *appendReq),
		closing:     make(chan struct{}),
		writerDone:  make(chan struct{}),
		releaseDone: make(chan struct{}),
		checkMemory: make(chan struct{}, 1),
		notify:      make(chan struct{}),
	}
	go s.writeLoop()
	go s.releaseLoop(o.mappedBudget)
	return s, nil
}

// releaseLoop checks, every releaseCheckEvery and every
// releaseCheckRecords records read until Close, how much file-backed memory
// the process holds, and drops the log's mapped pages when it is over
// budget. Checking is one small read of /proc; releasing costs the page
// faults that map hot pages again, so it happens only when needed (with the
// file bigger than the budget and read at random).
func (s *Store) releaseLoop(budget int64) {
	defer close(s.releaseDone)
	if budget <= 0 {
		return
	}
	t := time.NewTicker(releaseCheckEvery)
	defer t.Stop()
	var released time.Time
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
		case <-s.checkMemory:
		}
		if time.Since(released) < releaseAtMostEvery {
			continue
		}
		// Only memory is at stake: a failure leaves the pages mapped.
		if mapped, err := residentFileBytes(); err == nil && mapped > budget {
			_ = releaseMappedPages(s.db)
			released = time.Now()
		}
	}
}

// Random reads of a big log map pages fast: the kernel maps the whole
// folio and up to 16 neighbouring pages in the page cache on each fault, so
// each record read at random can map 64 KiB. Hence a check every
// releaseCheckRecords (at most 32 MiB mapped in between), and every
// releaseCheckEvery for the rest.
// Releasing more often than releaseAtMostEvery would spend more on
// mapping the hot pages again than the memory is worth.
const (
	releaseCheckEvery   = 25 * time.Millisecond
	releaseCheckRecords = 512
	releaseAtMostEvery  = 25 * time.Millisecond
)

// countReads counts records read, and asks for a memory check once enough
// were.
func (s *Store) countReads(n int) {
	if s.reads.Add(int64(n)) < releaseCheckRecords {
		return
	}
	s.reads.Store(0)
	select {
	case s.checkMemory <- struct{}{}:
	default: // one is due already
	}
}

// Stats returns the writer's counters.
func (s *Store) Stats() Stats {
	return Stats{Commits: s.commits.Load(), Appends: s.appends.Load(), Events: s.events.Load()}
}

// Close stops the writer (appends still waiting for it fail with ErrClosed;
// a batch being committed completes), ends every subscription and closes the
// file. Calling Close again returns the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		<-s.writerDone
		<-s.releaseDone
		// bbolt's Close waits for open transactions, such as a subscription's
		// chunk read, to finish.
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// usable reports why an operation must not start.
func (s *Store) usable(ctx context.Context) error {
	select {
	case <-s.closing:
		return ErrClosed
	default:
	}
	return ctx.Err()
}

// view runs a read-only transaction, mapping a closed database to ErrClosed.
func (s *Store) view(fn func(*bbolt.Tx) error) error {
	return closedErr(s.db.View(fn))
}

func closedErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// changed returns a channel closed by the next commit that writes events.
// Take it before reading, so that a commit landing after the read cannot be
// missed.
func (s *Store) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notify
}

func (s *Store) broadcast() {
	s.mu.Lock()
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
}

// ---- Append and the writer ----

type appendReq struct {
	ctx      context.Context
	stream   string
	expected eventstore.ExpectedRevision
	events   []eventstore.EventData
	// done receives exactly one reply; buffered so the writer never waits
	// for the caller.
	done chan appendReply
}

type appendReply struct {
	res eventstore.AppendResult
	err error
}

// Append implements eventstore.Store. Its events are written, with the other
// appends waiting at the same moment, in one transaction and one fsync.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	if err := validateAppend(stream, events); err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := s.usable(ctx); err != nil {
		return eventstore.AppendResult{}, err
	}
	if len(events) == 0 {
		return s.appendNothing(stream, expected)
	}
	req := &appendReq{ctx: ctx, stream: stream, expected: expected, events: events, done: make(chan appendReply, 1)}
	s.queued.Add(1)
	select {
	case s.reqs <- req:
		s.queued.Add(-1)
	case <-ctx.Done():
		s.queued.Add(-1)
		return eventstore.AppendResult{}, ctx.Err()
	case <-s.closing:
		s.queued.Add(-1)
		return eventstore.AppendResult{}, ErrClosed
	}
	// The writer has the request and always answers it, even while closing.
	reply := <-req.done
	return reply.res, reply.err
}

func validateAppend(stream string, events []eventstore.EventData) error {
	if stream == "" {
		return errors.New("append: stream name is empty")
	}
	if len(stream) > MaxStreamNameLen {
		return fmt.Errorf("append to %.40q...: stream name is %d bytes, at most %d allowed", stream, len(stream), MaxStreamNameLen)
	}
	seen := make(map[uuid.UUID]struct{}, len(events))
	for i, e := range events {
		if e.ID == uuid.Nil {
			return fmt.Errorf("append to %q: event %d (%s) has the nil ID; every event needs its own ID", stream, i, e.Type)
		}
		// A repeated ID would make the event-ID index ambiguous, and with it
		// the answer to a retry.
		if _, dup := seen[e.ID]; dup {
			return fmt.Errorf("append to %q: event %d repeats ID %s; IDs must be unique", stream, i, e.ID)
		}
		seen[e.ID] = struct{}{}
	}
	return nil
}

// appendNothing checks the expected revision and reports the stream's state
// without writing, so it needs neither the writer nor an fsync.
func (s *Store) appendNothing(stream string, expected eventstore.ExpectedRevision) (eventstore.AppendResult, error) {
	var res eventstore.AppendResult
	err := s.view(func(tx *bbolt.Tx) error {
		h, err := loadHead(tx, stream)
		if err != nil {
			return err
		}
		if h.deleted {
			return fmt.Errorf("append to %q: %w", stream, eventstore.ErrStreamDeleted)
		}
		if !expected.Accepts(h.current()) {
			return &eventstore.ConflictError{Stream: stream, Expected: expected, Actual: h.current()}
		}
		if h.exists {
			res.NextExpectedRevision = h.last
			seq, err := seqOf(tx, streamKey(stream), h.last)
			if err != nil {
				return err
			}
			res.Position = position(seq)
		}
		return nil
	})
	return res, err
}

// writeLoop is the single writer. It takes one waiting append, then every
// other append already waiting (without waiting for more), and commits them
// together.
func (s *Store) writeLoop() {
	defer close(s.writerDone)
	batch := make([]*appendReq, 0, s.maxBatch)
	for {
		select {
		case <-s.closing:
			return
		case req := <-s.reqs:
			batch = append(batch[:0], req)
		}
		for yielded := false; ; yielded = true {
			n := len(batch)
		drain:
			for len(batch) < s.maxBatch {
				select {
				case req := <-s.reqs:
					batch = append(batch, req)
				default:
					break drain
				}
			}
			// Before committing, let every goroutine that is ready to run
			// have its turn once: under load some are about to append and
			// join this commit. Idle, Gosched returns at once, so a lone
			// append waits for nothing. Keep yielding while that brings
			// company.
			if len(batch) >= s.maxBatch || (yielded && len(batch) == n) {
				break
			}
			runtime.Gosched()
		}
		if s.beforeBatch != nil {
			s.beforeBatch(len(batch))
		}
		s.commitBatch(batch)
		clear(batch) // let the requests' events be collected
	}
}

// commitBatch applies each request in order in one transaction, commits once
// and answers every request. Each request is validated before it writes, so
// a request that fails leaves no trace and does not affect the others.
func (s *Store) commitBatch(batch []*appendReq) {
	replies := make([]appendReply, len(batch))
	wrote := 0
	err := func() error {
		tx, err := s.db.Begin(true)
		if err != nil {
			return closedErr(err)
		}
		defer tx.Rollback() // no-op after a successful Commit
		created := time.Now().UnixNano()
		for i, req := range batch {
			if err := req.ctx.Err(); err != nil {
				replies[i].err = err
				continue
			}
			res, write, err := checkAppend(tx, req)
			if err != nil || !write {
				replies[i] = appendReply{res: res, err: err}
				continue
			}
			// Errors from here on are the storage's, not the request's: the
			// transaction cannot be trusted, so the whole batch fails.
			if replies[i].res, err = writeAppend(tx, req, created); err != nil {
				return err
			}
			wrote += len(req.events)
		}
		if wrote == 0 {
			return nil // nothing to fsync; the deferred Rollback ends the tx
		}
		return tx.Commit()
	}()
	if err != nil {
		err = fmt.Errorf("append: commit to event store: %w", err)
		for i := range replies {
			replies[i] = appendReply{err: err}
		}
		wrote = 0
	}
	if wrote > 0 {
		s.commits.Add(1)
		s.events.Add(uint64(wrote))
		s.broadcast()
	}
	s.appends.Add(uint64(len(batch)))
	// Each append read its stream's head, index and IDs, three pages at
	// random.
	s.countReads(3 * len(batch))
	for i, req := range batch {
		req.done <- replies[i]
	}
}

// checkAppend decides, without writing, what an append does: answer an
// idempotent retry with the original result, fail, or write (write == true).
// It reads through tx, so it sees the writes of earlier requests of the
// same batch.
func checkAppend(tx *bbolt.Tx, req *appendReq) (res eventstore.AppendResult, write bool, err error) {
	h, err := loadHead(tx, req.stream)
	if err != nil {
		return res, false, err
	}
	if h.deleted {
		return res, false, fmt.Errorf("append to %q: %w", req.stream, eventstore.ErrStreamDeleted)
	}
	conflict := &eventstore.ConflictError{Stream: req.stream, Expected: req.expected, Actual: h.current()}

	// Idempotency: if every event ID is already in the stream, in the same
	// order and consecutively, this is a retry of an append that succeeded;
	// answer as it was answered, whatever the expected revision now says
	// (it is stale by construction). If only some are, it is not a retry of
	// one append, and writing would duplicate events.
	prefix := streamKey(req.stream)
	ids := tx.Bucket(bucketIDs)
	found := 0
	consecutive := true
	var first uint64
	for i, e := range req.events {
		v := ids.Get(idKey(prefix, e.ID))
		if v == nil {
			continue
		}
		rev := binary.BigEndian.Uint64(v)
		if i == 0 {
			first = rev
		}
		if found != i || rev != first+uint64(i) {
			consecutive = false
		}
		found++
	}
	switch {
	case found == len(req.events) && consecutive:
		last := first + uint64(len(req.events)) - 1
		seq, err := seqOf(tx, prefix, last)
		if err != nil {
			return res, false, err
		}
		return eventstore.AppendResult{NextExpectedRevision: last, Position: position(seq)}, false, nil
	case found > 0:
		return res, false, conflict
	}

	if !req.expected.Accepts(h.current()) {
		return res, false, conflict
	}
	return res, true, nil
}

// writeAppend writes an append that checkAppend accepted.
func writeAppend(tx *bbolt.Tx, req *appendReq, created int64) (eventstore.AppendResult, error) {
	h, err := loadHead(tx, req.stream)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	var rev uint64
	if h.exists {
		rev = h.last + 1
	}
	logB, revs, ids := tx.Bucket(bucketLog), tx.Bucket(bucketRevs), tx.Bucket(bucketIDs)
	// The log is append-only: full pages instead of half-full ones on split.
	logB.FillPercent = 1.0
	prefix := streamKey(req.stream)
	var seq uint64
	for i, e := range req.events {
		if seq, err = logB.NextSequence(); err != nil {
			return eventstore.AppendResult{}, err
		}
		r := rev + uint64(i)
		if err := logB.Put(u64(seq), encodeRecord(req.stream, r, e, created)); err != nil {
			return eventstore.AppendResult{}, err
		}
		if err := revs.Put(revKey(prefix, r), u64(seq)); err != nil {
			return eventstore.AppendResult{}, err
		}
		if err := ids.Put(idKey(prefix, e.ID), u64(r)); err != nil {
			return eventstore.AppendResult{}, err
		}
	}
	last := rev + uint64(len(req.events)) - 1
	if err := tx.Bucket(bucketHeads).Put([]byte(req.stream), head{exists: true, last: last}.encode()); err != nil {
		return eventstore.AppendResult{}, err
	}
	return eventstore.AppendResult{NextExpectedRevision: last, Position: position(seq)}, nil
}

// ---- DeleteStream ----

// DeleteStream implements eventstore.Store. It removes the stream's events
// from the file (crypto-shredding relies on it) and leaves a tombstone, so
// the stream can never be read or written again. Freed pages keep the old
// bytes until bbolt reuses them; only a compaction of the file rewrites
// them away.
func (s *Store) DeleteStream(ctx context.Context, stream string, expected eventstore.ExpectedRevision) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	// Deletes are rare and need no group commit; bbolt serializes this
	// transaction with the writer's, and the writer's checks run inside its
	// own transaction, so it sees the tombstone.
	err := s.db.Update(func(tx *bbolt.Tx) error {
		h, err := loadHead(tx, stream)
		if err != nil {
			return err
		}
		if h.deleted {
			return fmt.Errorf("delete %q: %w", stream, eventstore.ErrStreamDeleted)
		}
		if !expected.Accepts(h.current()) {
			return &eventstore.ConflictError{Stream: stream, Expected: expected, Actual: h.current()}
		}
		if h.exists {
			logB, revs, ids := tx.Bucket(bucketLog), tx.Bucket(bucketRevs), tx.Bucket(bucketIDs)
			prefix := streamKey(stream)
			for rev := uint64(0); rev <= h.last; rev++ {
				seq, err := seqOf(tx, prefix, rev)
				if err != nil {
					return err
				}
				rec, err := decodeRecord(seq, logB.Get(u64(seq)))
				if err != nil {
					return err
				}
				for _, del := range []struct {
					b *bbolt.Bucket
					k []byte
				}{{logB, u64(seq)}, {revs, revKey(prefix, rev)}, {ids, idKey(prefix, rec.ID)}} {
					if err := del.b.Delete(del.k); err != nil {
						return err
					}
				}
			}
		}
		return tx.Bucket(bucketHeads).Put([]byte(stream), head{deleted: true}.encode())
	})
	return closedErr(err)
}

// ---- Reads ----

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, opts eventstore.ReadStreamOptions) ([]eventstore.RecordedEvent, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	var out []eventstore.RecordedEvent
	err := s.view(func(tx *bbolt.Tx) error {
		h, err := loadHead(tx, stream)
		if err != nil {
			return err
		}
		if h.deleted {
			return fmt.Errorf("read %q: %w", stream, eventstore.ErrStreamDeleted)
		}
		if !h.exists {
			return fmt.Errorf("read %q: %w", stream, eventstore.ErrStreamNotFound)
		}
		// Revisions are contiguous from 0 to h.last, so the range to read is
		// known up front.
		backwards := opts.Direction == eventstore.Backwards
		var from, n uint64
		if backwards {
			from = h.last
			if !opts.FromEnd && opts.From < from {
				from = opts.From
			}
			n = from + 1
		} else {
			if opts.FromEnd || opts.From > h.last {
				return nil
			}
			from = opts.From
			n = h.last - from + 1
		}
		if opts.Max != 0 && opts.Max < n {
			n = opts.Max
		}
		out = make([]eventstore.RecordedEvent, 0, n)
		prefix := streamKey(stream)
		logB := tx.Bucket(bucketLog)
		// The stream's index entries are adjacent: one seek, then a step
		// per event, instead of a search from the root for each.
		revs := tx.Bucket(bucketRevs).Cursor()
		k, v := revs.Seek(revKey(prefix, from))
		for i := uint64(0); i < n; i++ {
			rev := from + i
			if backwards {
				rev = from - i
			}
			if i > 0 {
				if backwards {
					k, v = revs.Prev()
				} else {
					k, v = revs.Next()
				}
			}
			if len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) || binary.BigEndian.Uint64(k[len(prefix):]) != rev || len(v) != 8 {
				return fmt.Errorf("stream key %q revision %d: missing from the index", prefix, rev)
			}
			seq := binary.BigEndian.Uint64(v)
			rec, err := decodeRecord(seq, logB.Get(u64(seq)))
			if err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	s.countReads(len(out))
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReadAll implements eventstore.Store. Only Position.Commit is looked at.
func (s *Store) ReadAll(ctx context.Context, opts eventstore.ReadAllOptions) ([]eventstore.RecordedEvent, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	var out []eventstore.RecordedEvent
	err := s.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketLog).Cursor()
		full := func() bool { return opts.Max != 0 && uint64(len(out)) >= opts.Max }
		add := func(k, v []byte) error {
			rec, err := decodeRecord(binary.BigEndian.Uint64(k), v)
			out = append(out, rec)
			return err
		}
		if opts.Direction == eventstore.Backwards {
			// From is inclusive: start at the last event at or before it.
			k, v := c.Seek(u64(opts.From.Commit))
			if k == nil {
				k, v = c.Last()
			} else if binary.BigEndian.Uint64(k) > opts.From.Commit {
				k, v = c.Prev()
			}
			for ; k != nil && !full(); k, v = c.Prev() {
				if err := add(k, v); err != nil {
					return err
				}
			}
			return nil
		}
		for k, v := c.Seek(u64(opts.From.Commit)); k != nil && !full(); k, v = c.Next() {
			if err := add(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	s.countReads(len(out))
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ---- Subscriptions ----

// SubscribeAll implements eventstore.Store. The subscription reads the file
// itself, chunk by chunk, from its own position, both while catching up and
// when live; the writer only tells it that something was committed. So a
// slow subscriber never holds up appends, and the catch-up → live handover
// cannot skip or repeat an event. From == eventstore.End subscribes to new
// events only.
func (s *Store) SubscribeAll(ctx context.Context, opts eventstore.SubscribeAllOptions) (eventstore.Subscription, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	opts.StreamPrefixes = append([]string(nil), opts.StreamPrefixes...)
	sub := &subscription{s: s, ctx: ctx, opts: opts, pos: opts.From.Commit, done: make(chan struct{})}
	if opts.From == eventstore.End {
		err := s.view(func(tx *bbolt.Tx) error {
			sub.pos = tx.Bucket(bucketLog).Sequence()
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return sub, nil
}

type subscription struct {
	s    *Store
	ctx  context.Context
	opts eventstore.SubscribeAllOptions

	// Owned by Recv, which must not be called concurrently with itself.
	pos      uint64 // the last sequence number looked at
	caughtUp bool
	pending  []eventstore.SubscriptionMessage

	done      chan struct{}
	closeOnce sync.Once
}

// Recv implements eventstore.Subscription.
func (sub *subscription) Recv() (eventstore.SubscriptionMessage, error) {
	for {
		if err := sub.ended(); err != nil {
			return eventstore.SubscriptionMessage{}, err
		}
		if len(sub.pending) > 0 {
			m := sub.pending[0]
			sub.pending = sub.pending[1:]
			return m, nil
		}
		changed := sub.s.changed()
		events, last, err := sub.s.scanAfter(sub.pos, sub.opts)
		if err != nil {
			if endErr := sub.ended(); endErr != nil {
				return eventstore.SubscriptionMessage{}, endErr
			}
			return eventstore.SubscriptionMessage{}, fmt.Errorf("subscription: %w", err)
		}
		if last > sub.pos {
			sub.pos = last
			sub.pending = sub.pending[:0]
			for i := range events {
				sub.pending = append(sub.pending, eventstore.SubscriptionMessage{Event: &events[i]})
			}
			if len(events) == 0 {
				// A filter skipped a whole chunk: say how far we looked, so
				// a restart need not rescan it and, live, so that a reader
				// waiting for a position this subscription filters out is
				// not kept waiting for the next event it does deliver.
				sub.pending = append(sub.pending, sub.checkpoint())
			}
			continue
		}
		if !sub.caughtUp {
			sub.caughtUp = true
			sub.pending = append(sub.pending[:0], sub.checkpoint(), eventstore.SubscriptionMessage{CaughtUp: true})
			continue
		}
		select {
		case <-changed:
		case <-sub.done:
		case <-sub.ctx.Done():
		case <-sub.s.closing:
		}
	}
}

func (sub *subscription) checkpoint() eventstore.SubscriptionMessage {
	p := position(sub.pos)
	return eventstore.SubscriptionMessage{Checkpoint: &p}
}

func (sub *subscription) ended() error {
	select {
	case <-sub.done:
		return eventstore.ErrSubscriptionClosed
	case <-sub.ctx.Done():
		return eventstore.ErrSubscriptionClosed
	case <-sub.s.closing:
		return fmt.Errorf("%w: the store was closed", eventstore.ErrSubscriptionClosed)
	default:
		return nil
	}
}

// Close implements eventstore.Subscription. It may be called from any
// goroutine, also while Recv waits.
func (sub *subscription) Close() error {
	sub.closeOnce.Do(func() { close(sub.done) })
	return nil
}

// scanAfter looks at up to subscriptionChunk records after seq `after` in one
// read-only transaction and returns the ones passing the filter, and the last
// sequence number it looked at (after itself when there was nothing).
func (s *Store) scanAfter(after uint64, opts eventstore.SubscribeAllOptions) ([]eventstore.RecordedEvent, uint64, error) {
	var out []eventstore.RecordedEvent
	last := after
	err := s.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketLog).Cursor()
		k, v := c.Seek(u64(after))
		if k != nil && binary.BigEndian.Uint64(k) == after {
			k, v = c.Next() // From is exclusive
		}
		for n := 0; k != nil && n < subscriptionChunk; k, v = c.Next() {
			n++
			last = binary.BigEndian.Uint64(k)
			stream, err := recordStream(v)
			if err != nil {
				return fmt.Errorf("log record %d: %w", last, err)
			}
			if !opts.PassesFilter(stream) {
				continue
			}
			rec, err := decodeRecord(last, v)
			if err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	s.countReads(int(last - after))
	return out, last, err
}

// ---- Encoding ----

// head is a stream's entry in the heads bucket.
type head struct {
	exists  bool   // the stream has events (and is not deleted)
	deleted bool   // tombstoned
	last    uint64 // last revision, when exists
}

const headDeleted = 1

func (h head) encode() []byte {
	b := make([]byte, 9)
	if h.deleted {
		b[0] = headDeleted
	}
	binary.BigEndian.PutUint64(b[1:], h.last)
	return b
}

// current is the stream's last revision as ExpectedRevision.Accepts wants it.
func (h head) current() *uint64 {
	if !h.exists {
		return nil
	}
	last := h.last
	return &last
}

func loadHead(tx *bbolt.Tx, stream string) (head, error) {
	v := tx.Bucket(bucketHeads).Get([]byte(stream))
	switch {
	case v == nil:
		return head{}, nil
	case len(v) != 9:
		return head{}, fmt.Errorf("stream %q: corrupt head (%d bytes, want 9)", stream, len(v))
	case v[0]&headDeleted != 0:
		return head{deleted: true}, nil
	}
	return head{exists: true, last: binary.BigEndian.Uint64(v[1:])}, nil
}

// seqOf finds the global sequence number of a stream's revision.
func seqOf(tx *bbolt.Tx, prefix []byte, rev uint64) (uint64, error) {
	v := tx.Bucket(bucketRevs).Get(revKey(prefix, rev))
	if len(v) != 8 {
		return 0, fmt.Errorf("stream key %q revision %d: missing from the index", prefix, rev)
	}
	return binary.BigEndian.Uint64(v), nil
}

func position(seq uint64) eventstore.Position {
	return eventstore.Position{Commit: seq, Prepare: seq}
}

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func streamKey(stream string) []byte {
	b := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(stream)+16), uint64(len(stream)))
	return append(b, stream...)
}

// revKey and idKey copy prefix: bbolt keeps the key slices of a Put until
// the transaction ends.
func revKey(prefix []byte, rev uint64) []byte {
	return binary.BigEndian.AppendUint64(bytes.Clone(prefix), rev)
}

func idKey(prefix []byte, id uuid.UUID) []byte {
	return append(bytes.Clone(prefix), id[:]...)
}

// recordVersion starts every record so that the encoding can evolve.
const recordVersion = 1

// encodeRecord lays out a log record as
//
//	version(1) stream(uvarint len + bytes) revision(8) id(16) type(uvarint len + bytes)
//	created unix nanos(8) data(uvarint len + bytes) metadata(uvarint len + bytes)
//
// with the stream first, so that a subscription filters without decoding
// the rest.
func encodeRecord(stream string, rev uint64, e eventstore.EventData, created int64) []byte {
	b := make([]byte, 0, 1+4*binary.MaxVarintLen64+len(stream)+8+16+len(e.Type)+8+len(e.Data)+len(e.Metadata))
	b = append(b, recordVersion)
	b = appendField(b, []byte(stream))
	b = binary.BigEndian.AppendUint64(b, rev)
	b = append(b, e.ID[:]...)
	b = appendField(b, []byte(e.Type))
	b = binary.BigEndian.AppendUint64(b, uint64(created))
	b = appendField(b, e.Data)
	b = appendField(b, e.Metadata)
	return b
}

func appendField(b, field []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(field))), field...)
}

// decoder reads a record, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if uint64(len(d.b)) < n {
		d.err = errors.New("truncated record")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) field() []byte {
	if d.err != nil {
		return nil
	}
	n, w := binary.Uvarint(d.b)
	if w <= 0 {
		d.err = errors.New("bad field length")
		return nil
	}
	d.b = d.b[w:]
	return d.take(n)
}

func (d *decoder) uint64() uint64 {
	v := d.take(8)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (d *decoder) version() {
	if v := d.take(1); v != nil && v[0] != recordVersion {
		d.err = fmt.Errorf("record version %d, this build reads %d", v[0], recordVersion)
	}
}

func recordStream(b []byte) (string, error) {
	d := decoder{b: b}
	d.version()
	stream := d.field()
	return string(stream), d.err
}

// decodeRecord copies a record out of bbolt's memory, which is only valid
// while the transaction lasts.
func decodeRecord(seq uint64, b []byte) (eventstore.RecordedEvent, error) {
	if b == nil {
		return eventstore.RecordedEvent{}, fmt.Errorf("log record %d: missing", seq)
	}
	d := decoder{b: b}
	d.version()
	var rec eventstore.RecordedEvent
	rec.StreamID = string(d.field())
	rec.Revision = d.uint64()
	copy(rec.ID[:], d.take(16))
	rec.Type = string(d.field())
	rec.Created = time.Unix(0, int64(d.uint64())).UTC()
	rec.Data = cloneOrNil(d.field())
	rec.Metadata = cloneOrNil(d.field())
	rec.Position = position(seq)
	if d.err != nil {
		return eventstore.RecordedEvent{}, fmt.Errorf("log record %d: %w", seq, d.err)
	}
	return rec, nil
}

func cloneOrNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return bytes.Clone(b)
}
