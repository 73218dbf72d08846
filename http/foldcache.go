package http

import (
	"context"
	"slices"
	"sync"

	"github.com/google/uuid"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// foldCache remembers, for recently used secrets, the state folded from
// their stream up to a revision, so that a command or a read decodes and
// folds only the events appended since. Without it every command decodes
// the secret's whole stream again, which grows with each share and unshare:
// mysafe bench measured the decoding at an eighth of all the CPU a share
// command costs with streams of about 15 events.
//
// The log is append-only: when the event at the remembered revision has
// the remembered ID, every event before it is the one that was folded.
// States go in and out as copies, so no caller shares a slice with the
// cache. The zero value is ready to use.
type foldCache struct {
	mu sync.Mutex
	m  map[string]foldedSecret
}

type foldedSecret struct {
	state domain.Secret
	rev   uint64              // revision of the last event folded into state
	id    uuid.UUID           // that event's ID
	pos   eventstore.Position // and its position in the log
}

// maxFoldedSecrets bounds the cache (about 1 KB per secret with a few
// grants); past it, an arbitrary tenth is forgotten.
const maxFoldedSecrets = 4096

// fold is foldSecret for a whole stream (history from revision 0),
// starting from the remembered state when there is one.
func (f *foldCache) fold(secretID string, history []eventstore.RecordedEvent) (domain.Secret, error) {
	f.mu.Lock()
	c, ok := f.m[secretID]
	f.mu.Unlock()
	s, from := domain.Secret{ID: secretID}, 0
	if ok && c.rev < uint64(len(history)) && history[c.rev].Revision == c.rev && history[c.rev].ID == c.id {
		s, from = copySecret(c.state), int(c.rev)+1
	}
	for _, r := range history[from:] {
		e, err := domain.Decode(r.Type, r.Data, r.Metadata)
		if err != nil {
			return s, err
		}
		s.Apply(e)
	}
	if n := len(history); n > 0 && from < n {
		last := history[n-1]
		f.put(secretID, foldedSecret{state: copySecret(s), rev: last.Revision, id: last.ID, pos: last.Position})
	}
	return s, nil
}

// load reads and folds a secret's stream as it is now, with the position of
// its last event. When the secret is remembered, it reads only from the
// remembered revision on: a read of a secret that did not change reads one
// event, not the whole stream. A stream with no events is
// eventstore.ErrStreamNotFound, as from the store.
func (f *foldCache) load(ctx context.Context, store eventstore.Store, secretID string) (domain.Secret, eventstore.Position, error) {
	stream := domain.SecretStream(secretID)
	f.mu.Lock()
	c, ok := f.m[secretID]
	f.mu.Unlock()
	if ok {
		tail, err := store.ReadStream(ctx, stream, eventstore.ReadStreamOptions{From: c.rev})
		if err != nil {
			return domain.Secret{}, eventstore.Start, err
		}
		if len(tail) > 0 && tail[0].Revision == c.rev && tail[0].ID == c.id {
			s := copySecret(c.state)
			for _, r := range tail[1:] {
				e, err := domain.Decode(r.Type, r.Data, r.Metadata)
				if err != nil {
					return domain.Secret{}, eventstore.Start, err
				}
				s.Apply(e)
			}
			last := tail[len(tail)-1]
			if len(tail) > 1 {
				f.put(secretID, foldedSecret{state: copySecret(s), rev: last.Revision, id: last.ID, pos: last.Position})
			}
			return s, last.Position, nil
		}
	}
	history, err := store.ReadStream(ctx, stream, eventstore.ReadStreamOptions{})
	if err != nil {
		return domain.Secret{}, eventstore.Start, err
	}
	s, err := f.fold(secretID, history)
	return s, history[len(history)-1].Position, err
}

func (f *foldCache) put(secretID string, c foldedSecret) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]foldedSecret{}
	}
	if len(f.m) >= maxFoldedSecrets {
		n := 0
		for id := range f.m { // map order is arbitrary
			delete(f.m, id)
			if n++; n >= maxFoldedSecrets/10 {
				break
			}
		}
	}
	f.m[secretID] = c
}

// copySecret copies a state deeply enough that folding more events into
// either copy, or a caller editing its slices, leaves the other as it was
// (Apply edits Grants in place).
func copySecret(s domain.Secret) domain.Secret {
	s.Grants = slices.Clone(s.Grants)
	s.Fields.Tags = slices.Clone(s.Fields.Tags)
	s.SealedClientSecret = slices.Clone(s.SealedClientSecret)
	return s
}
