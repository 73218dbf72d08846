package domain_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mysafe/mysafe/domain"
)

var (
	t0      = time.Date(2026, 3, 3, 14, 0, 0, 0, time.UTC)
	owner   = domain.Meta{Actor: domain.Actor{ID: "olivia", Name: "Olivia Owner"}, At: t0}
	grantee = domain.Meta{Actor: domain.Actor{ID: "gus", Name: "Gus Grantee"}, At: t0}
	editor  = domain.Meta{Actor: domain.Actor{ID: "eddie"}, At: t0}
	outside = domain.Meta{Actor: domain.Actor{ID: "oscar"}, At: t0}
)

var fields = domain.SecretFields{Name: "Billing API", URL: "https://billing.example.com", ClientID: "client-1"}

func created() domain.Payload {
	return domain.SecretCreated{SecretID: "s1", Owner: "olivia", Fields: fields, SealedClientSecret: []byte("sealed")}
}

var (
	canView = domain.Permission{CanView: true}
	canEdit = domain.Permission{CanView: true, CanEdit: true}
)

func grant(id string, p domain.Permission) domain.Grant {
	return domain.Grant{Principal: domain.User(id), Permission: p}
}

// TestDecideSecret is the rule book of the secret aggregate: given these
// past events, when this command, then these new events or this error.
func TestDecideSecret(t *testing.T) {
	str := func(s string) *string { return &s }
	tests := []struct {
		name    string
		given   []domain.Payload
		as      domain.Meta
		when    any
		then    []domain.Payload
		kind    domain.Kind // expected error kind when then is nil and kind != 0
		field   string      // for Invalid: the field named
		mention string      // the error message names this
	}{
		{name: "create", as: owner,
			when: domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{Name: " Billing API ", URL: "https://billing.example.com", ClientID: "client-1", Method: "post", Tags: []string{"prod", "prod", "eu"}}},
			then: []domain.Payload{domain.SecretCreated{SecretID: "s1", Owner: "olivia", Fields: domain.SecretFields{Name: "Billing API", URL: "https://billing.example.com", ClientID: "client-1", Method: "POST", Tags: []string{"prod", "eu"}}}}},
		{name: "create twice", given: []domain.Payload{created()}, as: owner,
			when: domain.CreateSecret{SecretID: "s1", Fields: fields}, kind: domain.Conflict},
		{name: "create without name", as: owner,
			when: domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{URL: "https://x.example", ClientID: "c"}}, kind: domain.Invalid, field: "name"},
		{name: "create with a long name", as: owner,
			when: domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{Name: strings.Repeat("n", 101), URL: "https://x.example", ClientID: "c"}}, kind: domain.Invalid, field: "name", mention: "100"},
		{name: "create with a relative url", as: owner,
			when: domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{Name: "n", URL: "/api", ClientID: "c"}}, kind: domain.Invalid, field: "url"},
		{name: "create with an ftp url", as: owner,
			when: domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{Name: "n", URL: "ftp://x.example", ClientID: "c"}}, kind: domain.Invalid, field: "url"},
		{name: "create without client id", as: owner,
			when: domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{Name: "n", URL: "https://x.example"}}, kind: domain.Invalid, field: "clientId"},
		{name: "create with a bad method", as: owner,
			when: domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{Name: "n", URL: "https://x.example", ClientID: "c", Method: "FETCH"}}, kind: domain.Invalid, field: "method", mention: "FETCH"},
		{name: "create with 21 tags", as: owner,
			when: domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{Name: "n", URL: "https://x.example", ClientID: "c", Tags: strings.Split("a b c d e f g h i j k l m n o p q r s t u", " ")}}, kind: domain.Invalid, field: "tags", mention: "20"},
		{name: "create with a long tag", as: owner,
			when: domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{Name: "n", URL: "https://x.example", ClientID: "c", Tags: []string{strings.Repeat("t", 65)}}}, kind: domain.Invalid, field: "tags"},
		{name: "create with long notes", as: owner,
			when: domain.CreateSecret{SecretID: "s1", Fields: domain.SecretFields{Name: "n", URL: "https://x.example", ClientID: "c", Notes: strings.Repeat("x", 2001)}}, kind: domain.Invalid, field: "notes"},

		{name: "update by owner names changed fields", given: []domain.Payload{created()}, as: owner,
			when: domain.UpdateSecret{Changes: domain.SecretChanges{Name: str("Billing"), Notes: str("rotated")}},
			then: []domain.Payload{domain.SecretUpdated{Fields: domain.SecretFields{Name: "Billing", URL: fields.URL, ClientID: fields.ClientID, Notes: "rotated"}, Changed: []string{"name", "notes"}}}},
		{name: "update that changes nothing records nothing", given: []domain.Payload{created()}, as: owner,
			when: domain.UpdateSecret{Changes: domain.SecretChanges{Name: str("Billing API")}}},
		{name: "update of the client secret", given: []domain.Payload{created()}, as: owner,
			when: domain.UpdateSecret{SealedClientSecret: []byte("sealed2")},
			then: []domain.Payload{domain.SecretUpdated{Fields: fields, Changed: []string{"clientSecret"}, SealedClientSecret: []byte("sealed2")}}},
		{name: "update by a can-edit grantee", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("eddie"), Permission: canEdit}}, as: editor,
			when: domain.UpdateSecret{Changes: domain.SecretChanges{URL: str("https://b.example.com")}},
			then: []domain.Payload{domain.SecretUpdated{Fields: domain.SecretFields{Name: fields.Name, URL: "https://b.example.com", ClientID: fields.ClientID}, Changed: []string{"url"}}}},
		{name: "update by a can-view grantee is forbidden", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}}, as: grantee,
			when: domain.UpdateSecret{Changes: domain.SecretChanges{Name: str("x")}}, kind: domain.Forbidden},
		{name: "update by an outsider is not found", given: []domain.Payload{created()}, as: outside,
			when: domain.UpdateSecret{Changes: domain.SecretChanges{Name: str("x")}}, kind: domain.NotFound, mention: "s1"},
		{name: "update with an invalid url", given: []domain.Payload{created()}, as: owner,
			when: domain.UpdateSecret{Changes: domain.SecretChanges{URL: str("nope")}}, kind: domain.Invalid, field: "url"},
		{name: "command on a missing secret", as: owner, when: domain.DisableSecret{}, kind: domain.NotFound, mention: "s1"},

		{name: "disable by a can-edit grantee", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("eddie"), Permission: canEdit}}, as: editor,
			when: domain.DisableSecret{}, then: []domain.Payload{domain.SecretDisabled{}}},
		{name: "disable twice records once", given: []domain.Payload{created(), domain.SecretDisabled{}}, as: owner, when: domain.DisableSecret{}},
		{name: "enable", given: []domain.Payload{created(), domain.SecretDisabled{}}, as: owner,
			when: domain.EnableSecret{}, then: []domain.Payload{domain.SecretEnabled{}}},
		{name: "disable by a can-view grantee is forbidden", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}}, as: grantee,
			when: domain.DisableSecret{}, kind: domain.Forbidden},

		{name: "share", given: []domain.Payload{created()}, as: owner,
			when: domain.ShareSecret{Grant: grant("gus", canView)},
			then: []domain.Payload{domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}}},
		{name: "share can-edit implies can-view", given: []domain.Payload{created()}, as: owner,
			when: domain.ShareSecret{Grant: grant("gus", domain.Permission{CanEdit: true})},
			then: []domain.Payload{domain.ShareGranted{Principal: domain.User("gus"), Permission: canEdit}}},
		{name: "share with a group", given: []domain.Payload{created()}, as: owner,
			when: domain.ShareSecret{Grant: domain.Grant{Principal: domain.Principal{Type: domain.PrincipalGroup, ID: "ops"}, Permission: canView}},
			then: []domain.Payload{domain.ShareGranted{Principal: domain.Principal{Type: domain.PrincipalGroup, ID: "ops"}, Permission: canView}}},
		{name: "share granting nothing", given: []domain.Payload{created()}, as: owner,
			when: domain.ShareSecret{Grant: grant("gus", domain.Permission{})}, kind: domain.Invalid, field: "grant", mention: "user:gus"},
		{name: "share with an unknown principal type", given: []domain.Payload{created()}, as: owner,
			when: domain.ShareSecret{Grant: domain.Grant{Principal: domain.Principal{Type: "robot", ID: "r2"}, Permission: canView}}, kind: domain.Invalid, field: "grant.principal.type"},
		{name: "share with the owner", given: []domain.Payload{created()}, as: owner,
			when: domain.ShareSecret{Grant: grant("olivia", canView)}, kind: domain.Invalid, field: "grant.principal", mention: "owns"},
		{name: "share again with the same permission records nothing", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}}, as: owner,
			when: domain.ShareSecret{Grant: grant("gus", canView)}},
		{name: "share again with another permission", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}}, as: owner,
			when: domain.ShareSecret{Grant: grant("gus", canEdit)}, kind: domain.Conflict, mention: "user:gus"},
		{name: "share by a grantee is forbidden", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("eddie"), Permission: canEdit}}, as: editor,
			when: domain.ShareSecret{Grant: grant("gus", canView)}, kind: domain.Forbidden},
		{name: "share by an outsider is not found", given: []domain.Payload{created()}, as: outside,
			when: domain.ShareSecret{Grant: grant("gus", canView)}, kind: domain.NotFound},
		{name: "share a disabled secret", given: []domain.Payload{created(), domain.SecretDisabled{}}, as: owner,
			when: domain.ShareSecret{Grant: grant("gus", canView)}, kind: domain.Conflict, mention: "disabled"},

		{name: "change permission", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}}, as: owner,
			when: domain.ChangeSharePermission{Grant: grant("gus", canEdit)},
			then: []domain.Payload{domain.SharePermissionChanged{Principal: domain.User("gus"), Before: canView, After: canEdit}}},
		{name: "change permission of a missing grant", given: []domain.Payload{created()}, as: owner,
			when: domain.ChangeSharePermission{Grant: grant("gus", canEdit)}, kind: domain.NotFound, mention: "user:gus"},

		{name: "revoke", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}}, as: owner,
			when: domain.RevokeShare{Principal: domain.User("gus")},
			then: []domain.Payload{domain.ShareRevoked{Principal: domain.User("gus"), Before: canView}}},
		{name: "revoke a grant that does not exist names the principal", given: []domain.Payload{created()}, as: owner,
			when: domain.RevokeShare{Principal: domain.User("gus")}, kind: domain.NotFound, mention: "user:gus"},
		{name: "revoke a grant already revoked", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}, domain.ShareRevoked{Principal: domain.User("gus"), Before: canView}}, as: owner,
			when: domain.RevokeShare{Principal: domain.User("gus")}, kind: domain.NotFound, mention: "user:gus"},
		{name: "revoke on a disabled secret is allowed", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}, domain.SecretDisabled{}}, as: owner,
			when: domain.RevokeShare{Principal: domain.User("gus")},
			then: []domain.Payload{domain.ShareRevoked{Principal: domain.User("gus"), Before: canView}}},
		{name: "revoke by a grantee is forbidden", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}}, as: grantee,
			when: domain.RevokeShare{Principal: domain.User("gus")}, kind: domain.Forbidden},

		{name: "apply shares: grant, change and revoke in one decision",
			given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}, domain.ShareGranted{Principal: domain.User("eddie"), Permission: canView}}, as: owner,
			when: domain.ApplyShares{Grants: []domain.Grant{grant("eddie", canEdit), grant("nina", canView)}},
			then: []domain.Payload{
				domain.ShareRevoked{Principal: domain.User("gus"), Before: canView},
				domain.SharePermissionChanged{Principal: domain.User("eddie"), Before: canView, After: canEdit},
				domain.ShareGranted{Principal: domain.User("nina"), Permission: canView},
			}},
		{name: "apply shares: an empty list unshares everyone",
			given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}}, as: owner,
			when: domain.ApplyShares{},
			then: []domain.Payload{domain.ShareRevoked{Principal: domain.User("gus"), Before: canView}}},
		{name: "apply shares: the same list records nothing",
			given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}}, as: owner,
			when: domain.ApplyShares{Grants: []domain.Grant{grant("gus", canView)}}},
		{name: "apply shares: a principal listed twice",
			given: []domain.Payload{created()}, as: owner,
			when: domain.ApplyShares{Grants: []domain.Grant{grant("gus", canView), grant("gus", canEdit)}}, kind: domain.Invalid, field: "grants[1].principal", mention: "user:gus"},
		{name: "apply shares: one bad grant changes nothing",
			given: []domain.Payload{created()}, as: owner,
			when: domain.ApplyShares{Grants: []domain.Grant{grant("gus", canView), grant("", canView)}}, kind: domain.Invalid, field: "grants[1].principal.id"},
		{name: "apply shares: only revokes on a disabled secret",
			given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canEdit}, domain.SecretDisabled{}}, as: owner,
			when: domain.ApplyShares{Grants: []domain.Grant{grant("gus", canView)}},
			then: []domain.Payload{domain.SharePermissionChanged{Principal: domain.User("gus"), Before: canEdit, After: canView}}},
		{name: "apply shares: widening on a disabled secret",
			given: []domain.Payload{created(), domain.SecretDisabled{}}, as: owner,
			when: domain.ApplyShares{Grants: []domain.Grant{grant("gus", canView)}}, kind: domain.Conflict, mention: "disabled"},

		{name: "reveal by the owner", given: []domain.Payload{created()}, as: owner,
			when: domain.RevealSecret{}, then: []domain.Payload{domain.SecretRevealed{}}},
		{name: "reveal by a grantee", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}}, as: grantee,
			when: domain.RevealSecret{}, then: []domain.Payload{domain.SecretRevealed{}}},
		{name: "reveal after the revoke is not found", given: []domain.Payload{created(), domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}, domain.ShareRevoked{Principal: domain.User("gus"), Before: canView}}, as: grantee,
			when: domain.RevealSecret{}, kind: domain.NotFound},
		{name: "reveal by an outsider is not found", given: []domain.Payload{created()}, as: outside,
			when: domain.RevealSecret{}, kind: domain.NotFound},
		{name: "reveal a disabled secret", given: []domain.Payload{created(), domain.SecretDisabled{}}, as: owner,
			when: domain.RevealSecret{}, kind: domain.Conflict, mention: "disabled"},
		{name: "copy a field", given: []domain.Payload{created()}, as: owner,
			when: domain.CopySecret{Field: "clientId"}, then: []domain.Payload{domain.SecretCopied{Field: "clientId"}}},
		{name: "copy an unknown field", given: []domain.Payload{created()}, as: owner,
			when: domain.CopySecret{Field: "notes"}, kind: domain.Invalid, field: "field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := domain.Secret{ID: "s1"}
			for _, p := range tc.given {
				s.Apply(domain.Event{Meta: owner, Payload: p})
			}
			got, err := domain.DecideSecret(s, tc.when, tc.as)
			if tc.kind != 0 {
				var de *domain.Error
				if !errors.As(err, &de) || de.Kind != tc.kind {
					t.Fatalf("err = %v; want kind %v", err, tc.kind)
				}
				if de.Field != tc.field {
					t.Errorf("field = %q; want %q", de.Field, tc.field)
				}
				if !strings.Contains(err.Error(), tc.mention) {
					t.Errorf("err = %q; want it to mention %q", err, tc.mention)
				}
				if got != nil {
					t.Errorf("events = %v alongside the error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			var payloads []domain.Payload
			for _, e := range got {
				if e.Meta != tc.as {
					t.Errorf("meta = %+v; want %+v", e.Meta, tc.as)
				}
				payloads = append(payloads, e.Payload)
			}
			if !reflect.DeepEqual(payloads, tc.then) {
				t.Fatalf("events =\n%#v\nwant\n%#v", payloads, tc.then)
			}
		})
	}
}

func TestApplyFoldsAccess(t *testing.T) {
	s := domain.Secret{ID: "s1"}
	at := t0.Add(time.Hour)
	for _, e := range []domain.Event{
		{Meta: owner, Payload: created()},
		{Meta: owner, Payload: domain.ShareGranted{Principal: domain.User("gus"), Permission: canView}},
		{Meta: domain.Meta{Actor: grantee.Actor, At: at}, Payload: domain.SecretRevealed{}},
	} {
		s.Apply(e)
	}
	if !s.CanRead("gus") || !s.CanRead("olivia") || s.CanRead("oscar") {
		t.Errorf("CanRead gus/olivia/oscar = %v/%v/%v; want true/true/false", s.CanRead("gus"), s.CanRead("olivia"), s.CanRead("oscar"))
	}
	if !s.LastUsed.Equal(at) {
		t.Errorf("LastUsed = %v; want %v", s.LastUsed, at)
	}
	s.Apply(domain.Event{Meta: owner, Payload: domain.ShareRevoked{Principal: domain.User("gus"), Before: canView}})
	if s.CanRead("gus") {
		t.Error("gus can still read after the revoke")
	}
}

func TestDecideUser(t *testing.T) {
	got, err := domain.DecideUser(domain.UserRecord{}, domain.RegisterUser{UserID: "gus", Name: " Gus ", Email: "gus@example.com"}, grantee)
	if err != nil || len(got) != 1 || got[0].Payload != (domain.UserRegistered{UserID: "gus", Name: "Gus", Email: "gus@example.com"}) {
		t.Fatalf("DecideUser = %v, %v", got, err)
	}
	var u domain.UserRecord
	u.Apply(got[0])
	if again, err := domain.DecideUser(u, domain.RegisterUser{UserID: "gus", Name: "Other"}, grantee); err != nil || again != nil {
		t.Fatalf("registering twice = %v, %v; want nothing", again, err)
	}
}
