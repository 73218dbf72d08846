package http

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/bolt"
)

// A state folded from the cache is the state folded from scratch, however
// the stream grew in between and whatever callers did to earlier answers.
func TestFoldCacheFoldsLikeAFreshFold(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	meta := func() domain.Meta {
		at = at.Add(time.Minute)
		return domain.Meta{Actor: domain.Actor{ID: "olivia", Name: "Olivia"}, At: at, CorrelationID: "c"}
	}
	tags := []string{"prod"}
	commands := []func() any{
		func() any {
			g := domain.Grant{Principal: domain.User(fmt.Sprint("u", rng.IntN(5))), Permission: domain.Permission{CanView: true, CanEdit: rng.IntN(2) == 0}}
			return domain.ApplyShares{Grants: []domain.Grant{g}}
		},
		func() any { return domain.ApplyShares{Grants: nil} },
		func() any {
			return domain.ShareSecret{Grant: domain.Grant{Principal: domain.User("u9"), Permission: domain.Permission{CanView: true}}}
		},
		func() any { return domain.RevokeShare{Principal: domain.User("u9")} },
		func() any {
			name := fmt.Sprint("API ", rng.IntN(100))
			return domain.UpdateSecret{Changes: domain.SecretChanges{Name: &name, Tags: &tags}}
		},
		func() any { return domain.DisableSecret{} },
		func() any { return domain.EnableSecret{} },
		func() any { return domain.RevealSecret{} },
		func() any { return domain.CopySecret{Field: "url"} },
	}

	var history []eventstore.RecordedEvent
	state := domain.Secret{ID: "s1"}
	record := func(events []domain.Event) {
		for _, e := range events {
			typ, data, m, err := domain.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			history = append(history, eventstore.RecordedEvent{ID: uuid.New(), Type: typ, StreamID: "secret-s1",
				Revision: uint64(len(history)), Data: data, Metadata: m})
			state.Apply(e)
		}
	}
	created, err := domain.DecideSecret(state, domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{
		Name: "API", URL: "https://api.example.com", ClientID: "c", Tags: []string{"a", "b"}}, SealedClientSecret: []byte("sealed")}, meta())
	if err != nil {
		t.Fatal(err)
	}
	record(created)

	var cache foldCache
	for step := range 300 {
		if events, err := domain.DecideSecret(state, commands[rng.IntN(len(commands))](), meta()); err == nil {
			record(events)
		}
		// Fold a prefix of the stream now and then too: a stale read.
		upTo := len(history)
		if step%7 == 0 {
			upTo = 1 + rng.IntN(len(history))
		}
		got, err := cache.fold("s1", history[:upTo])
		if err != nil {
			t.Fatal(err)
		}
		want, err := foldSecret("s1", history[:upTo])
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d, %d events: cached fold\n%+v\nfresh fold\n%+v", step, upTo, got, want)
		}
		if c := cache.m["s1"]; upTo == len(history) && c.rev != uint64(upTo-1) {
			t.Fatalf("step %d: the cache holds revision %d, not the stream's last, %d", step, c.rev, upTo-1)
		}
		// A caller changing what it got must not change the cache.
		if len(got.Grants) > 0 {
			got.Grants[0].Permission = domain.Permission{}
			got.Apply(domain.Event{Payload: domain.ShareRevoked{Principal: got.Grants[0].Principal}})
		}
		if len(got.Fields.Tags) > 0 {
			got.Fields.Tags[0] = "changed"
		}
	}
	if len(history) < 150 {
		t.Fatalf("only %d events in 300 steps: the test folds too little", len(history))
	}
}

func TestFoldCacheIsBounded(t *testing.T) {
	var cache foldCache
	for i := range maxFoldedSecrets + 100 {
		id := fmt.Sprint("s", i)
		e := domain.Event{Payload: domain.SecretCreated{SecretID: id, Owner: "o", Fields: domain.SecretFields{Name: "n", URL: "https://x.example.com", ClientID: "c"}}}
		typ, data, m, err := domain.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cache.fold(id, []eventstore.RecordedEvent{{ID: uuid.New(), Type: typ, Data: data, Metadata: m}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(cache.m); n > maxFoldedSecrets {
		t.Errorf("%d secrets remembered; at most %d", n, maxFoldedSecrets)
	}
}

// readCounter is a store that records the reads of a stream.
type readCounter struct {
	eventstore.Store
	froms []uint64
	read  int // events returned
}

func (r *readCounter) ReadStream(ctx context.Context, stream string, opts eventstore.ReadStreamOptions) ([]eventstore.RecordedEvent, error) {
	events, err := r.Store.ReadStream(ctx, stream, opts)
	r.froms = append(r.froms, opts.From)
	r.read += len(events)
	return events, err
}

// load reads only what the secret gained since it was remembered, and
// answers as a fresh fold of the whole stream does.
func TestFoldCacheLoadReadsOnlyNewEvents(t *testing.T) {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	store := &readCounter{Store: s}
	ctx := context.Background()
	owner := domain.Meta{Actor: domain.Actor{ID: "olivia"}, At: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	appendCmd := func(cmd any) eventstore.AppendResult {
		t.Helper()
		res, err := eventstore.Execute(ctx, s, eventstore.Command{Stream: domain.SecretStream("s1"),
			Decide: func(history []eventstore.RecordedEvent) ([]eventstore.EventData, error) {
				state, err := foldSecret("s1", history)
				if err != nil {
					return nil, err
				}
				events, err := domain.DecideSecret(state, cmd, owner)
				if err != nil {
					return nil, err
				}
				return encode(events)
			}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	var cache foldCache
	if _, _, err := cache.load(ctx, store, "s1"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("load of a secret never created: %v; want ErrStreamNotFound", err)
	}
	appendCmd(domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{Name: "API", URL: "https://api.example.com", ClientID: "c"}})
	for i := range 5 {
		appendCmd(domain.ApplyShares{Grants: []domain.Grant{{Principal: domain.User(fmt.Sprint("u", i)), Permission: domain.Permission{CanView: true}}}})
	}
	// check loads and expects one read from revision wantFrom to the end.
	check := func(wantFrom uint64) {
		t.Helper()
		store.froms, store.read = nil, 0
		got, pos, err := cache.load(ctx, store, "s1")
		if err != nil {
			t.Fatal(err)
		}
		history, err := s.ReadStream(ctx, domain.SecretStream("s1"), eventstore.ReadStreamOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want, _ := foldSecret("s1", history)
		if !reflect.DeepEqual(got, want) || pos != history[len(history)-1].Position {
			t.Fatalf("load: %+v at %s; want %+v at %s", got, pos, want, history[len(history)-1].Position)
		}
		if wantRead := len(history) - int(wantFrom); len(store.froms) != 1 || store.froms[0] != wantFrom || store.read != wantRead {
			t.Errorf("load read from %v, %d events; want one read from %d of %d events", store.froms, store.read, wantFrom, wantRead)
		}
	}
	last := appendCmd(domain.ApplyShares{}).NextExpectedRevision
	check(0)    // not remembered: the whole stream
	check(last) // unchanged: the last event only
	appendCmd(domain.DisableSecret{})
	appendCmd(domain.EnableSecret{})
	check(last) // the remembered event and the two after it
}
