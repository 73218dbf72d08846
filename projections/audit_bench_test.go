package projections

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/auditlog"
	"github.com/mysafe/mysafe/eventstore/bolt"
)

// BenchmarkAuditReportOnALargeLog times audit report pages over a large
// log: make one with `mysafe audit generate --data-dir DIR --events
// 1000000`, then
//
//	MYSAFE_BENCH_AUDIT_DATA_DIR=DIR go test ./projections -run '^$' -bench AuditReportOnALargeLog -benchtime 200x
//
// It projects the whole log into the test Redis first (reported once, with
// the Redis memory it took), then pages with each kind of filter.
func BenchmarkAuditReportOnALargeLog(b *testing.B) {
	dir := os.Getenv("MYSAFE_BENCH_AUDIT_DATA_DIR")
	if dir == "" {
		b.Skip("set MYSAFE_BENCH_AUDIT_DATA_DIR to a data dir filled by `mysafe audit generate`")
	}
	store, err := bolt.Open(filepath.Join(dir, "events.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	rdb, prefix := newRedis(b)
	ctx := context.Background()
	memBefore := usedMemory(b, rdb)
	a := NewAudit(rdb, prefix, quietLogger())
	start, n := time.Now(), 0
	err = auditlog.Pages(ctx, store, func(page []eventstore.RecordedEvent) error {
		n += len(page)
		_, err := a.Apply(ctx, Batch{Events: page, Position: page[len(page)-1].Position})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("projected %d events in %s; Redis memory +%d MB (%d bytes an event)", n, time.Since(start).Round(time.Millisecond),
		(usedMemory(b, rdb)-memBefore)>>20, (usedMemory(b, rdb)-memBefore)/int64(max(n, 1)))

	r := NewAuditReader(rdb, prefix)
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) // auditlog.Generate's first event
	mid := t0.Add(time.Duration(n/2) * time.Minute)
	deep, err := r.Events(ctx, AuditQuery{Limit: 500})
	if err != nil {
		b.Fatal(err)
	}
	for name, q := range map[string]AuditQuery{
		"newest":        {},
		"cursor":        {Cursor: deep.Next},
		"user":          {User: "gus"},
		"secret name":   {SecretName: "=Generated API 500"},
		"event View":    {Types: domain.AuditEventTypes("View")},
		"ip and user":   {IP: "192.0.2.10", User: "mia"},
		"day window":    {From: mid, To: mid.Add(24 * time.Hour)},
		"user in a day": {User: "olivia", From: mid, To: mid.Add(24 * time.Hour)},
		"user and type": {User: "olivia", Types: []string{"SecretCopied"}},
		"no match":      {User: "olivia", IP: "203.0.113.5", Types: []string{"SecretCreated"}}, // walks all 1,000 creations
	} {
		q.Limit = 50
		b.Run(name, func(b *testing.B) {
			items := 0
			for b.Loop() {
				page, err := r.Events(ctx, q)
				if err != nil {
					b.Fatal(err)
				}
				items = len(page.Items)
			}
			b.ReportMetric(float64(items), "items/page")
		})
	}
}

// usedMemory is Redis's used_memory (0 if it does not say).
func usedMemory(b *testing.B, rdb redis.UniversalClient) int64 {
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`used_memory:(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}
