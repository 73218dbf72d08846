package projections

import (
	"context"
	"fmt"
	"testing"

	"github.com/mysafe/mysafe/eventstore"
)

// BenchmarkMembershipFanOut measures applying one membership change of a
// group shared on 10 and on 1,000 secrets (m1 joins, then leaves, in
// turn): the batch reads the group's secrets index and their documents,
// and rewrites m1's access set in one transaction. Appending to the log is
// left out of the timing. Against a real Redis:
//
//	go test -run '^$' -bench MembershipFanOut -benchtime 50x ./projections/
func BenchmarkMembershipFanOut(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("secrets=%d", n), func(b *testing.B) { benchmarkFanOut(b, n) })
	}
}

func benchmarkFanOut(b *testing.B, n int) {
	w := newWorld(b)
	for _, u := range []string{"olivia", "m1", "m2"} {
		w.user(u, "User "+u)
	}
	w.group("olivia", "ops", newGroup("ops", "Ops"), add("m2"))
	for i := range n {
		id := fmt.Sprintf("s%04d", i)
		w.secret("olivia", id, create(id, "Secret "+id), shareGroup("ops", false))
	}
	rdb, prefix := newRedis(b)
	s := NewSecrets(rdb, prefix, quietLogger())
	ctx := context.Background()
	all := readAll(b, w.store, s)
	if _, err := s.Apply(ctx, all); err != nil {
		b.Fatal(err)
	}
	last := all.Position
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		var cmd any = add("m1")
		if i%2 == 1 {
			cmd = remove("m1")
		}
		w.group("olivia", "ops", cmd)
		events, err := w.store.ReadAll(ctx, eventstore.ReadAllOptions{From: last})
		if err != nil {
			b.Fatal(err)
		}
		batch := Batch{Events: events[1:], Position: events[len(events)-1].Position}
		b.StartTimer()
		if _, err := s.Apply(ctx, batch); err != nil {
			b.Fatal(err)
		}
		last = batch.Position
	}
	b.StopTimer()
	page, err := NewReader(rdb, prefix).Report(ctx, "m1", ReportQuery{PageSize: 1})
	if want := n * (b.N % 2); err != nil || page.Total != want {
		b.Fatalf("m1 reaches %d secrets, %v; want %d", page.Total, err, want)
	}
}
