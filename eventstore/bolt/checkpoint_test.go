package bolt

import (
	"context"
	"testing"
	"time"

	"github.com/mysafe/mysafe/eventstore"
)

// TestLiveCheckpointForFilteredEvents: once live, an event the filter skips
// still moves the subscription on, so whoever waits for that event's
// position through this subscription is not kept waiting.
func TestLiveCheckpointForFilteredEvents(t *testing.T) {
	s, _ := openTemp(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := s.SubscribeAll(ctx, eventstore.SubscribeAllOptions{StreamPrefixes: []string{"wanted-"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for {
		m, err := sub.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.CaughtUp {
			break
		}
	}
	skipped := mustAppend(t, s, "other-1", eventstore.Any, event("x"))
	for {
		m, err := sub.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.Event != nil {
			t.Fatalf("delivered %s, which the filter excludes", m.Event.StreamID)
		}
		if m.Checkpoint != nil && m.Checkpoint.Compare(skipped.Position) >= 0 {
			return
		}
	}
}
