package auditlog_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/auditlog"
	"github.com/mysafe/mysafe/eventstore/bolt"
)

var start = time.Date(2026, 3, 3, 14, 0, 0, 0, time.UTC)

// filled opens a bolt store in a temp dir with n generated events.
func filled(t *testing.T, n int) (eventstore.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	s, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := auditlog.Generate(context.Background(), s, n, 50, start); err != nil {
		t.Fatal(err)
	}
	return s, path
}

// pagedStore records the size of every read of the log.
type pagedStore struct {
	eventstore.Store
	reads []uint64
}

func (p *pagedStore) ReadAll(ctx context.Context, o eventstore.ReadAllOptions) ([]eventstore.RecordedEvent, error) {
	p.reads = append(p.reads, o.Max)
	return p.Store.ReadAll(ctx, o)
}

func TestExportStreamsTheLogInPages(t *testing.T) {
	const n = 3500
	s, _ := filled(t, n)
	for _, format := range []auditlog.Format{auditlog.CSV, auditlog.NDJSON} {
		t.Run(string(format), func(t *testing.T) {
			ps := &pagedStore{Store: s}
			var out bytes.Buffer
			var flushedAt []int // output size at each page
			written, err := auditlog.Export(context.Background(), ps, &out, format, auditlog.Filter{}, nil, func() { flushedAt = append(flushedAt, out.Len()) })
			if err != nil || written != n {
				t.Fatalf("Export = %d, %v; want %d events", written, err, n)
			}
			// Constant memory: the log is read a page at a time and each
			// page is written out before the next is read.
			if len(ps.reads) < n/auditlog.PageSize {
				t.Fatalf("%d reads of the log for %d events; want pages of %d", len(ps.reads), n, auditlog.PageSize)
			}
			for _, max := range ps.reads {
				if max == 0 || max > auditlog.PageSize+1 {
					t.Fatalf("a read of %d events (0 is unbounded); want at most a page", max)
				}
			}
			if len(flushedAt) < 3 || flushedAt[0] == 0 || flushedAt[0] >= out.Len() {
				t.Fatalf("output flushed at %v of %d bytes; want it written page by page", flushedAt, out.Len())
			}
			checkExport(t, format, out.Bytes(), n)
		})
	}
}

// checkExport parses an export and checks every row: spreadsheet-safe
// cells, a hash on each event, no secret value.
func checkExport(t *testing.T, format auditlog.Format, out []byte, n int) {
	t.Helper()
	if bytes.Contains(out, []byte("sealed")) || bytes.Contains(out, []byte("c2VhbGVk")) {
		t.Fatal("the export holds the sealed client secret")
	}
	switch format {
	case auditlog.CSV:
		rows, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != n+1 || rows[0][0] != "position" || rows[0][len(rows[0])-1] != "hash" {
			t.Fatalf("%d rows, header %v; want a header and %d rows", len(rows), rows[0], n)
		}
		names := 0
		for _, row := range rows[1:] {
			for _, cell := range row {
				if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
					t.Fatalf("cell %q would run as a formula", cell)
				}
			}
			if len(row[13]) != 64 {
				t.Fatalf("row %v has no hash", row)
			}
			if strings.Contains(row[12], `=Generated API`) {
				names++
			}
		}
		if names == 0 {
			t.Fatal("no secret name in the data column")
		}
	case auditlog.NDJSON:
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		lines := 0
		for sc.Scan() {
			var row auditlog.Row
			if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
				t.Fatalf("line %d does not parse: %v", lines+1, err)
			}
			if row.Hash == "" || row.Actor.ID == "" || row.At.IsZero() || row.Event == "" {
				t.Fatalf("line %d = %+v; want hash, actor, time, event", lines+1, row)
			}
			lines++
		}
		if lines != n {
			t.Fatalf("%d lines; want %d", lines, n)
		}
	}
}

func TestExportFilters(t *testing.T) {
	s, _ := filled(t, 300)
	count := func(f auditlog.Filter) uint64 {
		n, err := auditlog.Export(context.Background(), s, &bytes.Buffer{}, auditlog.NDJSON, f, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Generated events are one minute apart from start on.
	if n := count(auditlog.Filter{From: start.Add(100 * time.Minute), To: start.Add(109 * time.Minute)}); n != 10 {
		t.Errorf("ten minutes: %d events; want 10", n)
	}
	if n := count(auditlog.Filter{Types: []string{"SecretCreated"}}); n != 6 {
		t.Errorf("creations: %d; want 6 (one per stream of 50)", n)
	}
	if n := count(auditlog.Filter{To: start.Add(-time.Minute)}); n != 0 {
		t.Errorf("before the first event: %d", n)
	}
}

func TestNeutralize(t *testing.T) {
	for in, want := range map[string]string{"=1+1": "'=1+1", "+1": "'+1", "-1": "'-1", "@SUM(A1)": "'@SUM(A1)",
		"\tx": "'\tx", "\rx": "'\rx", "plain": "plain", "": "", "1-2": "1-2"} {
		if got := auditlog.Neutralize(in); got != want {
			t.Errorf("Neutralize(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestVerifyNamesTheEventWhoseStoredByteWasFlipped(t *testing.T) {
	s, path := filled(t, 400)
	ctx := context.Background()
	rep, err := auditlog.Verify(ctx, s, "", nil)
	if err != nil || !rep.OK || rep.Events != 400 || rep.Hashed != 400 {
		t.Fatalf("untouched log: %+v, %v; want 400 events verified", rep, err)
	}
	all, err := s.ReadAll(ctx, eventstore.ReadAllOptions{})
	if err != nil {
		t.Fatal(err)
	}
	target := all[237]
	s.Close()

	// Flip one byte of the event's data in the file itself, as someone
	// with access to the disk might.
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("log"))
		key := binary.BigEndian.AppendUint64(nil, target.Position.Commit)
		rec := bytes.Clone(b.Get(key))
		i := bytes.Index(rec, target.Data)
		if i < 0 {
			t.Fatal("the event's data is not in its record")
		}
		rec[i+len(target.Data)/2] ^= 0x01
		return b.Put(key, rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err = bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, stream := range []string{"", target.StreamID} {
		rep, err = auditlog.Verify(ctx, s, stream, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK || rep.Broken == nil || rep.Broken.EventID != target.ID.String() || rep.Broken.Revision != target.Revision || rep.Broken.Stream != target.StreamID {
			t.Fatalf("verify %q after the flip = %+v; want event %s (%s@%d) named", stream, rep.Broken, target.ID, target.StreamID, target.Revision)
		}
	}
}
