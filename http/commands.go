package http

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/google/uuid"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/domain/secretbox"
	"github.com/mysafe/mysafe/eventstore"
)

// commands runs domain decisions against the event store: load the stream,
// fold, decide, append with the expected revision, retry on conflict. It
// is the only writer of the log.
type commands struct {
	store      eventstore.Store
	keys       *secretbox.Keyring
	knownUsers sync.Map  // user ID → struct{}; users already registered
	folds      foldCache // recent secrets' folded states (foldcache.go)
}

// request is what a command needs to know about the HTTP request: the
// metadata every event records and the client's idempotency key.
type request struct {
	meta           domain.Meta
	idempotencyKey string
	route          string // e.g. "PUT /api/v1/secrets/:id/shares"
}

// idempotencyNamespace scopes the UUIDs derived from idempotency keys.
var idempotencyNamespace = uuid.MustParse("5f0e7d0c-6a64-4b8e-9a57-6b6f2d1b9f3e")

// derivedID names the n-th thing a request creates. With an idempotency key
// the same request always derives the same IDs, so a retry appends nothing
// twice; keys are scoped to the caller and the route.
func (r request) derivedID(what string) func(i int) uuid.UUID {
	if r.idempotencyKey == "" {
		return nil
	}
	return func(i int) uuid.UUID {
		return uuid.NewSHA1(idempotencyNamespace, []byte(r.meta.Actor.ID+"\n"+r.route+"\n"+r.idempotencyKey+"\n"+what+"\n"+strconv.Itoa(i)))
	}
}

// encode turns domain events into event data for the store.
func encode(events []domain.Event) ([]eventstore.EventData, error) {
	out := make([]eventstore.EventData, len(events))
	for i, e := range events {
		typ, data, meta, err := domain.Encode(e)
		if err != nil {
			return nil, err
		}
		out[i] = eventstore.EventData{Type: typ, Data: data, Metadata: meta}
	}
	return out, nil
}

// foldSecret rebuilds a secret's state from its stream.
func foldSecret(secretID string, history []eventstore.RecordedEvent) (domain.Secret, error) {
	s := domain.Secret{ID: secretID}
	for _, r := range history {
		e, err := domain.Decode(r.Type, r.Data, r.Metadata)
		if err != nil {
			return s, err
		}
		s.Apply(e)
	}
	return s, nil
}

// secretOutcome is what a secret command did.
type secretOutcome struct {
	eventstore.AppendResult
	state  domain.Secret  // the state the decision was made on
	events []domain.Event // the events decided; nil when replayed
}

// onSecret runs a command on a secret. ifMatch, when set, is the revision
// the client last saw; if the stream moved on, nothing is appended.
func (c *commands) onSecret(ctx context.Context, req request, secretID string, cmd any, ifMatch *uint64) (secretOutcome, error) {
	var out secretOutcome
	res, err := eventstore.Execute(ctx, c.store, eventstore.Command{
		Stream:  domain.SecretStream(secretID),
		EventID: req.derivedID("event"),
		Decide: func(history []eventstore.RecordedEvent) ([]eventstore.EventData, error) {
			s, err := c.folds.fold(secretID, history)
			if err != nil {
				return nil, err
			}
			// Group members' permissions come from the groups' streams,
			// read afresh on every attempt.
			if _, err := c.resolveGroups(ctx, &s); err != nil {
				return nil, err
			}
			events, err := domain.DecideSecret(s, cmd, req.meta)
			if err != nil {
				return nil, err
			}
			if ifMatch != nil && len(history) > 0 && history[len(history)-1].Revision != *ifMatch {
				return nil, domain.Errorf(domain.PreconditionFailed, "secret %s is at revision %d, not %d as If-Match says; reload it and try again",
					secretID, history[len(history)-1].Revision, *ifMatch)
			}
			out.state, out.events = s, events
			return encode(events)
		},
	})
	out.AppendResult = res
	return out, err
}

// loadSecret folds a secret's stream as it is now, with the members of the
// groups it is shared with (see resolveGroups) and the position of its last
// event.
func (c *commands) loadSecret(ctx context.Context, secretID string) (domain.Secret, eventstore.Position, error) {
	s, _, pos, err := c.loadSecretAndGroups(ctx, secretID)
	return s, pos, err
}

// loadSecretAndGroups is loadSecret that also returns the groups the
// secret is shared with, by ID.
func (c *commands) loadSecretAndGroups(ctx context.Context, secretID string) (domain.Secret, map[string]domain.Group, eventstore.Position, error) {
	s, pos, err := c.folds.load(ctx, c.store, secretID)
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return domain.Secret{ID: secretID}, nil, eventstore.Start, nil
	}
	if err != nil {
		return domain.Secret{}, nil, eventstore.Start, err
	}
	groups, err := c.resolveGroups(ctx, &s)
	return s, groups, pos, err
}

// dataKey returns a secret's data key, issuing and storing one the first
// time. A retried create finds the key its first attempt stored.
func (c *commands) dataKey(ctx context.Context, secretID string) ([]byte, error) {
	stream := domain.SecretKeyStream(secretID)
	for range 2 {
		history, err := c.store.ReadStream(ctx, stream, eventstore.ReadStreamOptions{})
		switch {
		case err == nil:
			e, err := domain.Decode(history[0].Type, history[0].Data, history[0].Metadata)
			if err != nil {
				return nil, err
			}
			issued, ok := e.Payload.(domain.SecretKeyIssued)
			if !ok {
				return nil, domain.Errorf(domain.Other, "stream %s starts with %s, not SecretKeyIssued", stream, e.Type())
			}
			return c.keys.Unwrap(secretID, issued.WrappedKey)
		case errors.Is(err, eventstore.ErrStreamDeleted):
			return nil, domain.Errorf(domain.NotFound, "the key of secret %s was shredded; its values are gone for good", secretID)
		case !errors.Is(err, eventstore.ErrStreamNotFound):
			return nil, err
		}
		key, wrapped, err := c.keys.NewDataKey(secretID)
		if err != nil {
			return nil, err
		}
		data, err := encode([]domain.Event{{Payload: domain.SecretKeyIssued{WrappedKey: wrapped}}})
		if err != nil {
			return nil, err
		}
		data[0].ID = uuid.New()
		if err := eventstore.Chain(stream, nil, data); err != nil { // the first of its stream
			return nil, err
		}
		_, err = c.store.Append(ctx, stream, eventstore.NoStream, data...)
		if errors.Is(err, eventstore.ErrConflict) {
			continue // another request issued it first: use theirs
		}
		return key, err
	}
	return nil, domain.Errorf(domain.Other, "the key of secret %s could not be read nor issued", secretID)
}

// seal encrypts a client secret for the secret's events.
func (c *commands) seal(ctx context.Context, secretID, plaintext string) ([]byte, error) {
	key, err := c.dataKey(ctx, secretID)
	if err != nil {
		return nil, err
	}
	return secretbox.Seal(key, secretID, []byte(plaintext))
}

// unseal decrypts a client secret sealed by seal.
func (c *commands) unseal(ctx context.Context, secretID string, sealed []byte) (string, error) {
	if len(sealed) == 0 {
		return "", nil
	}
	key, err := c.dataKey(ctx, secretID)
	if err != nil {
		return "", err
	}
	plaintext, err := secretbox.Open(key, secretID, sealed)
	return string(plaintext), err
}

// RegisterUser records the user the first time their token is seen.
func (c *commands) RegisterUser(ctx context.Context, req request, id Identity) error {
	if _, known := c.knownUsers.Load(id.UserID); known {
		return nil
	}
	_, err := eventstore.Execute(ctx, c.store, eventstore.Command{
		Stream: domain.UserStream(id.UserID),
		Decide: func(history []eventstore.RecordedEvent) ([]eventstore.EventData, error) {
			var u domain.UserRecord
			for _, r := range history {
				e, err := domain.Decode(r.Type, r.Data, r.Metadata)
				if err != nil {
					return nil, err
				}
				u.Apply(e)
			}
			events, err := domain.DecideUser(u, domain.RegisterUser{UserID: id.UserID, Name: id.Name, Email: id.Email}, req.meta)
			if err != nil {
				return nil, err
			}
			return encode(events)
		},
	})
	if err == nil {
		c.knownUsers.Store(id.UserID, struct{}{})
	}
	return err
}

// requireKnownPrincipals checks that every grantee, user or group, exists,
// naming the first that does not: a share with a typo must not create a
// dangling grant.
func (c *commands) requireKnownPrincipals(ctx context.Context, grants []domain.Grant) error {
	for i, g := range grants {
		field := "grants[" + strconv.Itoa(i) + "].principal"
		if err := g.Principal.Validate(field); err != nil {
			return err
		}
		var err error
		if g.Principal.Type == domain.PrincipalGroup {
			err = c.requireKnownGroup(ctx, field+".id", g.Principal.ID)
		} else {
			err = c.requireKnownUser(ctx, field+".id", g.Principal.ID)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// requireKnownUser checks that a user is known: registered when their token
// was first seen, or imported by an administrator.
func (c *commands) requireKnownUser(ctx context.Context, field, userID string) error {
	if _, known := c.knownUsers.Load(userID); known {
		return nil
	}
	_, err := c.store.ReadStream(ctx, domain.UserStream(userID), eventstore.ReadStreamOptions{Max: 1})
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return domain.InvalidField(field, "%s is not a known principal; a user is known once they have used their token or an administrator has imported them", domain.User(userID))
	}
	return err
}
