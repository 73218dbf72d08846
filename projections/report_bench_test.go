package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// BenchmarkReportPageJSON measures encoding one report page of 30 rows as
// the API answers it.
//
//	go test -run '^$' -bench ReportPageJSON -benchmem ./projections/
func BenchmarkReportPageJSON(b *testing.B) {
	used := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
	page := ReportPage{Total: 40}
	for i := range DefaultPageSize {
		row := ReportRow{ID: fmt.Sprintf("0f8fad5b-d9cb-469f-a165-7086772895%02d", i), Name: fmt.Sprintf("Billing API %d", i),
			URL: fmt.Sprintf("https://api%d.billing.example.com/v1", i), Tags: []string{"prod", "billing"}, Shared: i%2 == 0,
			Owner: Person{ID: "olivia", Name: "Olivia Owner"}, Status: StatusEnabled}
		if i%3 == 0 {
			row.LastUsed = &used
		}
		page.Items = append(page.Items, row)
	}
	b.ReportAllocs()
	var size int
	for b.Loop() {
		out, err := json.Marshal(page)
		if err != nil {
			b.Fatal(err)
		}
		size = len(out)
	}
	b.SetBytes(int64(size))
}

// BenchmarkReader measures the screens' reads from Redis, decoding
// included: a report page of 30 rows (user with 40 secrets), one secret's
// details, and the home page cards. Run against a real Redis (the default
// when one listens on 127.0.0.1:6379) for meaningful numbers:
//
//	go test -run '^$' -bench Reader -benchmem ./projections/
func BenchmarkReader(b *testing.B) {
	w := newWorld(b)
	rdb, prefix := newRedis(b)
	w.user("olivia", "Olivia Owner")
	w.user("gus", "Gus Grantee")
	var last string
	for i := range 40 {
		id := fmt.Sprintf("s%02d", i)
		cmds := []any{create(id, fmt.Sprintf("Billing API %d", i), "prod", "billing")}
		if i%2 == 0 {
			cmds = append(cmds, share("gus", i%4 == 0))
		}
		w.last = w.secret("olivia", id, cmds...)
		last = id
	}
	p := testProjector(w.store, rdb, prefix, 0)
	run(b, p)
	waitFor(b, p, w.last)
	r := NewReader(rdb, prefix)
	ctx := context.Background()

	b.Run("report", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			page, err := r.Report(ctx, "olivia", ReportQuery{})
			if err != nil || len(page.Items) != DefaultPageSize {
				b.Fatalf("report: %d rows, %v", len(page.Items), err)
			}
		}
	})
	b.Run("details", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			d, err := r.Details(ctx, last)
			if err != nil || d == nil {
				b.Fatalf("details: %v", err)
			}
		}
	})
	b.Run("cards", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			cards, err := r.Cards(ctx, "olivia")
			if err != nil || len(cards) != 40 {
				b.Fatalf("cards: %d, %v", len(cards), err)
			}
		}
	})
}
