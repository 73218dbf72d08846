package domain_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mysafe/mysafe/domain"
)

func groupCreated() domain.Payload {
	return domain.GroupCreated{GroupID: "g1", Owner: "olivia", Name: "ops", AllowMembersToView: true}
}

// TestDecideGroup is the rule book of the group aggregate.
func TestDecideGroup(t *testing.T) {
	str := func(s string) *string { return &s }
	yes := true
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
			when: domain.CreateGroup{GroupID: "g1", Name: " ops ", Description: " on call ", AllowMembersToView: true},
			then: []domain.Payload{domain.GroupCreated{GroupID: "g1", Owner: "olivia", Name: "ops", Description: "on call", AllowMembersToView: true}}},
		{name: "create disabled", as: owner, when: domain.CreateGroup{GroupID: "g1", Name: "ops", Disabled: true},
			then: []domain.Payload{domain.GroupCreated{GroupID: "g1", Owner: "olivia", Name: "ops", Disabled: true}}},
		{name: "create twice", given: []domain.Payload{groupCreated()}, as: owner,
			when: domain.CreateGroup{GroupID: "g1", Name: "ops"}, kind: domain.Conflict},
		{name: "create without name", as: owner, when: domain.CreateGroup{GroupID: "g1", Name: "  "}, kind: domain.Invalid, field: "name"},
		{name: "create with a long description", as: owner,
			when: domain.CreateGroup{GroupID: "g1", Name: "ops", Description: strings.Repeat("d", 501)}, kind: domain.Invalid, field: "description", mention: "500"},

		{name: "rename", given: []domain.Payload{groupCreated()}, as: owner, when: domain.UpdateGroup{Name: str("sre")},
			then: []domain.Payload{domain.GroupUpdated{Name: "sre", AllowMembersToView: true, Changed: []string{"name"}}}},
		{name: "describe and hide", given: []domain.Payload{groupCreated()}, as: owner,
			when: domain.UpdateGroup{Description: str("pager"), AllowMembersToView: new(bool)},
			then: []domain.Payload{domain.GroupUpdated{Name: "ops", Description: "pager", Changed: []string{"description", "allowMembersToView"}}}},
		{name: "update that changes nothing", given: []domain.Payload{groupCreated()}, as: owner,
			when: domain.UpdateGroup{Name: str("ops"), AllowMembersToView: &yes}},
		{name: "rename to nothing", given: []domain.Payload{groupCreated()}, as: owner, when: domain.UpdateGroup{Name: str("")}, kind: domain.Invalid, field: "name"},

		{name: "add member", given: []domain.Payload{groupCreated()}, as: owner, when: domain.AddGroupMember{UserID: "gus"},
			then: []domain.Payload{domain.GroupMemberAdded{UserID: "gus"}}},
		{name: "the owner may add themself", given: []domain.Payload{groupCreated()}, as: owner, when: domain.AddGroupMember{UserID: "olivia"},
			then: []domain.Payload{domain.GroupMemberAdded{UserID: "olivia"}}},
		{name: "add a member twice", given: []domain.Payload{groupCreated(), domain.GroupMemberAdded{UserID: "gus"}}, as: owner,
			when: domain.AddGroupMember{UserID: "gus"}, kind: domain.Conflict, mention: "user:gus"},
		{name: "add nobody", given: []domain.Payload{groupCreated()}, as: owner, when: domain.AddGroupMember{}, kind: domain.Invalid, field: "userId"},
		{name: "remove member", given: []domain.Payload{groupCreated(), domain.GroupMemberAdded{UserID: "gus"}}, as: owner,
			when: domain.RemoveGroupMember{UserID: "gus"}, then: []domain.Payload{domain.GroupMemberRemoved{UserID: "gus"}}},
		{name: "remove a non-member", given: []domain.Payload{groupCreated()}, as: owner,
			when: domain.RemoveGroupMember{UserID: "gus"}, kind: domain.NotFound, mention: "user:gus"},

		{name: "disable", given: []domain.Payload{groupCreated()}, as: owner, when: domain.DisableGroup{}, then: []domain.Payload{domain.GroupDisabled{}}},
		{name: "disable twice records nothing", given: []domain.Payload{groupCreated(), domain.GroupDisabled{}}, as: owner, when: domain.DisableGroup{}},
		{name: "enable", given: []domain.Payload{groupCreated(), domain.GroupDisabled{}}, as: owner, when: domain.EnableGroup{}, then: []domain.Payload{domain.GroupEnabled{}}},

		{name: "a member who may view may not manage", given: []domain.Payload{groupCreated(), domain.GroupMemberAdded{UserID: "gus"}}, as: grantee,
			when: domain.AddGroupMember{UserID: "oscar"}, kind: domain.Forbidden},
		{name: "a member who may not view is not told it exists",
			given: []domain.Payload{domain.GroupCreated{GroupID: "g1", Owner: "olivia", Name: "ops"}, domain.GroupMemberAdded{UserID: "gus"}}, as: grantee,
			when: domain.DisableGroup{}, kind: domain.NotFound},
		{name: "an outsider is not told it exists", given: []domain.Payload{groupCreated()}, as: outside, when: domain.UpdateGroup{Name: str("x")}, kind: domain.NotFound},
		{name: "no such group", as: owner, when: domain.AddGroupMember{UserID: "gus"}, kind: domain.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := domain.Group{ID: "g1"}
			for _, p := range tt.given {
				g.Apply(domain.Event{Meta: owner, Payload: p})
			}
			got, err := domain.DecideGroup(g, tt.when, tt.as)
			checkDecision(t, got, err, tt.as, tt.then, tt.kind, tt.field, tt.mention)
		})
	}
}

// checkDecision compares a decision with what a rule book row expects.
func checkDecision(t *testing.T, got []domain.Event, err error, meta domain.Meta, then []domain.Payload, kind domain.Kind, field, mention string) {
	t.Helper()
	if kind != 0 {
		if err == nil || domain.KindOf(err) != kind {
			t.Fatalf("got %v, %v; want a %s error", got, err, kind)
		}
		var de *domain.Error
		if field != "" && (!asError(err, &de) || de.Field != field) {
			t.Errorf("error %v names field %q; want %q", err, de.Field, field)
		}
		if mention != "" && !strings.Contains(err.Error(), mention) {
			t.Errorf("error %q does not mention %q", err, mention)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	var payloads []domain.Payload
	for _, e := range got {
		if e.Meta != meta {
			t.Errorf("event meta %+v; want %+v", e.Meta, meta)
		}
		payloads = append(payloads, e.Payload)
	}
	if !reflect.DeepEqual(payloads, then) {
		t.Fatalf("events\n got  %#v\n want %#v", payloads, then)
	}
}

func asError(err error, target **domain.Error) bool {
	*target = &domain.Error{}
	return errors.As(err, target)
}

func TestGroupStateTracksMembersWithAddedByAndOn(t *testing.T) {
	g := domain.Group{ID: "g1"}
	later := owner
	later.At = t0.Add(time.Hour)
	for _, e := range []domain.Event{
		{Meta: owner, Payload: groupCreated()},
		{Meta: owner, Payload: domain.GroupMemberAdded{UserID: "gus"}},
		{Meta: later, Payload: domain.GroupMemberAdded{UserID: "mia"}},
		{Meta: later, Payload: domain.GroupMemberRemoved{UserID: "gus"}},
	} {
		g.Apply(e)
	}
	want := []domain.Member{{UserID: "mia", AddedBy: owner.Actor, AddedAt: later.At}}
	if !reflect.DeepEqual(g.Members, want) {
		t.Fatalf("members %+v; want %+v", g.Members, want)
	}
	if !g.EffectiveMembers()["mia"] || g.EffectiveMembers()["gus"] {
		t.Errorf("effective members %v; want mia only", g.EffectiveMembers())
	}
	g.Apply(domain.Event{Meta: later, Payload: domain.GroupDisabled{}})
	if len(g.EffectiveMembers()) != 0 || !g.IsMember("mia") {
		t.Errorf("a disabled group reaches %v; want nobody, mia still listed", g.EffectiveMembers())
	}
}

// TestPermissionIsTheUnionOfDirectAndGroupGrants: a user's permission on a
// secret is what their own grant and their groups' grants give together,
// and a group reaches only its current effective members.
func TestPermissionIsTheUnionOfDirectAndGroupGrants(t *testing.T) {
	ops := domain.Principal{Type: domain.PrincipalGroup, ID: "ops"}
	s := domain.Secret{ID: "s1"}
	for _, p := range []domain.Payload{created(),
		domain.ShareGranted{Principal: domain.User("gus"), Permission: canView},
		domain.ShareGranted{Principal: ops, Permission: canEdit},
	} {
		s.Apply(domain.Event{Meta: owner, Payload: p})
	}
	if got := s.PermissionOf("gus"); got != canView {
		t.Fatalf("without memberships gus has %v; want the direct grant only", got)
	}
	if s.CanRead("mia") {
		t.Fatal("without memberships a group grant reaches mia")
	}
	s.Groups = domain.GroupMembers{"ops": {"gus": true, "mia": true}}
	if got := s.PermissionOf("gus"); got != canEdit {
		t.Errorf("gus (direct view + ops edit) has %v; want can edit", got)
	}
	if got := s.PermissionOf("mia"); got != canEdit {
		t.Errorf("mia (ops) has %v; want can edit", got)
	}
	if s.CanRead("oscar") {
		t.Error("oscar, in no group, can read")
	}
	// A member with edit through a group may update; only the owner shares.
	mia := domain.Meta{Actor: domain.Actor{ID: "mia"}, At: t0}
	name := "Renamed"
	if _, err := domain.DecideSecret(s, domain.UpdateSecret{Changes: domain.SecretChanges{Name: &name}}, mia); err != nil {
		t.Errorf("mia updates through ops: %v", err)
	}
	if _, err := domain.DecideSecret(s, domain.RevokeShare{Principal: ops}, mia); domain.KindOf(err) != domain.Forbidden {
		t.Errorf("mia unshares: %v; want forbidden", err)
	}
	if got := s.GrantedGroups(); !reflect.DeepEqual(got, []string{"ops"}) {
		t.Errorf("granted groups %v; want [ops]", got)
	}
}

func TestGroupHistoryGivesMembershipSpans(t *testing.T) {
	at := func(h int) domain.Meta { m := owner; m.At = t0.Add(time.Duration(h) * time.Hour); return m }
	h := domain.FoldGroupHistory("g1", []domain.Event{
		{Meta: at(0), Payload: groupCreated()},
		{Meta: at(1), Payload: domain.GroupMemberAdded{UserID: "m1"}},
		{Meta: at(1), Payload: domain.GroupMemberAdded{UserID: "m2"}},
		{Meta: at(2), Payload: domain.GroupDisabled{}},
		{Meta: at(3), Payload: domain.GroupEnabled{}},
		{Meta: at(4), Payload: domain.GroupMemberRemoved{UserID: "m1"}},
	})
	t1, t2, t3, t4 := t0.Add(time.Hour), t0.Add(2*time.Hour), t0.Add(3*time.Hour), t0.Add(4*time.Hour)
	want := []domain.Span{{From: t1, To: t2}, {From: t3, To: t4}}
	if got := h.Spans("m1"); !reflect.DeepEqual(got, want) {
		t.Errorf("m1 spans %v; want %v", got, want)
	}
	if got := h.Spans("m2"); !reflect.DeepEqual(got, []domain.Span{{From: t1, To: t2}, {From: t3}}) {
		t.Errorf("m2 spans %v", got)
	}
	members := domain.GroupMembership(map[string]*domain.GroupHistory{"g1": h})
	if len(members("g1", "m2")) != 2 || members("other", "m2") != nil {
		t.Error("GroupMembership does not answer from the histories")
	}
	if got := h.MembersAt(t2.Add(time.Minute)); len(got) != 0 {
		t.Errorf("members while disabled: %v; want none", got)
	}
}

// TestGroupGrantsJoinAccessAtAnInstant: the access fold answers a group
// grant through the group's membership at the instant asked about.
func TestGroupGrantsJoinAccessAtAnInstant(t *testing.T) {
	at := func(h int) domain.Meta { m := owner; m.At = t0.Add(time.Duration(h) * time.Hour); return m }
	ops := domain.Principal{Type: domain.PrincipalGroup, ID: "g1"}
	access := domain.FoldAccess("s1", []domain.Event{
		{Meta: at(0), Payload: created()},
		{Meta: at(2), Payload: domain.ShareGranted{Principal: ops, Permission: canView}},
		{Meta: at(6), Payload: domain.ShareRevoked{Principal: ops, Before: canView}},
	})
	group := domain.FoldGroupHistory("g1", []domain.Event{
		{Meta: at(0), Payload: groupCreated()},
		{Meta: at(1), Payload: domain.GroupMemberAdded{UserID: "m1"}},
		{Meta: at(1), Payload: domain.GroupMemberAdded{UserID: "m2"}},
		{Meta: at(4), Payload: domain.GroupMemberRemoved{UserID: "m1"}},
	})
	members := domain.GroupMembership(map[string]*domain.GroupHistory{"g1": group})
	for _, c := range []struct {
		user  string
		hour  float64
		reach bool
	}{{"m1", 1.5, false}, {"m1", 3, true}, {"m1", 5, false}, {"m2", 3, true}, {"m2", 5, true}, {"m2", 7, false}} {
		when := t0.Add(time.Duration(c.hour * float64(time.Hour)))
		got := access.UserAccessAt(c.user, when, members)
		if (len(got) > 0) != c.reach {
			t.Errorf("%s at +%vh: %+v; want reach %v", c.user, c.hour, got, c.reach)
		}
		if c.reach && got[0].Via != domain.ViaGroup {
			t.Errorf("%s at +%vh reaches via %s; want group", c.user, c.hour, got[0].Via)
		}
	}
}
