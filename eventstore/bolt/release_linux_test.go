package bolt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/mysafe/mysafe/eventstore"
)

// After the log's pages are released from the memory map, the process no
// longer holds them, and every event still reads back as it was written.
func TestReleasedPagesLeaveTheMapAndReadBack(t *testing.T) {
	s, path := openTemp(t, WithMappedBudget(0))
	ctx := context.Background()
	data := bytes.Repeat([]byte("x"), 2000)
	for i := range 40 {
		events := make([]eventstore.EventData, 100)
		for j := range events {
			events[j] = eventstore.EventData{ID: uuid.New(), Type: "T", Data: fmt.Appendf(nil, `{"i":%d,"pad":"%s"}`, i*100+j, data)}
		}
		if _, err := s.Append(ctx, fmt.Sprint("s-", i), eventstore.NoStream, events...); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func() []eventstore.RecordedEvent {
		all, err := s.ReadAll(ctx, eventstore.ReadAllOptions{})
		if err != nil || len(all) != 4000 {
			t.Fatalf("read %d events: %v", len(all), err)
		}
		return all
	}
	before := readAll()
	mapped := mappedKB(t, path)
	if mapped < 4000 { // ~8 MB of records
		t.Fatalf("only %d kB of the file are mapped after reading all of it", mapped)
	}
	if resident, err := residentFileBytes(); err != nil || resident < int64(mapped)*1024 {
		t.Errorf("residentFileBytes: %d, %v; want at least the %d kB mapped", resident, err, mapped)
	}
	if err := releaseMappedPages(s.db); err != nil {
		t.Fatal(err)
	}
	after := mappedKB(t, path)
	t.Logf("resident from the mapped file: %d kB after reading it all, %d kB after the release", mapped, after)
	if after > mapped/4 {
		t.Errorf("%d kB of the file still mapped after the release (%d before)", after, mapped)
	}
	for i, e := range readAll() {
		if e.ID != before[i].ID || !bytes.Equal(e.Data, before[i].Data) {
			t.Fatalf("event %d reads back differently after the release", i)
		}
	}
}

// mappedKB is the resident size of this process's mappings of path, from
// /proc/self/smaps.
func mappedKB(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = fields[len(fields)-1] == path // a mapping's header line
			continue
		}
		if in && len(fields) >= 2 && fields[0] == "Rss:" {
			kb, _ := strconv.Atoi(fields[1])
			total += kb
		}
	}
	return total
}
