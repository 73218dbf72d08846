package eventstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// MaxAttempts bounds how often Execute reloads and decides again after
// losing a race with another writer of the same stream.
const MaxAttempts = 8

// Decide turns a stream's history into the events a command appends. It is
// called again, with the new history, each time an append conflicts.
type Decide func(history []RecordedEvent) ([]EventData, error)

// Command is one execution of Decide against a stream.
type Command struct {
	Stream string
	Decide Decide
	// EventID names the i-th event the command appends. When it derives IDs
	// from a client's idempotency key, a retried request finds its events
	// already in the stream and answers as the first one did, appending
	// nothing. Nil gives random IDs.
	EventID func(i int) uuid.UUID
}

// Execute loads the stream, decides, and appends with the expected revision
// of what it loaded; on a conflict it reloads and decides again, at most
// MaxAttempts times. A decision of no events appends nothing and answers
// with the stream's current revision and position.
func Execute(ctx context.Context, s Store, cmd Command) (AppendResult, error) {
	for attempt := 1; ; attempt++ {
		history, err := s.ReadStream(ctx, cmd.Stream, ReadStreamOptions{})
		if err != nil && !errors.Is(err, ErrStreamNotFound) {
			return AppendResult{}, err
		}
		if res, ok := alreadyAppended(history, cmd.EventID); ok {
			return res, nil
		}
		events, err := cmd.Decide(history)
		if err != nil {
			return AppendResult{}, err
		}
		expected := NoStream
		var current AppendResult
		if n := len(history); n > 0 {
			last := history[n-1]
			expected = Exact(last.Revision)
			current = AppendResult{NextExpectedRevision: last.Revision, Position: last.Position}
		}
		if len(events) == 0 {
			return current, nil
		}
		for i := range events {
			if cmd.EventID != nil {
				events[i].ID = cmd.EventID(i)
			} else {
				events[i].ID = uuid.New()
			}
		}
		// Each event carries the hash of its content chained to the one
		// before it (chain.go): made here, the one place every command's
		// events pass with the history they follow.
		if err := Chain(cmd.Stream, history, events); err != nil {
			return AppendResult{}, err
		}
		res, err := s.Append(ctx, cmd.Stream, expected, events...)
		if errors.Is(err, ErrConflict) && attempt < MaxAttempts {
			continue
		}
		if errors.Is(err, ErrConflict) {
			return AppendResult{}, fmt.Errorf("%d attempts lost the race for %q: %w", attempt, cmd.Stream, err)
		}
		return res, err
	}
}

// alreadyAppended finds the events of an earlier run of the same command
// and answers with where the last of them landed.
func alreadyAppended(history []RecordedEvent, eventID func(int) uuid.UUID) (AppendResult, bool) {
	if eventID == nil {
		return AppendResult{}, false
	}
	first := eventID(0)
	for i, e := range history {
		if e.ID != first {
			continue
		}
		last := e
		for j := i + 1; j < len(history) && history[j].ID == eventID(j-i); j++ {
			last = history[j]
		}
		return AppendResult{NextExpectedRevision: last.Revision, Position: last.Position}, true
	}
	return AppendResult{}, false
}
