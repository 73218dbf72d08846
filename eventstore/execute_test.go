package eventstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/bolt"
)

func openStore(t *testing.T) eventstore.Store {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// counter decides one "Incremented" event carrying the stream's length, so
// a decision made on stale history would show as a repeated number.
func counter(history []eventstore.RecordedEvent) ([]eventstore.EventData, error) {
	return []eventstore.EventData{{Type: "Incremented", Data: []byte(strconv.Itoa(len(history)))}}, nil
}

func TestExecuteDecidesAgainAfterAConflict(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			_, err := eventstore.Execute(ctx, s, eventstore.Command{Stream: "counter-1", Decide: counter})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	events, err := s.ReadStream(ctx, "counter-1", eventstore.ReadStreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != writers {
		t.Fatalf("%d events; want %d", len(events), writers)
	}
	for i, e := range events {
		if string(e.Data) != strconv.Itoa(i) {
			t.Fatalf("event %d was decided on %s events: a stale decision was appended", i, e.Data)
		}
	}
}

func TestExecuteWithDerivedIDsAppendsOnce(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	key := uuid.New()
	cmd := eventstore.Command{Stream: "counter-2", Decide: counter,
		EventID: func(i int) uuid.UUID { return uuid.NewSHA1(key, []byte(strconv.Itoa(i))) }}
	first, err := eventstore.Execute(ctx, s, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.Execute(ctx, s, eventstore.Command{Stream: "counter-2", Decide: counter}); err != nil {
		t.Fatal(err)
	}
	retry, err := eventstore.Execute(ctx, s, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if retry != first {
		t.Fatalf("retry answered %+v; want the first answer %+v", retry, first)
	}
	events, _ := s.ReadStream(ctx, "counter-2", eventstore.ReadStreamOptions{})
	if len(events) != 2 {
		t.Fatalf("%d events; want 2 (the retry appends nothing)", len(events))
	}
}

func TestExecuteNoEventsAnswersTheCurrentState(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	written, err := eventstore.Execute(ctx, s, eventstore.Command{Stream: "counter-3", Decide: counter})
	if err != nil {
		t.Fatal(err)
	}
	nothing := func([]eventstore.RecordedEvent) ([]eventstore.EventData, error) { return nil, nil }
	got, err := eventstore.Execute(ctx, s, eventstore.Command{Stream: "counter-3", Decide: nothing})
	if err != nil || got != written {
		t.Fatalf("Execute = %+v, %v; want %+v", got, err, written)
	}
	refused := errors.New("refused")
	if _, err := eventstore.Execute(ctx, s, eventstore.Command{Stream: "counter-3",
		Decide: func([]eventstore.RecordedEvent) ([]eventstore.EventData, error) { return nil, refused }}); !errors.Is(err, refused) {
		t.Fatalf("err = %v; want the decision's error", err)
	}
}
