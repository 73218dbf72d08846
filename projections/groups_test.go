package projections

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// group runs commands by actor on a group, in order, and appends all their
// events at once.
func (w *world) group(actor, id string, cmds ...any) eventstore.Position {
	w.t.Helper()
	return w.execute(domain.GroupStream(id), func(past []domain.Event) ([]domain.Event, error) {
		g := domain.Group{ID: id}
		for _, e := range past {
			g.Apply(e)
		}
		var out []domain.Event
		for _, c := range cmds {
			events, err := domain.DecideGroup(g, c, w.meta(actor))
			if err != nil {
				return nil, fmt.Errorf("%T: %w", c, err)
			}
			for _, e := range events {
				g.Apply(e)
			}
			out = append(out, events...)
		}
		return out, nil
	})
}

// updateUser imports or updates a user's directory entry.
func (w *world) updateUser(id, name, username, email string) eventstore.Position {
	w.t.Helper()
	return w.execute(domain.UserStream(id), func(past []domain.Event) ([]domain.Event, error) {
		var u domain.UserRecord
		for _, e := range past {
			u.Apply(e)
		}
		return domain.DecideUserUpdate(u, domain.UpdateUser{UserID: id, Name: name, Username: username, Email: email}, w.meta("admin"))
	})
}

func shareGroup(id string, canEdit bool) domain.ShareSecret {
	return domain.ShareSecret{Grant: domain.Grant{Principal: domain.Principal{Type: domain.PrincipalGroup, ID: id},
		Permission: domain.Permission{CanView: true, CanEdit: canEdit}}}
}

func newGroup(id, name string) domain.CreateGroup {
	return domain.CreateGroup{GroupID: id, Name: name, AllowMembersToView: true}
}

func add(user string) domain.AddGroupMember       { return domain.AddGroupMember{UserID: user} }
func remove(user string) domain.RemoveGroupMember { return domain.RemoveGroupMember{UserID: user} }

func TestGroupMembersReachWhatTheGroupIsSharedOn(t *testing.T) {
	f := newFixture(t)
	for _, u := range []string{"olivia", "m1", "m2", "oscar"} {
		f.user(u, "User "+u)
	}
	f.group("olivia", "ops", newGroup("ops", "Ops"), add("m1"), add("m2"))
	f.secret("olivia", "s1", create("s1", "Payments API"), shareGroup("ops", false))
	f.sync(t)

	for _, u := range []string{"m1", "m2"} {
		if got := rowIDs(f.report(t, u, ReportQuery{})); !slices.Equal(got, []string{"s1"}) {
			t.Errorf("%s's report %v; want [s1]", u, got)
		}
		if got := cardIDs(f.cards(t, u)); !slices.Equal(got, []string{"s1"}) {
			t.Errorf("%s's cards %v; want [s1]", u, got)
		}
	}
	if got := rowIDs(f.report(t, "oscar", ReportQuery{})); len(got) != 0 {
		t.Errorf("oscar's report %v; want nothing", got)
	}
	d := f.details(t, "s1")
	if len(d.Access) != 1 || d.Access[0].Principal != (PrincipalRef{Type: "group", ID: "ops", Name: "Ops"}) ||
		d.Access[0].MemberCount == nil || *d.Access[0].MemberCount != 2 || !d.Shared {
		t.Fatalf("access %s; want the group ops as one grantee with 2 members", jsonOf(t, d.Access))
	}

	// Removing M1 takes it away from M1 only.
	f.group("olivia", "ops", remove("m1"))
	f.sync(t)
	if got := rowIDs(f.report(t, "m1", ReportQuery{})); len(got) != 0 {
		t.Errorf("m1's report after removal %v; want nothing", got)
	}
	if got := rowIDs(f.report(t, "m2", ReportQuery{})); !slices.Equal(got, []string{"s1"}) {
		t.Errorf("m2's report %v; want [s1]", got)
	}
	// A rename shows in the details; a disabled group reaches nobody.
	name := "Operations"
	f.group("olivia", "ops", domain.UpdateGroup{Name: &name}, domain.DisableGroup{})
	f.sync(t)
	if got := rowIDs(f.report(t, "m2", ReportQuery{})); len(got) != 0 {
		t.Errorf("m2's report while ops is disabled %v; want nothing", got)
	}
	if d := f.details(t, "s1"); d.Access[0].Principal.Name != "Operations" || *d.Access[0].MemberCount != 1 {
		t.Errorf("access %s; want Operations with 1 member", jsonOf(t, d.Access))
	}
	f.group("olivia", "ops", domain.EnableGroup{})
	// The owner unshares the group: nobody but the owner, Shared no.
	f.secret("olivia", "s1", domain.RevokeShare{Principal: domain.Principal{Type: domain.PrincipalGroup, ID: "ops"}})
	f.sync(t)
	if got := rowIDs(f.report(t, "m2", ReportQuery{})); len(got) != 0 {
		t.Errorf("m2's report after unshare %v; want nothing", got)
	}
	if d := f.details(t, "s1"); d.Shared || len(d.Access) != 0 {
		t.Errorf("after unshare: shared %v, access %v; want no, []", d.Shared, d.Access)
	}
	groups, err := f.r.Groups(context.Background(), "m2", false)
	if err != nil || len(groups) != 1 || groups[0].Name != "Operations" || groups[0].MemberCount != 1 {
		t.Errorf("m2's groups %+v, %v; want Operations", groups, err)
	}
}

// TestMembershipFansOutOverAThousandSecrets: a group shared on 1,000
// secrets gaining or losing a member changes every one of that member's
// rows at once, keeps those they reach another way, and the effect is the
// same however the log is cut into batches and however often a batch is
// delivered.
func TestMembershipFansOutOverAThousandSecrets(t *testing.T) {
	const n = 1000
	w := newWorld(t)
	for _, u := range []string{"olivia", "m1", "m2"} {
		w.user(u, "User "+u)
	}
	w.group("olivia", "ops", newGroup("ops", "Ops"), add("m2"))
	for i := range n {
		id := fmt.Sprintf("s%04d", i)
		cmds := []any{create(id, "Secret "+id), shareGroup("ops", false)}
		if i%100 == 0 {
			cmds = append(cmds, share("m1", false)) // m1 also reaches 10 directly
		}
		w.secret("olivia", id, cmds...)
	}
	rdb, prefix := newRedis(t)
	p := testProjector(w.store, rdb, prefix, 0)
	run(t, p)
	r := NewReader(rdb, prefix)
	total := func(user string) int {
		t.Helper()
		page, err := r.Report(context.Background(), user, ReportQuery{PageSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		return page.Total
	}
	waitFor(t, p, w.last)
	if total("m1") != n/100 || total("m2") != n {
		t.Fatalf("before: m1 %d, m2 %d; want %d, %d", total("m1"), total("m2"), n/100, n)
	}

	waitFor(t, p, w.group("olivia", "ops", add("m1")))
	if got := total("m1"); got != n {
		t.Fatalf("m1 reaches %d after joining ops; want %d", got, n)
	}
	waitFor(t, p, w.group("olivia", "ops", remove("m1"), remove("m2")))
	if total("m1") != n/100 || total("m2") != 0 {
		t.Fatalf("after leaving: m1 %d, m2 %d; want %d (the direct grants), 0", total("m1"), total("m2"), n/100)
	}
	waitFor(t, p, w.group("olivia", "ops", add("m2"), domain.DisableGroup{}))
	if got := total("m2"); got != 0 {
		t.Fatalf("m2 reaches %d through a disabled group; want 0", got)
	}
	waitFor(t, p, w.group("olivia", "ops", domain.EnableGroup{}))
	if got := total("m2"); got != n {
		t.Fatalf("m2 reaches %d after ops is enabled; want %d", got, n)
	}
	live := dump(t, rdb, prefix)

	// A rebuild in one batch per event and a rebuild with batches
	// delivered twice (and overlapping) reach the same keys.
	full := readAll(t, w.store, NewSecrets(rdb, prefix, nil))
	for _, rebuild := range []func(s *Secrets) error{
		func(s *Secrets) error {
			for i := range full.Events {
				if _, err := s.Apply(context.Background(), Batch{Events: full.Events[i : i+1], Position: full.Events[i].Position}); err != nil {
					return err
				}
			}
			return nil
		},
		func(s *Secrets) error {
			half := Batch{Events: full.Events[:len(full.Events)/2]}
			half.Position = half.Events[len(half.Events)-1].Position
			for _, b := range []Batch{half, half, full, full} {
				if _, err := s.Apply(context.Background(), b); err != nil {
					return err
				}
			}
			return nil
		},
	} {
		rdb2, prefix2 := newRedis(t)
		if err := rebuild(NewSecrets(rdb2, prefix2, quietLogger())); err != nil {
			t.Fatal(err)
		}
		got := dump(t, rdb2, prefix2)
		delete(got, "checkpoint:"+SecretsProjection)
		want := maps(live)
		delete(want, "checkpoint:"+SecretsProjection)
		for k := range want { // another projection's keys
			if !isSecretsKey(k) {
				delete(want, k)
			}
		}
		diffDumps(t, got, want)
	}
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// isSecretsKey reports whether a key (prefix cut off) is the secrets
// projection's.
func isSecretsKey(k string) bool {
	for _, p := range []string{"secret:", "access:", "user:", "group:", "groupsecrets:", "groupsof:", "groupsever:", "groups", "dir", "checkpoint:secrets"} {
		if len(k) >= len(p) && k[:len(p)] == p {
			return true
		}
	}
	return false
}

func TestUserUpdateRenamesEverywhere(t *testing.T) {
	f := newFixture(t)
	f.user("alice", "Alice")
	f.user("bob", "Bob")
	f.secret("alice", "s1", create("s1", "One"), share("bob", false))
	f.secret("bob", "s2", create("s2", "Two"), share("alice", true))
	f.updateUser("alice", "Alice Liddell", "aliddell", "alice@wonder.land")
	f.sync(t)
	if got := f.details(t, "s1").Owner.Name; got != "Alice Liddell" {
		t.Errorf("owner name %q; want the new one", got)
	}
	d := f.details(t, "s1")
	if d.Access[0].GrantedBy.Name != "Alice Liddell" {
		t.Errorf("granted by %q", d.Access[0].GrantedBy.Name)
	}
	if got := f.details(t, "s2").Access[0].Principal.Name; got != "Alice Liddell" {
		t.Errorf("grantee name %q; want the new one", got)
	}
	users, err := f.r.Users(context.Background(), []string{"alice"})
	if err != nil || users["alice"].Username != "aliddell" || users["alice"].Email != "alice@wonder.land" {
		t.Errorf("user %+v, %v", users["alice"], err)
	}
	// An imported user is known before their first sign-in.
	f.updateUser("carol", "Carol Danvers", "", "carol@example.com")
	f.secret("alice", "s1", share("carol", false))
	f.sync(t)
	if got := f.details(t, "s1").Access[1].Principal.Name; got != "Carol Danvers" {
		t.Errorf("imported grantee name %q", got)
	}
}

func TestDirectorySearch(t *testing.T) {
	f := newFixture(t)
	f.updateUser("gus", "Gus Grantee", "gus.g", "gus@example.com")
	f.updateUser("mia", "Mia Member", "mmember", "mia@corp.example")
	f.user("olivia", "Olivia Owner")
	f.group("olivia", "ops", newGroup("ops", "Ops Team"))
	f.group("olivia", "hidden", domain.CreateGroup{GroupID: "hidden", Name: "Grant admins"})
	f.updateUser("mia", "Mia Grant", "mmember", "mia@corp.example") // renamed: old terms leave the index
	f.sync(t)

	search := func(q, caller string) []string {
		t.Helper()
		hits, err := f.r.Principals(context.Background(), DirectoryQuery{Q: q, Caller: caller})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, h := range hits {
			out = append(out, h.Type+":"+h.ID)
		}
		return out
	}
	for _, c := range []struct {
		q, caller string
		want      []string
	}{
		{"rant", "gus", []string{"user:gus", "user:mia"}},  // substring of names
		{"GRANT", "gus", []string{"user:gus", "user:mia"}}, // a word of each starts with it: by name
		{"gus.g", "gus", []string{"user:gus"}},             // username
		{"@corp", "gus", []string{"user:mia"}},             // e-mail
		{"mia@corp.example", "x", []string{"user:mia"}},
		{"member", "x", []string{"user:mia"}}, // the username still holds it
		{"ops", "gus", nil},                   // a group the searcher may not see
		{"ops", "olivia", []string{"group:ops"}},
		{"grant", "olivia", []string{"group:hidden", "user:gus", "user:mia"}}, // a prefix first
		{"zzz", "olivia", nil},
	} {
		if got := search(c.q, c.caller); !slices.Equal(got, c.want) {
			t.Errorf("search %q as %s: %v; want %v", c.q, c.caller, got, c.want)
		}
	}
	if got := search("mia member", "x"); len(got) != 0 {
		t.Errorf("the old name is still indexed: %v", got)
	}
}
