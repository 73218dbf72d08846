package projections

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mysafe/mysafe/projections/redistest"
)

// BenchmarkSecretsApply measures applying one catch-up micro-batch of
// DefaultMaxBatch events (a mix of users, creates, shares, permission
// changes, revokes, updates, reveals and copies over ~20 secrets) to the
// secrets projection: the unit a rebuild's speed is made of. Each
// iteration writes into a fresh prefix, so the checkpoint never drops the
// batch. Run against a real Redis (the default when one listens on
// 127.0.0.1:6379) for meaningful numbers:
//
//	go test -run '^$' -bench SecretsApply -benchtime 200x ./projections/
func BenchmarkSecretsApply(b *testing.B) {
	w := newWorld(b)
	history(w, 40, 9)
	rdb, prefix := redistest.New(b)
	all := readAll(b, w.store, NewSecrets(rdb, prefix, nil))
	if len(all.Events) < DefaultMaxBatch {
		b.Fatalf("only %d events", len(all.Events))
	}
	batch := Batch{Events: all.Events[:DefaultMaxBatch]}
	batch.Position = batch.Events[len(batch.Events)-1].Position
	ctx := context.Background()

	var applying time.Duration
	b.ResetTimer()
	for i := range b.N {
		p := fmt.Sprintf("%sb%d:", prefix, i)
		s := NewSecrets(rdb, p, quietLogger())
		start := time.Now()
		if _, err := s.Apply(ctx, batch); err != nil {
			b.Fatal(err)
		}
		applying += time.Since(start)
		b.StopTimer()
		if err := redistest.DeletePrefix(ctx, rdb, p); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(len(batch.Events)*b.N)/applying.Seconds(), "events/s")
}
