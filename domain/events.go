// Package domain holds mysafe's aggregates, commands, events and rules.
//
// It is pure: Decide functions take the state folded from past events, a
// command and the event metadata (who, when, from where) and return new
// events or an error; Apply folds an event into state. No I/O, no clock, no
// randomness: callers pass time in and encrypt values before they get here.
package domain

import (
	"encoding/json"
	"fmt"
	"time"
)

// SchemaVersion is written into every event's metadata. Decoding keeps
// accepting every older version (see the golden fixtures in testdata/).
const SchemaVersion = 1

// Stream names. The prefix of a stream name is its category; subscriptions
// select categories by prefix.
const (
	SecretStreamPrefix    = "secret-"
	SecretKeyStreamPrefix = "secretkey-"
	UserStreamPrefix      = "user-"
)

// SecretStream is the stream of one API secret.
func SecretStream(secretID string) string { return SecretStreamPrefix + secretID }

// SecretKeyStream holds the wrapped data key of one secret. Deleting it
// shreds the secret's encrypted values for good.
func SecretKeyStream(secretID string) string { return SecretKeyStreamPrefix + secretID }

// UserStream is the stream of one user's directory record.
func UserStream(userID string) string { return UserStreamPrefix + userID }

// Actor is who caused an event.
type Actor struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// Meta is what every event records besides its payload.
type Meta struct {
	Schema        int       `json:"schema"`
	Actor         Actor     `json:"actor"`
	At            time.Time `json:"at"`
	CorrelationID string    `json:"correlationId,omitempty"`
	ClientIP      string    `json:"ip,omitempty"`
	UserAgent     string    `json:"userAgent,omitempty"`
}

// Payload is the type-specific part of an event.
type Payload interface {
	// EventType is the event's stable name in the log. It never changes,
	// whatever the Go type is called.
	EventType() string
}

// Event is a payload with its metadata.
type Event struct {
	Meta
	Payload Payload
}

// Type is the event's stable name.
func (e Event) Type() string { return e.Payload.EventType() }

// SecretFields are the visible fields of an API secret: everything but the
// client secret.
type SecretFields struct {
	Name       string   `json:"name"`
	URL        string   `json:"url"`
	ClientID   string   `json:"clientId"`
	Identifier string   `json:"identifier,omitempty"`
	Method     string   `json:"method,omitempty"`
	Tags       []string `json:"tags,omitempty"`
	Notes      string   `json:"notes,omitempty"`
}

// SecretCreated starts a secret's stream.
type SecretCreated struct {
	SecretID string       `json:"secretId"`
	Owner    string       `json:"owner"`
	Fields   SecretFields `json:"fields"`
	// SealedClientSecret is the client secret encrypted with the secret's
	// data key; empty when the secret has none.
	SealedClientSecret []byte `json:"sealedClientSecret,omitempty"`
}

// SecretUpdated records changed fields: Fields holds all visible fields
// after the change, Changed names those that differ.
type SecretUpdated struct {
	Fields             SecretFields `json:"fields"`
	Changed            []string     `json:"changed"`
	SealedClientSecret []byte       `json:"sealedClientSecret,omitempty"`
}

type SecretDisabled struct{}
type SecretEnabled struct{}

// ShareGranted gives a principal access.
type ShareGranted struct {
	Principal  Principal  `json:"principal"`
	Permission Permission `json:"permission"`
}

// SharePermissionChanged changes an existing grant.
type SharePermissionChanged struct {
	Principal Principal  `json:"principal"`
	Before    Permission `json:"before"`
	After     Permission `json:"after"`
}

// ShareRevoked takes a grant back (unshare).
type ShareRevoked struct {
	Principal Principal  `json:"principal"`
	Before    Permission `json:"before"`
}

// SecretRevealed is recorded before a client secret is shown.
type SecretRevealed struct{}

// SecretCopied is recorded before a field's value is handed out for copying.
type SecretCopied struct {
	Field string `json:"field"`
}

// UserRegistered records a user the first time their token is seen.
type UserRegistered struct {
	UserID string `json:"userId"`
	Name   string `json:"name,omitempty"`
	Email  string `json:"email,omitempty"`
}

// SecretKeyIssued holds a secret's data key, wrapped by the master key.
type SecretKeyIssued struct {
	WrappedKey []byte `json:"wrappedKey"`
}

func (SecretCreated) EventType() string          { return "SecretCreated" }
func (SecretUpdated) EventType() string          { return "SecretUpdated" }
func (SecretDisabled) EventType() string         { return "SecretDisabled" }
func (SecretEnabled) EventType() string          { return "SecretEnabled" }
func (ShareGranted) EventType() string           { return "ShareGranted" }
func (SharePermissionChanged) EventType() string { return "SharePermissionChanged" }
func (ShareRevoked) EventType() string           { return "ShareRevoked" }
func (SecretRevealed) EventType() string         { return "SecretRevealed" }
func (SecretCopied) EventType() string           { return "SecretCopied" }
func (UserRegistered) EventType() string         { return "UserRegistered" }
func (SecretKeyIssued) EventType() string        { return "SecretKeyIssued" }

// decoders maps each stable event name to its payload decoder.
var decoders = map[string]func(data []byte) (Payload, error){}

func init() {
	register[SecretCreated]()
	register[SecretUpdated]()
	register[SecretDisabled]()
	register[SecretEnabled]()
	register[ShareGranted]()
	register[SharePermissionChanged]()
	register[ShareRevoked]()
	register[SecretRevealed]()
	register[SecretCopied]()
	register[UserRegistered]()
	register[SecretKeyIssued]()

	// Groups, the directory and external shares (group.go, user.go,
	// extshare.go).
	register[GroupCreated]()
	register[GroupUpdated]()
	register[GroupMemberAdded]()
	register[GroupMemberRemoved]()
	register[GroupDisabled]()
	register[GroupEnabled]()
	register[UserUpdated]()
	register[SecretSharedExternally]()
	register[ExternalShareCreated]()
	register[ExternalShareLinkResent]()
	register[ExternalShareCodeSent]()
	register[ExternalShareCodeRejected]()
	register[ExternalShareAccessed]()
	register[ExternalShareExhausted]()
	register[ExternalShareExpired]()
	register[ExternalShareRevoked]()
	register[ExternalShareLocked]()
}

func register[P Payload]() {
	var zero P
	decoders[zero.EventType()] = func(data []byte) (Payload, error) {
		var p P
		err := json.Unmarshal(data, &p)
		return p, err
	}
}

// Encode turns an event into its stored form: type name, JSON data and
// JSON metadata.
func Encode(e Event) (eventType string, data, meta []byte, err error) {
	if data, err = json.Marshal(e.Payload); err != nil {
		return "", nil, nil, fmt.Errorf("encode %s: %w", e.Type(), err)
	}
	m := e.Meta
	m.Schema = SchemaVersion
	if meta, err = json.Marshal(m); err != nil {
		return "", nil, nil, fmt.Errorf("encode %s metadata: %w", e.Type(), err)
	}
	return e.Type(), data, meta, nil
}

// Decode reads an event in its stored form. Payloads are values, not
// pointers, so callers switch on value types.
func Decode(eventType string, data, meta []byte) (Event, error) {
	decode, ok := decoders[eventType]
	if !ok {
		return Event{}, fmt.Errorf("decode: unknown event type %q", eventType)
	}
	p, err := decode(data)
	if err != nil {
		return Event{}, fmt.Errorf("decode %s: %w", eventType, err)
	}
	var m Meta
	if len(meta) > 0 {
		if err := json.Unmarshal(meta, &m); err != nil {
			return Event{}, fmt.Errorf("decode %s metadata: %w", eventType, err)
		}
	}
	return Event{Meta: m, Payload: p}, nil
}

// IsKnownEventType reports whether the domain can decode events of this type.
func IsKnownEventType(eventType string) bool {
	_, ok := decoders[eventType]
	return ok
}

// PublicData is an event's payload as history and exports show it: sealed
// values and wrapped keys are left out, whether a client secret was set is
// kept as clientSecretSet.
func PublicData(e Event) map[string]any {
	p, sealed := e.Payload, false
	switch v := p.(type) {
	case SecretCreated:
		sealed, v.SealedClientSecret = v.SealedClientSecret != nil, nil
		p = v
	case SecretUpdated:
		sealed, v.SealedClientSecret = v.SealedClientSecret != nil, nil
		p = v
	case SecretKeyIssued:
		p = SecretKeyIssued{}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return map[string]any{}
	}
	out := map[string]any{}
	_ = json.Unmarshal(b, &out) // a payload marshals to an object
	delete(out, "wrappedKey")
	// An external share's link token and access codes are kept as hashes
	// only; even those stay out of history and exports.
	delete(out, "tokenHash")
	delete(out, "codeHash")
	if sealed {
		out["clientSecretSet"] = true
	}
	return out
}
