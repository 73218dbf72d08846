package domain

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on an API secret's fields.
const (
	MaxNameLength         = 100
	MaxTags               = 20
	MaxTagLength          = 64
	MaxNotesLength        = 2000
	MaxClientIDLength     = 1000
	MaxIdentifierLength   = 200
	MaxURLLength          = 2048
	MaxClientSecretLength = 10000
)

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}

// CopyableFields are the fields a user may copy; copying is audited.
var CopyableFields = []string{"name", "url", "clientId", "clientSecret", "identifier"}

// Visible returns the value of a copyable visible field; ok is false for
// the client secret, which is sealed and must be opened by the caller, and
// for a field that cannot be copied.
func (f SecretFields) Visible(field string) (value string, ok bool) {
	switch field {
	case "name":
		return f.Name, true
	case "url":
		return f.URL, true
	case "clientId":
		return f.ClientID, true
	case "identifier":
		return f.Identifier, true
	}
	return "", false
}

// Normalize trims the fields and checks every rule, naming the first field
// that breaks one.
func (f SecretFields) Normalize() (SecretFields, error) {
	f.Name = strings.TrimSpace(f.Name)
	f.URL = strings.TrimSpace(f.URL)
	f.ClientID = strings.TrimSpace(f.ClientID)
	f.Identifier = strings.TrimSpace(f.Identifier)
	f.Method = strings.ToUpper(strings.TrimSpace(f.Method))
	switch {
	case f.Name == "":
		return f, InvalidField("name", "is required")
	case utf8.RuneCountInString(f.Name) > MaxNameLength:
		return f, InvalidField("name", "is %d characters long; at most %d are allowed", utf8.RuneCountInString(f.Name), MaxNameLength)
	case f.URL == "":
		return f, InvalidField("url", "is required")
	case len(f.URL) > MaxURLLength:
		return f, InvalidField("url", "is %d characters long; at most %d are allowed", len(f.URL), MaxURLLength)
	case f.ClientID == "":
		return f, InvalidField("clientId", "is required")
	case utf8.RuneCountInString(f.ClientID) > MaxClientIDLength:
		return f, InvalidField("clientId", "is %d characters long; at most %d are allowed", utf8.RuneCountInString(f.ClientID), MaxClientIDLength)
	case utf8.RuneCountInString(f.Identifier) > MaxIdentifierLength:
		return f, InvalidField("identifier", "is %d characters long; at most %d are allowed", utf8.RuneCountInString(f.Identifier), MaxIdentifierLength)
	case f.Method != "" && !slices.Contains(httpMethods, f.Method):
		return f, InvalidField("method", "%q is not an HTTP method; want one of %s", f.Method, strings.Join(httpMethods, ", "))
	case utf8.RuneCountInString(f.Notes) > MaxNotesLength:
		return f, InvalidField("notes", "is %d characters long; at most %d are allowed", utf8.RuneCountInString(f.Notes), MaxNotesLength)
	}
	if u, err := url.Parse(f.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return f, InvalidField("url", "%q is not an absolute http or https URL, such as https://api.example.com", f.URL)
	}
	tags := make([]string, 0, len(f.Tags))
	for _, t := range f.Tags {
		t = strings.TrimSpace(t)
		switch {
		case t == "":
			return f, InvalidField("tags", "a tag is empty")
		case utf8.RuneCountInString(t) > MaxTagLength:
			return f, InvalidField("tags", "tag %q is %d characters long; at most %d are allowed", t, utf8.RuneCountInString(t), MaxTagLength)
		case !slices.Contains(tags, t):
			tags = append(tags, t)
		}
	}
	if len(tags) > MaxTags {
		return f, InvalidField("tags", "has %d tags; at most %d are allowed", len(tags), MaxTags)
	}
	if len(tags) == 0 {
		tags = nil
	}
	f.Tags = tags
	return f, nil
}

// Secret is the state of one API secret, folded from its stream. Start from
// Secret{ID: id} so that errors can name a secret that does not exist.
type Secret struct {
	ID                 string
	created            bool
	Owner              string // user ID
	Fields             SecretFields
	SealedClientSecret []byte
	Disabled           bool
	Grants             []Grant // in the order they were first granted
	CreatedAt          time.Time
	LastUsed           time.Time // last reveal or copy; zero if never
	// Groups holds the current effective members of the groups granted on
	// the secret. The secret's events do not say who is in a group, so the
	// caller resolves them from the groups' own streams (GrantedGroups
	// names which) before asking for permissions; left nil, group grants
	// reach nobody.
	Groups GroupMembers
}

// Exists reports whether the secret has been created.
func (s *Secret) Exists() bool { return s.created }

// Apply folds one event into the state.
func (s *Secret) Apply(e Event) {
	switch p := e.Payload.(type) {
	case SecretCreated:
		*s = Secret{ID: p.SecretID, created: true, Owner: p.Owner, Fields: p.Fields, SealedClientSecret: p.SealedClientSecret, CreatedAt: e.At}
	case SecretUpdated:
		s.Fields = p.Fields
		if p.SealedClientSecret != nil {
			s.SealedClientSecret = p.SealedClientSecret
		}
	case SecretDisabled:
		s.Disabled = true
	case SecretEnabled:
		s.Disabled = false
	case ShareGranted:
		s.Grants = append(s.Grants, Grant{Principal: p.Principal, Permission: p.Permission})
	case SharePermissionChanged:
		if i := s.grantIndex(p.Principal); i >= 0 {
			s.Grants[i].Permission = p.After
		}
	case ShareRevoked:
		if i := s.grantIndex(p.Principal); i >= 0 {
			s.Grants = slices.Delete(s.Grants, i, i+1)
		}
	case SecretRevealed, SecretCopied:
		s.LastUsed = e.At
	}
}

func (s *Secret) grantIndex(p Principal) int {
	return slices.IndexFunc(s.Grants, func(g Grant) bool { return g.Principal == p })
}

// PermissionOf is the user's effective permission: full for the owner;
// otherwise the union of their direct grant and the grants of the groups
// they are an effective member of (see Groups); none for anyone else.
func (s *Secret) PermissionOf(userID string) Permission {
	if s.Owner == userID {
		return Permission{CanView: true, CanEdit: true}
	}
	var p Permission
	for _, g := range s.Grants {
		if g.Principal == User(userID) || g.Principal.Type == PrincipalGroup && s.Groups.Has(g.Principal.ID, userID) {
			p.CanView = p.CanView || g.Permission.CanView
			p.CanEdit = p.CanEdit || g.Permission.CanEdit
		}
	}
	return p
}

// GrantedGroups lists the groups the secret is shared with, in grant order.
func (s *Secret) GrantedGroups() []string {
	var out []string
	for _, g := range s.Grants {
		if g.Principal.Type == PrincipalGroup {
			out = append(out, g.Principal.ID)
		}
	}
	return out
}

// CanRead reports whether the user may read the details and reveal.
func (s *Secret) CanRead(userID string) bool { return s.Exists() && s.PermissionOf(userID).CanView }

// Commands on a secret.
type (
	CreateSecret struct {
		SecretID           string
		Fields             SecretFields
		SealedClientSecret []byte
	}
	// UpdateSecret changes the fields given; nil means unchanged.
	UpdateSecret struct {
		Changes            SecretChanges
		SealedClientSecret []byte // nil: unchanged
	}
	DisableSecret         struct{}
	EnableSecret          struct{}
	ShareSecret           struct{ Grant Grant }
	ChangeSharePermission struct{ Grant Grant }
	RevokeShare           struct{ Principal Principal }
	// ApplyShares is the Share dialog's single click: the full desired list
	// of grants. Its difference from the current list becomes the events.
	ApplyShares  struct{ Grants []Grant }
	RevealSecret struct{}
	CopySecret   struct{ Field string }
	// ShareExternally records, on the secret, that its owner hands it to a
	// person without an account; the share itself lives in its own stream
	// (see ExternalShare). MaxDuration is the administrator's cap on how
	// long an external share may last.
	ShareExternally struct {
		ShareID     string
		Terms       ExternalShareTerms
		MaxDuration time.Duration
	}
)

// SecretChanges are the visible fields an update sets; nil leaves a field.
type SecretChanges struct {
	Name       *string   `json:"name"`
	URL        *string   `json:"url"`
	ClientID   *string   `json:"clientId"`
	Identifier *string   `json:"identifier"`
	Method     *string   `json:"method"`
	Tags       *[]string `json:"tags"`
	Notes      *string   `json:"notes"`
}

// ApplyTo returns the fields with the changes made, not yet normalized.
func (ch SecretChanges) ApplyTo(f SecretFields) SecretFields {
	for _, set := range []struct {
		to   *string
		from *string
	}{{&f.Name, ch.Name}, {&f.URL, ch.URL}, {&f.ClientID, ch.ClientID},
		{&f.Identifier, ch.Identifier}, {&f.Method, ch.Method}, {&f.Notes, ch.Notes}} {
		if set.from != nil {
			*set.to = *set.from
		}
	}
	if ch.Tags != nil {
		f.Tags = slices.Clone(*ch.Tags)
	}
	return f
}

// DecideSecret decides what a command does to a secret: the new events, or
// an error saying why not. All events of one decision share meta.
func DecideSecret(s Secret, cmd any, meta Meta) ([]Event, error) {
	payloads, err := decideSecret(&s, cmd, meta.Actor.ID, meta.At)
	if err != nil {
		return nil, err
	}
	events := make([]Event, len(payloads))
	for i, p := range payloads {
		events[i] = Event{Meta: meta, Payload: p}
	}
	return events, nil
}

func decideSecret(s *Secret, cmd any, actor string, at time.Time) ([]Payload, error) {
	if c, ok := cmd.(CreateSecret); ok {
		return create(s, c, actor)
	}
	// Someone who cannot read a secret is not told that it exists.
	if !s.CanRead(actor) {
		return nil, s.CheckEdit(actor)
	}
	switch c := cmd.(type) {
	case UpdateSecret:
		return update(s, c, actor)
	case DisableSecret:
		if err := s.requireEdit(actor); err != nil || s.Disabled {
			return nil, err
		}
		return []Payload{SecretDisabled{}}, nil
	case EnableSecret:
		if err := s.requireEdit(actor); err != nil || !s.Disabled {
			return nil, err
		}
		return []Payload{SecretEnabled{}}, nil
	case ShareSecret:
		return s.applyShares(actor, "grant", []Grant{c.Grant}, addOnly)
	case ChangeSharePermission:
		return s.applyShares(actor, "grant", []Grant{c.Grant}, changeOnly)
	case RevokeShare:
		return s.revoke(actor, c.Principal)
	case ApplyShares:
		return s.applyShares(actor, "grants", c.Grants, replaceAll)
	case RevealSecret:
		if err := s.requireEnabled("revealed"); err != nil {
			return nil, err
		}
		return []Payload{SecretRevealed{}}, nil
	case CopySecret:
		if !slices.Contains(CopyableFields, c.Field) {
			return nil, InvalidField("field", "%q cannot be copied; want one of %s", c.Field, strings.Join(CopyableFields, ", "))
		}
		if err := s.requireEnabled("copied"); err != nil {
			return nil, err
		}
		return []Payload{SecretCopied{Field: c.Field}}, nil
	case ShareExternally:
		return s.shareExternally(actor, c, at)
	}
	return nil, Errorf(Other, "unknown command %T", cmd)
}

func create(s *Secret, c CreateSecret, actor string) ([]Payload, error) {
	if s.Exists() {
		return nil, Errorf(Conflict, "secret %s already exists", s.ID)
	}
	if c.SecretID == "" || c.SecretID != s.ID {
		return nil, Errorf(Other, "create: secret ID %q does not match its stream's %q", c.SecretID, s.ID)
	}
	fields, err := c.Fields.Normalize()
	if err != nil {
		return nil, err
	}
	return []Payload{SecretCreated{SecretID: c.SecretID, Owner: actor, Fields: fields, SealedClientSecret: c.SealedClientSecret}}, nil
}

func update(s *Secret, c UpdateSecret, actor string) ([]Payload, error) {
	if err := s.requireEdit(actor); err != nil {
		return nil, err
	}
	next := c.Changes.ApplyTo(s.Fields)
	next, err := next.Normalize()
	if err != nil {
		return nil, err
	}
	changed := changedFields(s.Fields, next)
	if c.SealedClientSecret != nil {
		changed = append(changed, "clientSecret")
	}
	if len(changed) == 0 {
		return nil, nil
	}
	return []Payload{SecretUpdated{Fields: next, Changed: changed, SealedClientSecret: c.SealedClientSecret}}, nil
}

func changedFields(a, b SecretFields) []string {
	var changed []string
	for _, f := range []struct {
		name string
		same bool
	}{{"name", a.Name == b.Name}, {"url", a.URL == b.URL}, {"clientId", a.ClientID == b.ClientID},
		{"identifier", a.Identifier == b.Identifier}, {"method", a.Method == b.Method},
		{"tags", slices.Equal(a.Tags, b.Tags)}, {"notes", a.Notes == b.Notes}} {
		if !f.same {
			changed = append(changed, f.name)
		}
	}
	return changed
}

// CheckEdit tells whether the user may edit the secret: NotFound if they
// may not even read it, Forbidden if they may only read it.
func (s *Secret) CheckEdit(userID string) error {
	if !s.CanRead(userID) {
		return Errorf(NotFound, "secret %s not found", s.ID)
	}
	return s.requireEdit(userID)
}

func (s *Secret) requireEdit(actor string) error {
	if !s.PermissionOf(actor).CanEdit {
		return Errorf(Forbidden, "you can view secret %s but not edit it; its owner can give you Can edit", s.ID)
	}
	return nil
}

func (s *Secret) requireEnabled(what string) error {
	if s.Disabled {
		return Errorf(Conflict, "secret %s is disabled and cannot be %s; enable it first", s.ID, what)
	}
	return nil
}

func (s *Secret) requireOwner(actor string) error {
	if s.Owner != actor {
		return Errorf(Forbidden, "only the owner of secret %s may change whom it is shared with", s.ID)
	}
	return nil
}

// shareMode says how a list of grants relates to the current ones.
type shareMode uint8

const (
	addOnly    shareMode = iota // ShareSecret: grant someone new
	changeOnly                  // ChangeSharePermission: change an existing grant
	replaceAll                  // ApplyShares: the list is the whole new state
)

// applyShares turns desired grants into grant, permission-change and revoke
// events: revokes first (in the current order), then the grants and
// changes in the order given.
func (s *Secret) applyShares(actor, field string, desired []Grant, mode shareMode) ([]Payload, error) {
	if err := s.requireOwner(actor); err != nil {
		return nil, err
	}
	want := make([]Grant, 0, len(desired))
	for i, g := range desired {
		f := field
		if mode == replaceAll {
			f = field + "[" + strconv.Itoa(i) + "]"
		}
		g, err := g.validate(f)
		if err != nil {
			return nil, err
		}
		if g.Principal == User(s.Owner) {
			return nil, InvalidField(f+".principal", "%s owns secret %s and cannot also be a grantee", g.Principal, s.ID)
		}
		if slices.ContainsFunc(want, func(w Grant) bool { return w.Principal == g.Principal }) {
			return nil, InvalidField(f+".principal", "%s is listed twice", g.Principal)
		}
		want = append(want, g)
	}

	var out []Payload
	if mode == replaceAll {
		for _, g := range s.Grants {
			if !slices.ContainsFunc(want, func(w Grant) bool { return w.Principal == g.Principal }) {
				out = append(out, ShareRevoked{Principal: g.Principal, Before: g.Permission})
			}
		}
	}
	widens := false
	for _, g := range want {
		i := s.grantIndex(g.Principal)
		switch {
		case i < 0 && mode == changeOnly:
			return nil, Errorf(NotFound, "secret %s is not shared with %s; share it first", s.ID, g.Principal)
		case i < 0:
			out = append(out, ShareGranted(g))
			widens = true
		case s.Grants[i].Permission == g.Permission:
			// Unchanged: nothing to record.
		case mode == addOnly:
			return nil, Errorf(Conflict, "secret %s is already shared with %s (%s); change the permission instead", s.ID, g.Principal, s.Grants[i].Permission)
		default:
			before := s.Grants[i].Permission
			out = append(out, SharePermissionChanged{Principal: g.Principal, Before: before, After: g.Permission})
			widens = widens || (g.Permission.CanEdit && !before.CanEdit)
		}
	}
	// Taking access away is always allowed; giving more is not while the
	// secret is disabled.
	if widens {
		if err := s.requireEnabled("shared"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Secret) revoke(actor string, p Principal) ([]Payload, error) {
	if err := s.requireOwner(actor); err != nil {
		return nil, err
	}
	if err := p.Validate("principal"); err != nil {
		return nil, err
	}
	i := s.grantIndex(p)
	if i < 0 {
		return nil, Errorf(NotFound, "secret %s is not shared with %s, so there is no share to revoke", s.ID, p)
	}
	return []Payload{ShareRevoked{Principal: p, Before: s.Grants[i].Permission}}, nil
}
