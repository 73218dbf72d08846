package auditlog

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// Generate appends n synthetic, hash-chained events to store, for
// measuring exports and verification on a large log (`mysafe audit
// generate`); the service never calls it. Each secret's stream gets
// perStream events: a creation, then shares, permission changes, reveals,
// copies and revokes by a handful of users from a few IPs, one minute
// apart from start on. Streams are appended whole, several at a time, so
// that a million events take seconds, not a million fsyncs.
func Generate(ctx context.Context, store eventstore.Store, n, perStream int, start time.Time) error {
	if perStream < 2 {
		perStream = 2
	}
	streams := (n + perStream - 1) / perStream
	jobs := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for s := range jobs {
				size := min(perStream, n-s*perStream)
				if err := appendStream(ctx, store, s, size, start); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for s := 0; s < streams; s++ {
		select {
		case jobs <- s:
		case err := <-errs:
			close(jobs)
			wg.Wait()
			return err
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

var (
	genUsers = []string{"olivia", "gus", "mia", "noah", "ava", "liam"}
	genIPs   = []string{"192.0.2.10", "192.0.2.11", "198.51.100.7", "203.0.113.5"}
)

func appendStream(ctx context.Context, store eventstore.Store, s, size int, start time.Time) error {
	id := fmt.Sprintf("gen-%08d", s)
	owner := genUsers[s%len(genUsers)]
	grantee := domain.User(genUsers[(s+1)%len(genUsers)])
	var cur domain.Permission // the grantee's, while shared
	events := make([]eventstore.EventData, 0, size)
	shared := false
	for i := range size {
		actor := owner
		var p domain.Payload
		switch {
		case i == 0:
			p = domain.SecretCreated{SecretID: id, Owner: owner, SealedClientSecret: []byte("sealed"), Fields: domain.SecretFields{
				Name: "=Generated API " + strconv.Itoa(s), URL: "https://api" + strconv.Itoa(s) + ".example.com", ClientID: "client-" + id, Tags: []string{"gen"}}}
		case !shared:
			cur, shared = domain.Permission{CanView: true}, true
			p = domain.ShareGranted{Principal: grantee, Permission: cur}
		case i%7 == 3:
			next := domain.Permission{CanView: true, CanEdit: !cur.CanEdit}
			p, cur = domain.SharePermissionChanged{Principal: grantee, Before: cur, After: next}, next
		case i%11 == 5:
			p, shared = domain.ShareRevoked{Principal: grantee, Before: cur}, false
		case i%2 == 0:
			actor, p = grantee.ID, domain.SecretCopied{Field: "clientId"}
		default:
			actor, p = grantee.ID, domain.SecretRevealed{}
		}
		meta := domain.Meta{Actor: domain.Actor{ID: actor, Name: actor}, At: start.Add(time.Duration(s*size+i) * time.Minute),
			CorrelationID: "gen-" + strconv.Itoa(s) + "-" + strconv.Itoa(i), ClientIP: genIPs[(s+i)%len(genIPs)], UserAgent: "mysafe-generate"}
		typ, data, md, err := domain.Encode(domain.Event{Meta: meta, Payload: p})
		if err != nil {
			return err
		}
		events = append(events, eventstore.EventData{ID: uuid.New(), Type: typ, Data: data, Metadata: md})
	}
	stream := domain.SecretStream(id)
	if err := eventstore.Chain(stream, nil, events); err != nil {
		return err
	}
	_, err := store.Append(ctx, stream, eventstore.NoStream, events...)
	return err
}
