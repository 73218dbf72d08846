package domain

import (
	"slices"
	"time"
)

// Access history answers "who could read this secret at instant T?" by
// folding the secret's events: each principal's grant becomes intervals
// [grantedAt, revokedAt) with every change inside them and who made it.
//
// Time is the events' recorded time (Meta.At). Events are folded in stream
// order, and an event's time is taken as no earlier than the one before it
// (two requests racing for one stream may record times a few milliseconds
// out of order; the stream's order is the order that took effect), so
// intervals never run backwards. An instant T sees every event whose time
// is at or before T: a grant made at T is in force at T, one revoked at T is
// not.
//
// Group grants reach users through group membership, which a Membership
// supplies; the secret's own events say nothing about who is in a group.

// Span is the half-open interval [From, To); a zero To means still open.
type Span struct {
	From time.Time
	To   time.Time
}

// Contains reports whether t falls in the span.
func (s Span) Contains(t time.Time) bool {
	return !t.Before(s.From) && (s.To.IsZero() || t.Before(s.To))
}

// Membership tells over which spans a user was a member of a group. A nil
// Membership reaches nobody through groups.
type Membership func(groupID, userID string) []Span

// AccessChange is one event that changed a principal's grant.
type AccessChange struct {
	Type     string     `json:"type"` // ShareGranted, SharePermissionChanged or ShareRevoked
	At       time.Time  `json:"at"`
	Actor    Actor      `json:"actor"`
	Revision uint64     `json:"revision"`
	Before   Permission `json:"before"`
	After    Permission `json:"after"`
}

// AccessInterval is one continuous period during which a principal held a
// grant on a secret, whatever its permission did meanwhile.
type AccessInterval struct {
	Principal Principal `json:"principal"`
	GrantedAt time.Time `json:"grantedAt"`
	// RevokedAt is nil while the grant is in force.
	RevokedAt *time.Time     `json:"revokedAt"`
	Changes   []AccessChange `json:"changes"`
}

// Span is the interval as a Span.
func (iv AccessInterval) Span() Span {
	s := Span{From: iv.GrantedAt}
	if iv.RevokedAt != nil {
		s.To = *iv.RevokedAt
	}
	return s
}

// GrantAt is a grant as it stood at an instant.
type GrantAt struct {
	Principal  Principal  `json:"principal"`
	Permission Permission `json:"permission"`
	GrantedAt  time.Time  `json:"grantedAt"`
	GrantedBy  Actor      `json:"grantedBy"`
	// ChangedAt and ChangedBy are of the change that set Permission: the
	// grant itself, or the last permission change before the instant.
	ChangedAt time.Time `json:"changedAt"`
	ChangedBy Actor     `json:"changedBy"`
}

// at is the grant as the interval stood at t; ok is false outside it.
func (iv AccessInterval) at(t time.Time) (GrantAt, bool) {
	if !iv.Span().Contains(t) {
		return GrantAt{}, false
	}
	first := iv.Changes[0]
	g := GrantAt{Principal: iv.Principal, GrantedAt: iv.GrantedAt, GrantedBy: first.Actor}
	for _, c := range iv.Changes {
		if c.At.After(t) || c.Type == "ShareRevoked" {
			break
		}
		g.Permission, g.ChangedAt, g.ChangedBy = c.After, c.At, c.Actor
	}
	return g, true
}

// SecretAccess is the access history of one secret. Build it with
// NewSecretAccess and Apply, or FoldAccess.
type SecretAccess struct {
	SecretID  string
	Owner     string
	CreatedAt time.Time // zero until SecretCreated is applied
	// Intervals are in the order they began.
	Intervals []AccessInterval
	// Disabled are the spans during which the secret was disabled.
	Disabled []Span

	open  map[Principal]int // principal → index of its open interval
	clock time.Time         // the time of the last event folded
}

// NewSecretAccess starts the access history of a secret.
func NewSecretAccess(secretID string) *SecretAccess {
	return &SecretAccess{SecretID: secretID, open: map[Principal]int{}}
}

// FoldAccess folds a secret's events, in stream order from revision 0.
func FoldAccess(secretID string, events []Event) *SecretAccess {
	a := NewSecretAccess(secretID)
	for i, e := range events {
		a.Apply(uint64(i), e)
	}
	return a
}

// Time is the time Apply gives an event after those already folded: its
// recorded time, or the previous event's if that is later.
func (a *SecretAccess) Time(e Event) time.Time {
	if e.At.Before(a.clock) {
		return a.clock
	}
	return e.At.UTC()
}

// Apply folds the event at this revision of the secret's stream.
func (a *SecretAccess) Apply(revision uint64, e Event) {
	t := a.Time(e)
	a.clock = t
	change := func(typ string, p Principal, before, after Permission) {
		c := AccessChange{Type: typ, At: t, Actor: e.Actor, Revision: revision, Before: before, After: after}
		i, ok := a.open[p]
		if !ok {
			a.Intervals = append(a.Intervals, AccessInterval{Principal: p, GrantedAt: t})
			i = len(a.Intervals) - 1
			a.open[p] = i
		}
		iv := &a.Intervals[i]
		iv.Changes = append(iv.Changes, c)
		if typ == "ShareRevoked" {
			iv.RevokedAt = &t
			delete(a.open, p)
		}
	}
	switch p := e.Payload.(type) {
	case SecretCreated:
		a.Owner, a.CreatedAt = p.Owner, t
	case ShareGranted:
		change(p.EventType(), p.Principal, Permission{}, p.Permission)
	case SharePermissionChanged:
		change(p.EventType(), p.Principal, p.Before, p.After)
	case ShareRevoked:
		if _, ok := a.open[p.Principal]; ok {
			change(p.EventType(), p.Principal, p.Before, Permission{})
		}
	case SecretDisabled:
		if n := len(a.Disabled); n == 0 || !a.Disabled[n-1].To.IsZero() {
			a.Disabled = append(a.Disabled, Span{From: t})
		}
	case SecretEnabled:
		if n := len(a.Disabled); n > 0 && a.Disabled[n-1].To.IsZero() {
			a.Disabled[n-1].To = t
		}
	}
}

// ExistedAt reports whether the secret had been created by t.
func (a *SecretAccess) ExistedAt(t time.Time) bool {
	return !a.CreatedAt.IsZero() && !t.Before(a.CreatedAt)
}

// DisabledAt reports whether the secret was disabled at t.
func (a *SecretAccess) DisabledAt(t time.Time) bool {
	return slices.ContainsFunc(a.Disabled, func(s Span) bool { return s.Contains(t) })
}

// GrantsAt lists the grants in force at t, in the order they began.
func (a *SecretAccess) GrantsAt(t time.Time) []GrantAt {
	var out []GrantAt
	for _, iv := range a.Intervals {
		if g, ok := iv.at(t); ok {
			out = append(out, g)
		}
	}
	return out
}

// IntervalsOf lists the intervals of one principal.
func (a *SecretAccess) IntervalsOf(p Principal) []AccessInterval {
	var out []AccessInterval
	for _, iv := range a.Intervals {
		if iv.Principal == p {
			out = append(out, iv)
		}
	}
	return out
}

// Ways a user reaches a secret.
const (
	ViaOwner = "owner"
	ViaUser  = "user"  // a grant to the user
	ViaGroup = "group" // a grant to a group the user was a member of
)

// Reach is one way a user could reach a secret at an instant.
type Reach struct {
	Via        string     `json:"via"`
	Permission Permission `json:"permission"`
	// Grant is the grant reached through; nil for the owner.
	Grant *GrantAt `json:"grant,omitempty"`
}

// UserAccessAt lists every way userID could reach the secret at t: as its
// owner, through a grant to them, through a grant to a group they were a
// member of at t. Empty means they could not read it.
func (a *SecretAccess) UserAccessAt(userID string, t time.Time, members Membership) []Reach {
	if !a.ExistedAt(t) {
		return nil
	}
	var out []Reach
	if a.Owner == userID {
		out = append(out, Reach{Via: ViaOwner, Permission: Permission{CanView: true, CanEdit: true}})
	}
	for _, g := range a.GrantsAt(t) {
		switch {
		case g.Principal == User(userID):
			out = append(out, Reach{Via: ViaUser, Permission: g.Permission, Grant: &g})
		case g.Principal.Type == PrincipalGroup && members != nil &&
			slices.ContainsFunc(members(g.Principal.ID, userID), func(s Span) bool { return s.Contains(t) }):
			out = append(out, Reach{Via: ViaGroup, Permission: g.Permission, Grant: &g})
		}
	}
	return out
}

// Union is the permission the reaches give together.
func Union(reaches []Reach) Permission {
	var p Permission
	for _, r := range reaches {
		p.CanView = p.CanView || r.Permission.CanView
		p.CanEdit = p.CanEdit || r.Permission.CanEdit
	}
	return p.Normalized()
}
