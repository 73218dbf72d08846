package domain_test

import (
	"fmt"
	"testing"

	"github.com/mysafe/mysafe/domain"
)

// sharedWith100 is a secret shared with 100 users, as the events that made
// it, and the share dialog's next click: the same list with the first
// grantee removed and a new one added.
func sharedWith100(b *testing.B) (events []domain.Event, click domain.ApplyShares) {
	b.Helper()
	events = []domain.Event{{Meta: owner, Payload: created()}}
	var grants []domain.Grant
	for i := range 100 {
		g := grant(fmt.Sprintf("user-%03d", i), canView)
		grants = append(grants, g)
		events = append(events, domain.Event{Meta: owner, Payload: domain.ShareGranted(g)})
	}
	click.Grants = append(append([]domain.Grant{}, grants[1:]...), grant("user-new", canEdit))
	return events, click
}

// BenchmarkDecideShareChange measures the share dialog's click on a secret
// with 100 grants: the pure decision on folded state, and what a command
// really does before it appends, decoding the stored events, folding them
// and deciding.
//
//	go test -run '^$' -bench DecideShareChange -benchmem ./domain/
func BenchmarkDecideShareChange(b *testing.B) {
	events, click := sharedWith100(b)
	b.Run("decide", func(b *testing.B) {
		s := domain.Secret{ID: "s1"}
		for _, e := range events {
			s.Apply(e)
		}
		b.ReportAllocs()
		for b.Loop() {
			out, err := domain.DecideSecret(s, click, owner)
			if err != nil || len(out) != 2 {
				b.Fatalf("decide: %d events, %v", len(out), err)
			}
		}
	})
	b.Run("decode+fold+decide", func(b *testing.B) {
		type stored struct {
			typ        string
			data, meta []byte
		}
		var log []stored
		for _, e := range events {
			typ, data, meta, err := domain.Encode(e)
			if err != nil {
				b.Fatal(err)
			}
			log = append(log, stored{typ, data, meta})
		}
		b.ReportAllocs()
		for b.Loop() {
			s := domain.Secret{ID: "s1"}
			for _, r := range log {
				e, err := domain.Decode(r.typ, r.data, r.meta)
				if err != nil {
					b.Fatal(err)
				}
				s.Apply(e)
			}
			if _, err := domain.DecideSecret(s, click, owner); err != nil {
				b.Fatal(err)
			}
		}
	})
}
