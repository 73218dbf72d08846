package eventstore_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/google/uuid"

	"github.com/mysafe/mysafe/eventstore"
)

func TestSplitHashRecoversTheMetadataByteForByte(t *testing.T) {
	for _, meta := range []string{`{"schema":1,"actor":{"id":"olivia"}}`, `{}`, ``} {
		events := []eventstore.EventData{{ID: uuid.New(), Type: "T", Data: []byte(`{}`), Metadata: []byte(meta)}}
		if err := eventstore.Chain("s-1", nil, events); err != nil {
			t.Fatal(err)
		}
		body, hash, ok := eventstore.SplitHash(events[0].Metadata)
		want := meta
		if want == "" {
			want = "{}"
		}
		if !ok || string(body) != want || len(hash) != 32 {
			t.Fatalf("%q → %s → (%s, %x, %v); want the metadata back and a 32-byte hash", meta, events[0].Metadata, body, hash, ok)
		}
	}
	if _, _, ok := eventstore.SplitHash([]byte(`{"schema":1}`)); ok {
		t.Fatal("metadata without a hash split into a hash")
	}
	bad := []eventstore.EventData{{ID: uuid.New(), Type: "T", Metadata: []byte(`[1]`)}}
	if err := eventstore.Chain("s-1", nil, bad); err == nil {
		t.Fatal("metadata that is not an object was chained")
	}
}

// chainedLog appends n events to each stream through Execute, one or two
// per command, and returns the log.
func chainedLog(t *testing.T, s eventstore.Store, streams []string, n int) []eventstore.RecordedEvent {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; {
		for _, stream := range streams {
			_, err := eventstore.Execute(ctx, s, eventstore.Command{Stream: stream, Decide: func(h []eventstore.RecordedEvent) ([]eventstore.EventData, error) {
				meta := []byte(`{"schema":1,"actor":{"id":"u` + strconv.Itoa(i) + `"}}`)
				return []eventstore.EventData{
					{Type: "A", Data: []byte(strconv.Itoa(len(h))), Metadata: meta},
					{Type: "B", Data: []byte(`{"x":1}`), Metadata: meta},
				}, nil
			}})
			if err != nil {
				t.Fatal(err)
			}
		}
		i += 2
	}
	all, err := s.ReadAll(ctx, eventstore.ReadAllOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func verify(log []eventstore.RecordedEvent) (*eventstore.Verifier, error) {
	v := eventstore.NewVerifier()
	for _, e := range log {
		if err := v.Check(e); err != nil {
			return v, err
		}
	}
	return v, nil
}

func TestVerifierPassesAnUntouchedLogAndNamesTheAlteredEvent(t *testing.T) {
	s := openStore(t)
	log := chainedLog(t, s, []string{"a-1", "b-1"}, 6)
	v, err := verify(log)
	if err != nil || v.Hashed != uint64(len(log)) || v.Unhashed != 0 {
		t.Fatalf("untouched log: %v, %d hashed, %d unhashed of %d", err, v.Hashed, v.Unhashed, len(log))
	}
	for _, alter := range []struct {
		name string
		do   func(e *eventstore.RecordedEvent)
	}{
		{"data", func(e *eventstore.RecordedEvent) { e.Data = bytes.Replace(e.Data, []byte("1"), []byte("2"), 1) }},
		{"metadata", func(e *eventstore.RecordedEvent) {
			e.Metadata = bytes.Replace(e.Metadata, []byte(`"u`), []byte(`"v`), 1)
		}},
		{"type", func(e *eventstore.RecordedEvent) { e.Type = "C" }},
		{"hash", func(e *eventstore.RecordedEvent) {
			i := bytes.Index(e.Metadata, []byte(`"hash":"`)) + 9
			e.Metadata = bytes.Clone(e.Metadata)
			e.Metadata[i] ^= 1
		}},
	} {
		t.Run(alter.name, func(t *testing.T) {
			tampered := append([]eventstore.RecordedEvent(nil), log...)
			target := 5
			tampered[target].Data, tampered[target].Metadata = bytes.Clone(log[target].Data), bytes.Clone(log[target].Metadata)
			alter.do(&tampered[target])
			_, err := verify(tampered)
			var ce *eventstore.ChainError
			if !errors.As(err, &ce) || ce.EventID != log[target].ID.String() || ce.Stream != log[target].StreamID || ce.Revision != log[target].Revision {
				t.Fatalf("verify = %v; want a chain error at event %s (%s@%d)", err, log[target].ID, log[target].StreamID, log[target].Revision)
			}
		})
	}
	t.Run("removed", func(t *testing.T) {
		tampered := append(append([]eventstore.RecordedEvent(nil), log[:4]...), log[5:]...)
		if _, err := verify(tampered); err == nil {
			t.Fatal("a log with an event removed verifies")
		}
	})
}

func TestEventsWrittenBeforeTheChainAreCoveredByTheFirstHashedOne(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	// Two events appended without a hash, as before the chain existed.
	if _, err := s.Append(ctx, "old-1", eventstore.NoStream,
		eventstore.EventData{ID: uuid.New(), Type: "A", Data: []byte(`1`), Metadata: []byte(`{"schema":1}`)},
		eventstore.EventData{ID: uuid.New(), Type: "A", Data: []byte(`2`), Metadata: []byte(`{"schema":1}`)}); err != nil {
		t.Fatal(err)
	}
	log := chainedLog(t, s, []string{"old-1"}, 2)
	v, err := verify(log)
	if err != nil || v.Unhashed != 2 || v.Hashed != 2 {
		t.Fatalf("verify = %v, %d unhashed, %d hashed; want 2 and 2", err, v.Unhashed, v.Hashed)
	}
	tampered := append([]eventstore.RecordedEvent(nil), log...)
	tampered[1].Data = []byte(`3`)
	_, err = verify(tampered)
	var ce *eventstore.ChainError
	if !errors.As(err, &ce) || ce.Revision != 2 {
		t.Fatalf("verify = %v; want the first hashed event (revision 2) named", err)
	}
	// Stripping the hash of an event after the chain began is refused.
	tampered = append([]eventstore.RecordedEvent(nil), log...)
	tampered[3].Metadata, _, _ = eventstore.SplitHash(log[3].Metadata)
	if _, err := verify(tampered); !errors.As(err, &ce) || ce.Revision != 3 {
		t.Fatalf("verify = %v; want revision 3 named", err)
	}
}
