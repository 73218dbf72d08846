package domain_test

import (
	"testing"
	"time"

	"github.com/mysafe/mysafe/domain"
)

func at(minutes int) time.Time { return t0.Add(time.Duration(minutes) * time.Minute) }

func ev(minutes int, actor string, p domain.Payload) domain.Event {
	return domain.Event{Meta: domain.Meta{Actor: domain.Actor{ID: actor, Name: actor}, At: at(minutes)}, Payload: p}
}

var (
	view = domain.Permission{CanView: true}
	edit = domain.Permission{CanView: true, CanEdit: true}
)

// The story: shared with gus at t1 (minute 10), can edit at t2
// (20), revoked at t3 (30); ops (a group) from minute 15 on.
var story = []domain.Event{
	ev(0, "olivia", domain.SecretCreated{SecretID: "s1", Owner: "olivia"}),
	ev(10, "olivia", domain.ShareGranted{Principal: domain.User("gus"), Permission: view}),
	ev(15, "olivia", domain.ShareGranted{Principal: domain.Principal{Type: domain.PrincipalGroup, ID: "ops"}, Permission: view}),
	ev(20, "olivia", domain.SharePermissionChanged{Principal: domain.User("gus"), Before: view, After: edit}),
	ev(25, "gus", domain.SecretDisabled{}),
	ev(30, "olivia", domain.ShareRevoked{Principal: domain.User("gus"), Before: edit}),
	ev(40, "olivia", domain.ShareGranted{Principal: domain.User("gus"), Permission: view}),
}

func TestGrantsAtEachInstant(t *testing.T) {
	a := domain.FoldAccess("s1", story)
	ε := time.Second
	for _, tc := range []struct {
		at   time.Time
		want map[string]domain.Permission // principal → permission in force
	}{
		{at(-1), map[string]domain.Permission{}},
		{at(10).Add(-ε), map[string]domain.Permission{}},
		{at(10), map[string]domain.Permission{"user:gus": view}},
		{at(10).Add(ε), map[string]domain.Permission{"user:gus": view}},
		{at(20).Add(ε), map[string]domain.Permission{"user:gus": edit, "group:ops": view}},
		{at(30), map[string]domain.Permission{"group:ops": view}},
		{at(30).Add(ε), map[string]domain.Permission{"group:ops": view}},
		{at(45), map[string]domain.Permission{"group:ops": view, "user:gus": view}},
	} {
		got := map[string]domain.Permission{}
		for _, g := range a.GrantsAt(tc.at) {
			got[g.Principal.String()] = g.Permission
		}
		if len(got) != len(tc.want) {
			t.Errorf("at %s: %v; want %v", tc.at.Format(time.TimeOnly), got, tc.want)
			continue
		}
		for p, perm := range tc.want {
			if got[p] != perm {
				t.Errorf("at %s: %s has %v; want %v", tc.at.Format(time.TimeOnly), p, got[p], perm)
			}
		}
	}
	g := a.GrantsAt(at(25))[0]
	if g.GrantedAt != at(10) || g.GrantedBy.ID != "olivia" || g.ChangedAt != at(20) {
		t.Errorf("grant at minute 25 = %+v; want granted at 10 by olivia, changed at 20", g)
	}
	if !a.DisabledAt(at(26)) || a.DisabledAt(at(24)) {
		t.Error("disabled from minute 25 on")
	}
}

func TestIntervalsHoldEveryChange(t *testing.T) {
	a := domain.FoldAccess("s1", story)
	ivs := a.IntervalsOf(domain.User("gus"))
	if len(ivs) != 2 {
		t.Fatalf("gus has %d intervals; want 2", len(ivs))
	}
	first := ivs[0]
	if first.GrantedAt != at(10) || first.RevokedAt == nil || *first.RevokedAt != at(30) || len(first.Changes) != 3 {
		t.Fatalf("first interval = %+v; want [10, 30) with three changes", first)
	}
	for i, want := range []struct {
		typ      string
		revision uint64
		after    domain.Permission
	}{{"ShareGranted", 1, view}, {"SharePermissionChanged", 3, edit}, {"ShareRevoked", 5, domain.Permission{}}} {
		c := first.Changes[i]
		if c.Type != want.typ || c.Revision != want.revision || c.After != want.after || c.Actor.ID != "olivia" {
			t.Errorf("change %d = %+v; want %s at revision %d to %v by olivia", i, c, want.typ, want.revision, want.after)
		}
	}
	if ivs[1].RevokedAt != nil {
		t.Error("the second interval is still open")
	}
}

func TestUserAccessJoinsGroupMembership(t *testing.T) {
	a := domain.FoldAccess("s1", story)
	// mia is in ops from minute 18 to minute 35.
	members := func(group, user string) []domain.Span {
		if group == "ops" && user == "mia" {
			return []domain.Span{{From: at(18), To: at(35)}}
		}
		return nil
	}
	for _, tc := range []struct {
		user string
		at   time.Time
		via  []string
		perm domain.Permission
	}{
		{"olivia", at(-1), nil, domain.Permission{}},
		{"olivia", at(1), []string{domain.ViaOwner}, edit},
		{"gus", at(21), []string{domain.ViaUser}, edit},
		{"gus", at(31), nil, domain.Permission{}},
		{"mia", at(17), nil, domain.Permission{}},
		{"mia", at(20), []string{domain.ViaGroup}, view},
		{"mia", at(35), nil, domain.Permission{}},
	} {
		reaches := a.UserAccessAt(tc.user, tc.at, members)
		var via []string
		for _, r := range reaches {
			via = append(via, r.Via)
		}
		if len(via) != len(tc.via) || (len(via) > 0 && via[0] != tc.via[0]) || domain.Union(reaches) != tc.perm {
			t.Errorf("%s at %s: via %v, %v; want via %v, %v", tc.user, tc.at.Format(time.TimeOnly), via, domain.Union(reaches), tc.via, tc.perm)
		}
	}
	if r := a.UserAccessAt("mia", at(20), nil); len(r) != 0 {
		t.Errorf("without membership, mia reaches %v", r)
	}
}

func TestEventTimesNeverRunBackwards(t *testing.T) {
	// The revoke was recorded a second before the grant it follows in the
	// stream (two racing requests): it takes effect when it was appended.
	a := domain.FoldAccess("s1", []domain.Event{
		ev(0, "olivia", domain.SecretCreated{SecretID: "s1", Owner: "olivia"}),
		ev(10, "olivia", domain.ShareGranted{Principal: domain.User("gus"), Permission: view}),
		{Meta: domain.Meta{At: at(10).Add(-time.Second)}, Payload: domain.ShareRevoked{Principal: domain.User("gus"), Before: view}},
	})
	iv := a.IntervalsOf(domain.User("gus"))[0]
	if iv.RevokedAt == nil || iv.RevokedAt.Before(iv.GrantedAt) {
		t.Fatalf("interval = %+v; want it revoked no earlier than granted", iv)
	}
	if len(a.GrantsAt(at(11))) != 0 {
		t.Fatal("the revoked grant is in force after the revoke")
	}
}
