package projections

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/mysafe/mysafe/eventstore"
)

// These tests hold the Subscriber to what watermill expects of a
// subscriber (pubsub/tests/test_pubsub.go) as far as it applies to a
// read-only, ordered, persistent source: order, one message in flight until
// it is acked, redelivery of a nacked message, resuming where the consumer
// acknowledged, and closing.

// wait bounds every wait for something that should happen; generous, as
// the machine may be loaded. Nothing asserts how fast things happen.
const wait = 20 * time.Second

func appendRaw(t *testing.T, s eventstore.Store, stream string, n int) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, n)
	events := make([]eventstore.EventData, n)
	for i := range events {
		ids[i] = uuid.New()
		events[i] = eventstore.EventData{ID: ids[i], Type: "Test", Data: fmt.Appendf(nil, `{"i":%d}`, i)}
	}
	if _, err := s.Append(context.Background(), stream, eventstore.Any, events...); err != nil {
		t.Fatal(err)
	}
	return ids
}

func fromStart(context.Context) (eventstore.Position, error) { return eventstore.Start, nil }

func newTestSubscriber(t *testing.T, store eventstore.Store, maxBatch int, prefixes ...string) *Subscriber {
	t.Helper()
	s := NewSubscriber(store, SubscriberConfig{
		Topics:     map[string]Topic{"t": {StreamPrefixes: prefixes, Checkpoint: fromStart}},
		MaxBatch:   maxBatch,
		MinBackoff: time.Millisecond,
		MaxBackoff: 10 * time.Millisecond,
		Logger:     quietLogger(),
	})
	t.Cleanup(func() { s.Close() })
	return s
}

func subscribe(t *testing.T, s *Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return msg
	case <-time.After(wait):
		t.Fatal("no message")
	}
	return nil
}

func decode(t *testing.T, msg *message.Message) Batch {
	t.Helper()
	b, err := DecodeBatch(msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// collect acks messages until it has n events, and returns the events' IDs
// in the order received.
func collect(t *testing.T, ch <-chan *message.Message, n int) []uuid.UUID {
	t.Helper()
	var ids []uuid.UUID
	for len(ids) < n {
		msg := receive(t, ch)
		b := decode(t, msg)
		for _, e := range b.Events {
			ids = append(ids, e.ID)
		}
		msg.Ack()
	}
	return ids
}

func equalIDs(t *testing.T, got, want []uuid.UUID) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("event %d is %s, want %s", i, got[i], want[i])
		}
	}
}

func TestSubscriberDeliversInOrderOneMessageAtATime(t *testing.T) {
	store := newMemStore()
	want := appendRaw(t, store, "secret-a", 10)
	ch := subscribe(t, newTestSubscriber(t, store, 1), "t")

	var got []uuid.UUID
	for len(got) < len(want) {
		msg := receive(t, ch)
		b := decode(t, msg)
		if len(b.Events) > 1 {
			t.Fatalf("batch of %d events with MaxBatch 1", len(b.Events))
		}
		if n := len(b.Events); n == 1 {
			if msg.UUID != b.Events[0].ID.String() {
				t.Errorf("message UUID %s, want the event ID %s", msg.UUID, b.Events[0].ID)
			}
			if b.Position != b.Events[0].Position {
				t.Errorf("batch position %s, want the event's %s", b.Position, b.Events[0].Position)
			}
			got = append(got, b.Events[0].ID)
		}
		// Nothing else may arrive before the ack. (This cannot fail
		// falsely; a broken subscriber may slip through it.)
		select {
		case <-ch:
			t.Fatal("a second message arrived before the first was acked")
		case <-time.After(20 * time.Millisecond):
		}
		msg.Ack()
	}
	equalIDs(t, got, want)
}

func TestSubscriberPacksMicroBatchesWhileCatchingUp(t *testing.T) {
	store := newMemStore()
	want := appendRaw(t, store, "secret-a", 1000)
	ch := subscribe(t, newTestSubscriber(t, store, 100), "t")

	var got []uuid.UUID
	messages, caughtUp := 0, false
	for !caughtUp {
		msg := receive(t, ch)
		b := decode(t, msg)
		messages++
		if len(b.Events) > 100 {
			t.Fatalf("batch of %d events with MaxBatch 100", len(b.Events))
		}
		if n := len(b.Events); n > 0 && msg.UUID != b.Events[n-1].ID.String() {
			t.Errorf("message UUID %s, want the last event's ID %s", msg.UUID, b.Events[n-1].ID)
		}
		for _, e := range b.Events {
			got = append(got, e.ID)
		}
		caughtUp = b.CaughtUp
		if caughtUp != (msg.Metadata.Get(MetadataCaughtUp) == "true") {
			t.Error("CaughtUp does not match the metadata")
		}
		msg.Ack()
	}
	equalIDs(t, got, want)
	if messages >= len(want) {
		t.Errorf("%d messages for %d events: no micro-batches", messages, len(want))
	}
}

func TestSubscriberRedeliversNackedMessage(t *testing.T) {
	store := newMemStore()
	want := appendRaw(t, store, "secret-a", 5)
	ch := subscribe(t, newTestSubscriber(t, store, 2), "t")

	first := receive(t, ch)
	first.Nack()
	if err := first.Context().Err(); err == nil {
		// watermill: Ack or Nack cancels the message's context. Give the
		// subscriber its turn first.
		select {
		case <-first.Context().Done():
		case <-time.After(wait):
			t.Error("the nacked message's context was not cancelled")
		}
	}
	again := receive(t, ch)
	if again.UUID != first.UUID || string(again.Payload) != string(first.Payload) {
		t.Fatalf("after a nack got %s, want %s again", again.UUID, first.UUID)
	}
	again.Nack()
	third := receive(t, ch)
	if third.UUID != first.UUID {
		t.Fatalf("after a second nack got %s, want %s again", third.UUID, first.UUID)
	}
	got := decodeIDs(t, third)
	third.Ack()
	got = append(got, collect(t, ch, len(want)-len(got))...)
	equalIDs(t, got, want)
}

func decodeIDs(t *testing.T, msg *message.Message) []uuid.UUID {
	var ids []uuid.UUID
	for _, e := range decode(t, msg).Events {
		ids = append(ids, e.ID)
	}
	return ids
}

func TestSubscriberStartsAfterCheckpoint(t *testing.T) {
	store := newMemStore()
	all := appendRaw(t, store, "secret-a", 10)
	s := NewSubscriber(store, SubscriberConfig{Logger: quietLogger(), Topics: map[string]Topic{"t": {
		Checkpoint: func(context.Context) (eventstore.Position, error) {
			return eventstore.Position{Commit: 4, Prepare: 4}, nil
		},
	}}})
	t.Cleanup(func() { s.Close() })
	equalIDs(t, collect(t, subscribe(t, s, "t"), 6), all[4:])
}

func TestSubscriberRetriesCheckpointLoad(t *testing.T) {
	store := newMemStore()
	all := appendRaw(t, store, "secret-a", 3)
	calls := 0
	s := NewSubscriber(store, SubscriberConfig{Logger: quietLogger(), MinBackoff: time.Millisecond, Topics: map[string]Topic{"t": {
		Checkpoint: func(context.Context) (eventstore.Position, error) {
			calls++ // only the subscription's goroutine calls it
			if calls < 3 {
				return eventstore.Position{}, errors.New("redis is down")
			}
			return eventstore.Start, nil
		},
	}}})
	t.Cleanup(func() { s.Close() })
	equalIDs(t, collect(t, subscribe(t, s, "t"), 3), all)
}

func TestSubscriberResubscribesFromLastAckAfterDrop(t *testing.T) {
	store := newMemStore()
	want := appendRaw(t, store, "secret-a", 50)
	ch := subscribe(t, newTestSubscriber(t, store, 3), "t")

	got := collect(t, ch, 10)
	store.drop(errors.New("connection reset"))
	want = append(want, appendRaw(t, store, "secret-a", 5)...)
	got = append(got, collect(t, ch, len(want)-len(got))...)
	equalIDs(t, got, want)
	if n := store.subscriptions(); n < 2 {
		t.Errorf("%d store subscriptions, want a new one after the drop", n)
	}
}

func TestSubscriberGoesLiveAfterCatchUp(t *testing.T) {
	store := newMemStore()
	ch := subscribe(t, newTestSubscriber(t, store, 0), "t")

	msg := receive(t, ch)
	b := decode(t, msg)
	if !b.CaughtUp || len(b.Events) != 0 {
		t.Fatalf("on an empty log got %d events, caughtUp %v; want only the caught-up signal", len(b.Events), b.CaughtUp)
	}
	msg.Ack()
	want := appendRaw(t, store, "secret-a", 1)
	equalIDs(t, collect(t, ch, 1), want)
	want = appendRaw(t, store, "user-b", 2)
	equalIDs(t, collect(t, ch, 2), want)
}

func TestSubscriberFiltersAndForwardsCheckpoints(t *testing.T) {
	store := newMemStore()
	appendRaw(t, store, "secretkey-a", 3) // not a "secret-" stream
	ch := subscribe(t, newTestSubscriber(t, store, 0, "secret-"), "t")

	msg := receive(t, ch)
	b := decode(t, msg)
	if len(b.Events) != 0 || b.Position != (eventstore.Position{Commit: 3, Prepare: 3}) {
		t.Fatalf("got %d events up to %s; want none, up to 3-3", len(b.Events), b.Position)
	}
	msg.Ack()
	want := appendRaw(t, store, "secret-a", 1)
	var got []uuid.UUID
	for len(got) == 0 {
		got = collect(t, ch, 1)
	}
	equalIDs(t, got, want)
}

func TestSubscriberClose(t *testing.T) {
	store := newMemStore()
	appendRaw(t, store, "secret-a", 5)
	s := NewSubscriber(store, SubscriberConfig{Logger: quietLogger(), Topics: map[string]Topic{
		"a": {Checkpoint: fromStart}, "b": {Checkpoint: fromStart},
	}})
	if _, err := s.Subscribe(context.Background(), "nope"); err == nil {
		t.Error("Subscribe to an unknown topic: no error")
	}
	a, b := subscribe(t, s, "a"), subscribe(t, s, "b")
	receive(t, a) // in flight, never acked

	closed := make(chan error)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not return")
	}
	for _, ch := range []<-chan *message.Message{a, b} {
		for range ch { // drain: closed after at most the message in flight
		}
	}
	if _, err := s.Subscribe(context.Background(), "a"); err == nil {
		t.Error("Subscribe after Close: no error")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSubscriberEndsWithContextOrStore(t *testing.T) {
	store := newMemStore()
	s := newTestSubscriber(t, store, 0)
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	drained(t, ch)

	// A closed store ends the subscription for good: there is nothing to
	// resubscribe to.
	ch = subscribe(t, s, "t")
	receive(t, ch).Ack() // caught up
	store.Close()
	drained(t, ch)
}

func drained(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("channel not closed")
		}
	}
}
