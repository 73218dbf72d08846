package http

import (
	"bytes"
	"testing"
	"time"

	"github.com/mysafe/mysafe/domain"
)

// The authenticator remembers tokens that passed its checks; remembering
// must never let through a token the checks would refuse now.
func TestRememberedTokensStillExpire(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	now := t0
	a := newAuthenticator(key, func() time.Time { return now })
	token, err := IssueToken(key, Identity{UserID: "olivia", Name: "Olivia", Role: RoleUser}, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // checked, then remembered
		id, err := a.identify("Bearer " + token)
		if err != nil || id.UserID != "olivia" || id.Role != RoleUser {
			t.Fatalf("identify: %+v, %v", id, err)
		}
	}
	now = t0.Add(time.Hour + time.Second)
	if _, err := a.identify("Bearer " + token); domain.KindOf(err) != domain.Unauthenticated {
		t.Fatalf("an expired token that was remembered: %v; want Unauthenticated", err)
	}

	now = t0
	other, err := IssueToken(bytes.Repeat([]byte{8}, 32), Identity{UserID: "olivia", Role: RoleAdmin}, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.identify("Bearer " + other); domain.KindOf(err) != domain.Unauthenticated {
		t.Fatalf("a token signed with another key: %v; want Unauthenticated", err)
	}
}

func TestRememberedTokensAreBounded(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	a := newAuthenticator(key, func() time.Time { return t0 })
	for i := range maxVerifiedTokens + 10 {
		token, err := IssueToken(key, Identity{UserID: "u", Role: RoleUser}, time.Hour+time.Duration(i)*time.Second, t0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.identify("Bearer " + token); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(a.verified); n > maxVerifiedTokens {
		t.Errorf("%d tokens remembered; at most %d", n, maxVerifiedTokens)
	}
}
