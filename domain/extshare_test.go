package domain_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mysafe/mysafe/domain"
)

const (
	token = "x1.token-value"
	code  = "12345678"
)

var (
	tokenHash = domain.HashLinkToken(token)
	codeHash  = domain.HashAccessCode(token, code)
	recipient = domain.Meta{Actor: domain.Actor{ID: "recipient:x1", Name: "rita@example.com"}, At: t0}
	admin     = domain.Meta{Actor: domain.Actor{ID: "root"}, At: t0}
)

func intp(n int) *int { return &n }

func terms(maxAccesses *int) domain.ExternalShareTerms {
	return domain.ExternalShareTerms{RecipientEmail: "rita@example.com", ExpiresAt: t0.Add(24 * time.Hour), MaxAccesses: maxAccesses}
}

func shareCreated(maxAccesses *int) domain.Payload {
	return domain.ExternalShareCreated{ShareID: "x1", SecretID: "s1", SecretName: "Billing API", Sharer: "olivia",
		ExternalShareTerms: terms(maxAccesses), TokenHash: tokenHash}
}

func codeSent(at time.Time) domain.Payload {
	return domain.ExternalShareCodeSent{CodeHash: codeHash, ExpiresAt: at.Add(domain.AccessCodeTTL)}
}

func metaAt(m domain.Meta, d time.Duration) domain.Meta { m.At = t0.Add(d); return m }

// TestDecideExternalShare is the rule book of the external share aggregate.
func TestDecideExternalShare(t *testing.T) {
	wrong := func(n int) domain.Payload { return domain.ExternalShareCodeRejected{WrongCodes: n} }
	tests := []struct {
		name    string
		given   []domain.Payload
		as      domain.Meta
		when    any
		then    []domain.Payload
		kind    domain.Kind
		field   string
		mention string
	}{
		{name: "create", as: owner,
			when: domain.CreateExternalShare{ShareID: "x1", SecretID: "s1", SecretName: "Billing API", Terms: terms(intp(2)), TokenHash: tokenHash},
			then: []domain.Payload{shareCreated(intp(2))}},
		{name: "create twice", given: []domain.Payload{shareCreated(nil)}, as: owner,
			when: domain.CreateExternalShare{ShareID: "x1", SecretID: "s1", Terms: terms(nil), TokenHash: tokenHash}, kind: domain.Conflict},

		{name: "send a code", given: []domain.Payload{shareCreated(nil)}, as: recipient,
			when: domain.SendAccessCode{TokenHash: tokenHash, CodeHash: codeHash}, then: []domain.Payload{codeSent(t0)}},
		{name: "a wrong token is not found", given: []domain.Payload{shareCreated(nil)}, as: recipient,
			when: domain.SendAccessCode{TokenHash: domain.HashLinkToken("x1.guess"), CodeHash: codeHash}, kind: domain.NotFound},
		{name: "no new code while the last is fresh", given: []domain.Payload{shareCreated(nil), codeSent(t0)}, as: metaAt(recipient, 30*time.Second),
			when: domain.SendAccessCode{TokenHash: tokenHash, CodeHash: codeHash}},
		{name: "a new code a minute later", given: []domain.Payload{shareCreated(nil), codeSent(t0)}, as: metaAt(recipient, time.Minute),
			when: domain.SendAccessCode{TokenHash: tokenHash, CodeHash: codeHash}, then: []domain.Payload{codeSent(t0.Add(time.Minute))}},
		{name: "no code after expiry: the expiry is recorded", given: []domain.Payload{shareCreated(nil)}, as: metaAt(recipient, 24*time.Hour),
			when: domain.SendAccessCode{TokenHash: tokenHash, CodeHash: codeHash}, then: []domain.Payload{domain.ExternalShareExpired{}}},
		{name: "no code once revoked", given: []domain.Payload{shareCreated(nil), domain.ExternalShareRevoked{ExpiresAt: t0}}, as: recipient,
			when: domain.SendAccessCode{TokenHash: tokenHash, CodeHash: codeHash}, kind: domain.Forbidden, mention: "revoked"},

		{name: "open with the code", given: []domain.Payload{shareCreated(intp(2)), codeSent(t0)}, as: recipient,
			when: domain.OpenExternalShare{TokenHash: tokenHash, CodeHash: codeHash},
			then: []domain.Payload{domain.ExternalShareAccessed{Accesses: 1, Remaining: intp(1)}}},
		{name: "the last access finishes the share",
			given: []domain.Payload{shareCreated(intp(2)), codeSent(t0), domain.ExternalShareAccessed{Accesses: 1, Remaining: intp(1)}, codeSent(t0)}, as: recipient,
			when: domain.OpenExternalShare{TokenHash: tokenHash, CodeHash: codeHash},
			then: []domain.Payload{domain.ExternalShareAccessed{Accesses: 2, Remaining: intp(0)}, domain.ExternalShareExhausted{}}},
		{name: "unlimited accesses", given: []domain.Payload{shareCreated(nil), codeSent(t0)}, as: recipient,
			when: domain.OpenExternalShare{TokenHash: tokenHash, CodeHash: codeHash}, then: []domain.Payload{domain.ExternalShareAccessed{Accesses: 1}}},
		{name: "a code opens once", given: []domain.Payload{shareCreated(nil), codeSent(t0), domain.ExternalShareAccessed{Accesses: 1}}, as: recipient,
			when: domain.OpenExternalShare{TokenHash: tokenHash, CodeHash: codeHash}, kind: domain.Forbidden, mention: "no code"},
		{name: "an expired code", given: []domain.Payload{shareCreated(nil), codeSent(t0)}, as: metaAt(recipient, domain.AccessCodeTTL),
			when: domain.OpenExternalShare{TokenHash: tokenHash, CodeHash: codeHash}, kind: domain.Forbidden, mention: "expired"},
		{name: "a wrong code", given: []domain.Payload{shareCreated(nil), codeSent(t0)}, as: recipient,
			when: domain.OpenExternalShare{TokenHash: tokenHash, CodeHash: domain.HashAccessCode(token, "00000000")}, then: []domain.Payload{wrong(1)}},
		{name: "the fifth wrong code locks the share", given: []domain.Payload{shareCreated(nil), codeSent(t0), wrong(1), wrong(2), wrong(3), wrong(4)}, as: recipient,
			when: domain.OpenExternalShare{TokenHash: tokenHash, CodeHash: domain.HashAccessCode(token, "00000000")},
			then: []domain.Payload{wrong(5), domain.ExternalShareLocked{WrongCodes: 5}}},
		{name: "a locked share refuses the right code", given: []domain.Payload{shareCreated(nil), codeSent(t0), wrong(5), domain.ExternalShareLocked{WrongCodes: 5}}, as: recipient,
			when: domain.OpenExternalShare{TokenHash: tokenHash, CodeHash: codeHash}, kind: domain.Forbidden, mention: "locked"},
		{name: "a used-up share refuses", given: []domain.Payload{shareCreated(intp(1)), codeSent(t0), domain.ExternalShareAccessed{Accesses: 1, Remaining: intp(0)}, domain.ExternalShareExhausted{}}, as: recipient,
			when: domain.SendAccessCode{TokenHash: tokenHash, CodeHash: codeHash}, kind: domain.Forbidden, mention: "used"},

		{name: "revoke moves the expiry to now", given: []domain.Payload{shareCreated(nil)}, as: metaAt(owner, time.Hour),
			when: domain.RevokeExternalShare{}, then: []domain.Payload{domain.ExternalShareRevoked{ExpiresAt: t0.Add(time.Hour)}}},
		{name: "an admin may revoke", given: []domain.Payload{shareCreated(nil)}, as: admin,
			when: domain.RevokeExternalShare{ByAdmin: true}, then: []domain.Payload{domain.ExternalShareRevoked{ExpiresAt: t0}}},
		{name: "someone else may not revoke", given: []domain.Payload{shareCreated(nil)}, as: outside, when: domain.RevokeExternalShare{}, kind: domain.NotFound},
		{name: "revoke twice", given: []domain.Payload{shareCreated(nil), domain.ExternalShareRevoked{ExpiresAt: t0}}, as: owner,
			when: domain.RevokeExternalShare{}, kind: domain.Conflict, mention: "Cancelled"},
		{name: "resend replaces the link", given: []domain.Payload{shareCreated(nil)}, as: owner,
			when: domain.ResendExternalShareLink{TokenHash: "new"}, then: []domain.Payload{domain.ExternalShareLinkResent{TokenHash: "new"}}},

		{name: "expire when due", given: []domain.Payload{shareCreated(nil)}, as: metaAt(admin, 25*time.Hour),
			when: domain.ExpireExternalShare{}, then: []domain.Payload{domain.ExternalShareExpired{}}},
		{name: "expire before due records nothing", given: []domain.Payload{shareCreated(nil)}, as: admin, when: domain.ExpireExternalShare{}},
		{name: "expire twice records nothing", given: []domain.Payload{shareCreated(nil), domain.ExternalShareExpired{}}, as: metaAt(admin, 25*time.Hour),
			when: domain.ExpireExternalShare{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := domain.ExternalShare{ID: "x1"}
			for _, p := range tt.given {
				x.Apply(domain.Event{Meta: owner, Payload: p})
			}
			got, err := domain.DecideExternalShare(x, tt.when, tt.as)
			checkDecision(t, got, err, tt.as, tt.then, tt.kind, tt.field, tt.mention)
		})
	}
}

func TestExternalShareStatus(t *testing.T) {
	x := domain.ExternalShare{ID: "x1"}
	x.Apply(domain.Event{Meta: owner, Payload: shareCreated(intp(3))})
	if x.StatusAt(t0) != domain.ExternalShareApproved || *x.Remaining() != 3 {
		t.Fatalf("new share: %s, %d remaining", x.StatusAt(t0), *x.Remaining())
	}
	if got := x.StatusAt(t0.Add(24 * time.Hour)); got != domain.ExternalShareFinished {
		t.Errorf("past its expiry: %s; want Finished before the expiry is even recorded", got)
	}
	if err := x.Refusal(t0.Add(24 * time.Hour)); domain.KindOf(err) != domain.Forbidden || !strings.Contains(err.Error(), "expired") {
		t.Errorf("refusal past expiry: %v", err)
	}
}

// TestShareExternally: only the owner of an enabled secret shares it
// externally, within the administrator's maximum.
func TestShareExternally(t *testing.T) {
	s := domain.Secret{ID: "s1"}
	s.Apply(domain.Event{Meta: owner, Payload: created()})
	max := 30 * 24 * time.Hour
	ok := domain.ShareExternally{ShareID: "x1", Terms: terms(nil), MaxDuration: max}
	got, err := domain.DecideSecret(s, ok, owner)
	checkDecision(t, got, err, owner, []domain.Payload{domain.SecretSharedExternally{ShareID: "x1", ExternalShareTerms: terms(nil)}}, 0, "", "")

	for _, c := range []struct {
		name        string
		as          domain.Meta
		change      func(*domain.ShareExternally)
		kind        domain.Kind
		field, word string
	}{
		{"beyond the maximum", owner, func(c *domain.ShareExternally) { c.Terms.ExpiresAt = t0.Add(max + time.Minute) }, domain.Invalid, "expiresAt", "720h"},
		{"in the past", owner, func(c *domain.ShareExternally) { c.Terms.ExpiresAt = t0 }, domain.Invalid, "expiresAt", "future"},
		{"a bad address", owner, func(c *domain.ShareExternally) { c.Terms.RecipientEmail = "Rita <rita@example.com>" }, domain.Invalid, "recipientEmail", "e-mail"},
		{"no address", owner, func(c *domain.ShareExternally) { c.Terms.RecipientEmail = "" }, domain.Invalid, "recipientEmail", "required"},
		{"zero accesses", owner, func(c *domain.ShareExternally) { c.Terms.MaxAccesses = intp(0) }, domain.Invalid, "maxAccesses", "null"},
		{"by a grantee", grantee, func(*domain.ShareExternally) {}, domain.NotFound, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := ok
			c.change(&cmd)
			got, err := domain.DecideSecret(s, cmd, c.as)
			checkDecision(t, got, err, c.as, nil, c.kind, c.field, c.word)
		})
	}
	s.Apply(domain.Event{Meta: owner, Payload: domain.SecretDisabled{}})
	if _, err := domain.DecideSecret(s, ok, owner); domain.KindOf(err) != domain.Conflict {
		t.Errorf("sharing a disabled secret externally: %v; want conflict", err)
	}
}

func TestHashesDoNotHoldTheSecrets(t *testing.T) {
	if strings.Contains(tokenHash, token) || strings.Contains(codeHash, code) || len(tokenHash) != 64 {
		t.Fatal("hashes hold what they hash")
	}
	if domain.HashAccessCode("another token", code) == codeHash {
		t.Fatal("a code's hash does not depend on its link")
	}
	data := domain.PublicData(domain.Event{Payload: shareCreated(nil)})
	if _, ok := data["tokenHash"]; ok {
		t.Error("public data shows the token hash")
	}
}

func TestDecideUserUpdate(t *testing.T) {
	registered := domain.UserRecord{ID: "gus", Name: "Gus", Username: "gus", Email: "gus@example.com", Registered: true}
	tests := []struct {
		name   string
		given  domain.UserRecord
		when   domain.UpdateUser
		then   []domain.Payload
		kind   domain.Kind
		field  string
		reason string
	}{
		{name: "import a new user", given: domain.UserRecord{}, when: domain.UpdateUser{UserID: "mia", Name: "Mia Member", Email: "mia@example.com"},
			then: []domain.Payload{domain.UserUpdated{UserID: "mia", Name: "Mia Member", Username: "mia", Email: "mia@example.com", Changed: []string{"name", "username", "email"}}}},
		{name: "rename", given: registered, when: domain.UpdateUser{UserID: "gus", Name: "Gus Grantee", Username: "gus", Email: "gus@example.com"},
			then: []domain.Payload{domain.UserUpdated{UserID: "gus", Name: "Gus Grantee", Username: "gus", Email: "gus@example.com", Changed: []string{"name"}}}},
		{name: "no change", given: registered, when: domain.UpdateUser{UserID: "gus", Name: "Gus", Email: "gus@example.com"}},
		{name: "no name", given: registered, when: domain.UpdateUser{UserID: "gus"}, kind: domain.Invalid, field: "name"},
		{name: "bad e-mail", given: registered, when: domain.UpdateUser{UserID: "gus", Name: "G", Email: "gus"}, kind: domain.Invalid, field: "email"},
		{name: "username with a space", given: registered, when: domain.UpdateUser{UserID: "gus", Name: "G", Username: "g us"}, kind: domain.Invalid, field: "username"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := domain.DecideUserUpdate(tt.given, tt.when, admin)
			checkDecision(t, got, err, admin, tt.then, tt.kind, tt.field, tt.reason)
		})
	}
	var u domain.UserRecord
	u.Apply(domain.Event{Payload: domain.UserRegistered{UserID: "gus", Name: "Gus"}})
	if u.Username != "gus" {
		t.Errorf("a registered user's username is %q; want the ID", u.Username)
	}
}
