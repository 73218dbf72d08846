package domain

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/mail"
	"strings"
	"time"
)

// An external share hands one secret to a person without an account for a
// limited time: they get a link by e-mail, and each access needs a fresh
// one-time code sent to the same address. The share is its own aggregate
// (stream "extshare-<id>"); the secret's stream records that it was made
// (SecretSharedExternally), so the secret's history shows it.
//
// Neither the link's token nor a code is ever stored: events hold their
// SHA-256 hashes. A code's hash is bound to the token, so the log alone
// does not allow guessing codes offline.

// ExternalShareStreamPrefix is the category of external share streams.
const ExternalShareStreamPrefix = "extshare-"

// ExternalShareStream is the stream of one external share.
func ExternalShareStream(shareID string) string { return ExternalShareStreamPrefix + shareID }

// Rules of external shares.
const (
	// MaxExternalAccesses bounds a share's maximum number of accesses
	// (unless unlimited).
	MaxExternalAccesses = 1000
	// AccessCodeTTL is how long an access code stays valid.
	AccessCodeTTL = 10 * time.Minute
	// AccessCodeResendInterval is how soon after a code another one may be
	// sent, so that reloading the link page does not flood the mailbox.
	AccessCodeResendInterval = time.Minute
	// MaxWrongCodes wrong codes in a row lock the share (status Error).
	MaxWrongCodes  = 5
	maxEmailLength = 254
)

// ExternalShareStatus is the status the external share report shows.
type ExternalShareStatus string

const (
	ExternalShareApproved  ExternalShareStatus = "Approved"  // active
	ExternalShareFinished  ExternalShareStatus = "Finished"  // expired or accesses used up
	ExternalShareCancelled ExternalShareStatus = "Cancelled" // revoked
	ExternalShareError     ExternalShareStatus = "Error"     // locked after wrong codes
)

// ExternalShareTerms are what the sharer chooses.
type ExternalShareTerms struct {
	RecipientEmail string    `json:"recipientEmail"`
	ExpiresAt      time.Time `json:"expiresAt"`
	// MaxAccesses is nil for unlimited.
	MaxAccesses *int `json:"maxAccesses"`
}

// Normalize trims the terms and checks them against the time of the
// decision and the administrator's longest allowed duration (0: no cap).
func (t ExternalShareTerms) Normalize(now time.Time, maxDuration time.Duration) (ExternalShareTerms, error) {
	t.RecipientEmail = strings.TrimSpace(t.RecipientEmail)
	if err := ValidateEmail("recipientEmail", t.RecipientEmail, true); err != nil {
		return t, err
	}
	t.ExpiresAt = t.ExpiresAt.UTC()
	switch {
	case t.ExpiresAt.IsZero():
		return t, InvalidField("expiresAt", "is required")
	case !t.ExpiresAt.After(now):
		return t, InvalidField("expiresAt", "%s is not in the future", t.ExpiresAt.Format(time.RFC3339))
	case maxDuration > 0 && t.ExpiresAt.Sub(now) > maxDuration:
		return t, InvalidField("expiresAt", "%s is %s away; the administrator allows external shares of at most %s",
			t.ExpiresAt.Format(time.RFC3339), t.ExpiresAt.Sub(now).Round(time.Minute), maxDuration)
	}
	if t.MaxAccesses != nil && (*t.MaxAccesses < 1 || *t.MaxAccesses > MaxExternalAccesses) {
		return t, InvalidField("maxAccesses", "%d is not from 1 to %d; use null for unlimited", *t.MaxAccesses, MaxExternalAccesses)
	}
	return t, nil
}

// ValidateEmail checks a bare e-mail address (no display name).
func ValidateEmail(field, email string, required bool) error {
	if email == "" {
		if required {
			return InvalidField(field, "is required")
		}
		return nil
	}
	if len(email) > maxEmailLength {
		return InvalidField(field, "is %d characters long; at most %d are allowed", len(email), maxEmailLength)
	}
	if a, err := mail.ParseAddress(email); err != nil || a.Address != email {
		return InvalidField(field, "%q is not an e-mail address such as name@example.com", email)
	}
	return nil
}

// SecretSharedExternally records, in the secret's stream, that its owner
// created an external share.
type SecretSharedExternally struct {
	ShareID string `json:"shareId"`
	ExternalShareTerms
}

func (SecretSharedExternally) EventType() string { return "SecretSharedExternally" }

func (s *Secret) shareExternally(actor string, c ShareExternally, at time.Time) ([]Payload, error) {
	if s.Owner != actor {
		return nil, Errorf(Forbidden, "only the owner of secret %s may share it externally", s.ID)
	}
	if err := s.requireEnabled("shared"); err != nil {
		return nil, err
	}
	if c.ShareID == "" {
		return nil, Errorf(Other, "share externally: no share ID")
	}
	terms, err := c.Terms.Normalize(at, c.MaxDuration)
	if err != nil {
		return nil, err
	}
	return []Payload{SecretSharedExternally{ShareID: c.ShareID, ExternalShareTerms: terms}}, nil
}

// Events of an external share's stream.
type (
	// ExternalShareCreated starts the share: the link whose token hashes to
	// TokenHash now opens the secret under the terms.
	ExternalShareCreated struct {
		ShareID    string `json:"shareId"`
		SecretID   string `json:"secretId"`
		SecretName string `json:"secretName"`
		Sharer     string `json:"sharer"`
		ExternalShareTerms
		TokenHash string `json:"tokenHash"`
	}
	// ExternalShareLinkResent replaces the link: the old one stops working.
	ExternalShareLinkResent struct {
		TokenHash string `json:"tokenHash"`
	}
	// ExternalShareCodeSent records a one-time code e-mailed to the
	// recipient, valid until ExpiresAt.
	ExternalShareCodeSent struct {
		CodeHash  string    `json:"codeHash"`
		ExpiresAt time.Time `json:"expiresAt"`
	}
	// ExternalShareCodeRejected records a wrong code; WrongCodes counts
	// them since the last access.
	ExternalShareCodeRejected struct {
		WrongCodes int `json:"wrongCodes"`
	}
	// ExternalShareAccessed is recorded before the secret is shown to the
	// recipient. Remaining is nil when accesses are unlimited.
	ExternalShareAccessed struct {
		Accesses  int  `json:"accesses"`
		Remaining *int `json:"remaining"`
	}
	// ExternalShareExhausted: the last access was used (status Finished).
	ExternalShareExhausted struct{}
	// ExternalShareExpired: the expiry passed (status Finished).
	ExternalShareExpired struct{}
	// ExternalShareRevoked: the sharer or an administrator revoked the
	// share; its expiry moves to the moment of revocation (status
	// Cancelled).
	ExternalShareRevoked struct {
		ExpiresAt time.Time `json:"expiresAt"`
	}
	// ExternalShareLocked: too many wrong codes (status Error).
	ExternalShareLocked struct {
		WrongCodes int `json:"wrongCodes"`
	}
)

func (ExternalShareCreated) EventType() string      { return "ExternalShareCreated" }
func (ExternalShareLinkResent) EventType() string   { return "ExternalShareLinkResent" }
func (ExternalShareCodeSent) EventType() string     { return "ExternalShareCodeSent" }
func (ExternalShareCodeRejected) EventType() string { return "ExternalShareCodeRejected" }
func (ExternalShareAccessed) EventType() string     { return "ExternalShareAccessed" }
func (ExternalShareExhausted) EventType() string    { return "ExternalShareExhausted" }
func (ExternalShareExpired) EventType() string      { return "ExternalShareExpired" }
func (ExternalShareRevoked) EventType() string      { return "ExternalShareRevoked" }
func (ExternalShareLocked) EventType() string       { return "ExternalShareLocked" }

// HashLinkToken is what the log keeps of a link's token.
func HashLinkToken(token string) string {
	sum := sha256.Sum256([]byte("mysafe external share link\x00" + token))
	return hex.EncodeToString(sum[:])
}

// HashAccessCode is what the log keeps of an access code: bound to the
// link's token, which the log does not hold.
func HashAccessCode(token, code string) string {
	sum := sha256.Sum256([]byte("mysafe external share code\x00" + token + "\x00" + code))
	return hex.EncodeToString(sum[:])
}

func sameHash(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// ExternalShare is the state of one external share, folded from its stream.
// Start from ExternalShare{ID: id}.
type ExternalShare struct {
	ID         string
	created    bool
	SecretID   string
	SecretName string
	Sharer     string
	ExternalShareTerms
	CreatedAt  time.Time
	Accesses   int
	Status     ExternalShareStatus
	tokenHash  string
	code       *pendingCode
	wrongCodes int
	exhausted  bool // Finished because the accesses ran out, not the time
}

type pendingCode struct {
	hash              string
	sentAt, expiresAt time.Time
}

// Exists reports whether the share has been created.
func (x *ExternalShare) Exists() bool { return x.created }

// Apply folds one event into the state.
func (x *ExternalShare) Apply(e Event) {
	switch p := e.Payload.(type) {
	case ExternalShareCreated:
		*x = ExternalShare{ID: p.ShareID, created: true, SecretID: p.SecretID, SecretName: p.SecretName, Sharer: p.Sharer,
			ExternalShareTerms: p.ExternalShareTerms, CreatedAt: e.At, Status: ExternalShareApproved, tokenHash: p.TokenHash}
	case ExternalShareLinkResent:
		x.tokenHash, x.code = p.TokenHash, nil
	case ExternalShareCodeSent:
		x.code = &pendingCode{hash: p.CodeHash, sentAt: e.At, expiresAt: p.ExpiresAt}
	case ExternalShareCodeRejected:
		x.wrongCodes = p.WrongCodes
	case ExternalShareAccessed:
		x.Accesses, x.code, x.wrongCodes = p.Accesses, nil, 0
	case ExternalShareExhausted:
		x.Status, x.exhausted, x.code = ExternalShareFinished, true, nil
	case ExternalShareExpired:
		x.Status, x.code = ExternalShareFinished, nil
	case ExternalShareRevoked:
		x.Status, x.ExpiresAt, x.code = ExternalShareCancelled, p.ExpiresAt, nil
	case ExternalShareLocked:
		x.Status, x.code = ExternalShareError, nil
	}
}

// Remaining is the number of accesses left; nil when unlimited.
func (x *ExternalShare) Remaining() *int {
	if x.MaxAccesses == nil {
		return nil
	}
	n := max(*x.MaxAccesses-x.Accesses, 0)
	return &n
}

// StatusAt is the status as of now: an approved share whose expiry has
// passed is Finished even before ExternalShareExpired is recorded.
func (x *ExternalShare) StatusAt(now time.Time) ExternalShareStatus {
	if x.Status == ExternalShareApproved && !now.Before(x.ExpiresAt) {
		return ExternalShareFinished
	}
	return x.Status
}

// Refusal says why the link cannot be used now; nil if it can.
func (x *ExternalShare) Refusal(now time.Time) error {
	when := x.ExpiresAt.UTC().Format(time.RFC3339)
	switch x.StatusAt(now) {
	case ExternalShareApproved:
		return nil
	case ExternalShareCancelled:
		return Errorf(Forbidden, "this link was revoked by its sender at %s", when)
	case ExternalShareError:
		return Errorf(Forbidden, "this link is locked after %d wrong codes; ask its sender for a new one", MaxWrongCodes)
	}
	if x.exhausted {
		return Errorf(Forbidden, "this link has been used its %d times; ask its sender for a new one", *x.MaxAccesses)
	}
	return Errorf(Forbidden, "this link expired at %s", when)
}

// CheckToken tells whether the token is this share's current link. A
// mismatch is NotFound: the caller learns nothing about the share.
func (x *ExternalShare) CheckToken(tokenHash string) error {
	if !x.created || !sameHash(x.tokenHash, tokenHash) {
		return Errorf(NotFound, "no such link; check that it was copied whole")
	}
	return nil
}

// Commands on an external share.
type (
	CreateExternalShare struct {
		ShareID    string
		SecretID   string
		SecretName string
		Terms      ExternalShareTerms // as recorded on the secret
		TokenHash  string
	}
	// ResendExternalShareLink issues a new link; ByAdmin is set when an
	// administrator, not the sharer, asks.
	ResendExternalShareLink struct {
		TokenHash string
		ByAdmin   bool
	}
	RevokeExternalShare struct{ ByAdmin bool }
	// SendAccessCode records a new code for the holder of the link.
	SendAccessCode struct{ TokenHash, CodeHash string }
	// OpenExternalShare spends one access with the code the recipient typed
	// (as HashAccessCode of it).
	OpenExternalShare struct{ TokenHash, CodeHash string }
	// ExpireExternalShare records the expiry once it has passed.
	ExpireExternalShare struct{}
)

// DecideExternalShare decides what a command does to an external share.
// Commands from the recipient carry the link's token hash and fail as
// NotFound unless it is the current one. A command on a share whose expiry
// has passed records ExternalShareExpired and nothing else; the caller then
// finds the share refused (Refusal).
func DecideExternalShare(x ExternalShare, cmd any, meta Meta) ([]Event, error) {
	payloads, err := decideExternalShare(&x, cmd, meta)
	if err != nil {
		return nil, err
	}
	events := make([]Event, len(payloads))
	for i, p := range payloads {
		events[i] = Event{Meta: meta, Payload: p}
	}
	return events, nil
}

func decideExternalShare(x *ExternalShare, cmd any, meta Meta) ([]Payload, error) {
	now, actor := meta.At, meta.Actor.ID
	if c, ok := cmd.(CreateExternalShare); ok {
		if x.Exists() {
			return nil, Errorf(Conflict, "external share %s already exists", x.ID)
		}
		if c.ShareID == "" || c.ShareID != x.ID || c.SecretID == "" || c.TokenHash == "" {
			return nil, Errorf(Other, "create external share: incomplete command for stream of %q", x.ID)
		}
		terms, err := c.Terms.Normalize(now, 0)
		if err != nil {
			return nil, err
		}
		return []Payload{ExternalShareCreated{ShareID: c.ShareID, SecretID: c.SecretID, SecretName: c.SecretName,
			Sharer: actor, ExternalShareTerms: terms, TokenHash: c.TokenHash}}, nil
	}
	if !x.Exists() {
		return nil, Errorf(NotFound, "external share %s not found", x.ID)
	}
	dueToExpire := x.Status == ExternalShareApproved && !now.Before(x.ExpiresAt)
	switch c := cmd.(type) {
	case ExpireExternalShare:
		if dueToExpire {
			return []Payload{ExternalShareExpired{}}, nil
		}
		return nil, nil
	case RevokeExternalShare:
		return x.manage(actor, c.ByAdmin, dueToExpire, ExternalShareRevoked{ExpiresAt: now})
	case ResendExternalShareLink:
		return x.manage(actor, c.ByAdmin, dueToExpire, ExternalShareLinkResent{TokenHash: c.TokenHash})
	case SendAccessCode:
		if err := x.CheckToken(c.TokenHash); err != nil {
			return nil, err
		}
		if dueToExpire {
			return []Payload{ExternalShareExpired{}}, nil
		}
		if err := x.Refusal(now); err != nil {
			return nil, err
		}
		if x.code != nil && now.Before(x.code.expiresAt) && now.Sub(x.code.sentAt) < AccessCodeResendInterval {
			return nil, nil // the code sent moments ago is still good
		}
		return []Payload{ExternalShareCodeSent{CodeHash: c.CodeHash, ExpiresAt: now.Add(AccessCodeTTL)}}, nil
	case OpenExternalShare:
		if err := x.CheckToken(c.TokenHash); err != nil {
			return nil, err
		}
		if dueToExpire {
			return []Payload{ExternalShareExpired{}}, nil
		}
		if err := x.Refusal(now); err != nil {
			return nil, err
		}
		switch {
		case x.code == nil:
			return nil, Errorf(Forbidden, "no code is waiting for this link; open the link to have one sent")
		case !now.Before(x.code.expiresAt):
			return nil, Errorf(Forbidden, "the code expired at %s; open the link again for a new one", x.code.expiresAt.UTC().Format(time.RFC3339))
		case !sameHash(x.code.hash, c.CodeHash):
			wrong := x.wrongCodes + 1
			out := []Payload{ExternalShareCodeRejected{WrongCodes: wrong}}
			if wrong >= MaxWrongCodes {
				out = append(out, ExternalShareLocked{WrongCodes: wrong})
			}
			return out, nil
		}
		accessed := ExternalShareAccessed{Accesses: x.Accesses + 1}
		if x.MaxAccesses != nil {
			remaining := *x.MaxAccesses - accessed.Accesses
			accessed.Remaining = &remaining
		}
		out := []Payload{accessed}
		if accessed.Remaining != nil && *accessed.Remaining == 0 {
			out = append(out, ExternalShareExhausted{})
		}
		return out, nil
	}
	return nil, Errorf(Other, "unknown command %T", cmd)
}

// manage decides a revoke or resend: the sharer's or an administrator's,
// on an active share.
func (x *ExternalShare) manage(actor string, byAdmin, dueToExpire bool, p Payload) ([]Payload, error) {
	if x.Sharer != actor && !byAdmin {
		return nil, Errorf(NotFound, "external share %s not found", x.ID)
	}
	if dueToExpire {
		return []Payload{ExternalShareExpired{}}, nil
	}
	if x.Status != ExternalShareApproved {
		return nil, Errorf(Conflict, "external share %s is %s; only an approved (active) share can be revoked or sent again", x.ID, x.Status)
	}
	return []Payload{p}, nil
}
