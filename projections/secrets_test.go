package projections

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// fixture is a world with a running projector and a reader on the same
// prefix.
type fixture struct {
	*world
	p *Projector
	r *Reader
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	w := newWorld(t)
	rdb, prefix := newRedis(t)
	p := testProjector(w.store, rdb, prefix, 0)
	run(t, p)
	return &fixture{world: w, p: p, r: NewReader(rdb, prefix)}
}

// sync waits until the projection has applied everything appended.
func (f *fixture) sync(t *testing.T) {
	t.Helper()
	waitFor(t, f.p, f.last)
}

func (f *fixture) report(t *testing.T, user string, q ReportQuery) ReportPage {
	t.Helper()
	page, err := f.r.Report(context.Background(), user, q)
	if err != nil {
		t.Fatal(err)
	}
	return page
}

func (f *fixture) cards(t *testing.T, user string) []Card {
	t.Helper()
	cards, err := f.r.Cards(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return cards
}

func (f *fixture) details(t *testing.T, id string) *Details {
	t.Helper()
	d, err := f.r.Details(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func ids[T any](items []T, id func(T) string) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, id(it))
	}
	return out
}

func rowIDs(p ReportPage) []string { return ids(p.Items, func(r ReportRow) string { return r.ID }) }
func cardIDs(c []Card) []string    { return ids(c, func(c Card) string { return c.ID }) }

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestShareAndUnshare(t *testing.T) {
	f := newFixture(t)
	f.user("alice", "Alice Liddell")
	f.user("bob", "Bob Builder")
	f.secret("alice", "s1", create("s1", "Payments API", "prod", "billing"))
	f.secret("alice", "s1", share("bob", false))
	f.sync(t)

	// The grantee sees the shared secret, with its owner's name.
	page := f.report(t, "bob", ReportQuery{})
	if page.Total != 1 || len(page.Items) != 1 {
		t.Fatalf("bob's report: %+v, want s1", page)
	}
	row := page.Items[0]
	want := ReportRow{ID: "s1", Name: "Payments API", URL: "https://api.example.com/s1", Tags: []string{"prod", "billing"},
		Shared: true, Owner: Person{ID: "alice", Name: "Alice Liddell"}, Status: StatusEnabled}
	if jsonOf(t, row) != jsonOf(t, want) {
		t.Errorf("bob's row:\n got  %s\n want %s", jsonOf(t, row), jsonOf(t, want))
	}
	if got := cardIDs(f.cards(t, "bob")); !slices.Equal(got, []string{"s1"}) {
		t.Errorf("bob's cards: %v, want [s1]", got)
	}
	d := f.details(t, "s1")
	if len(d.Access) != 1 {
		t.Fatalf("access: %+v, want bob", d.Access)
	}
	a := d.Access[0]
	wantAccess := Access{Principal: PrincipalRef{Type: "user", ID: "bob", Name: "Bob Builder"}, CanView: true,
		GrantedBy: Person{ID: "alice", Name: "Alice Liddell"}, GrantedAt: a.GrantedAt}
	if a != wantAccess || a.GrantedAt.IsZero() {
		t.Errorf("access: %+v, want %+v", a, wantAccess)
	}

	// Unshare: bob loses it at once; alice keeps it, no longer shared.
	f.secret("alice", "s1", revoke("bob"))
	f.sync(t)
	if page := f.report(t, "bob", ReportQuery{}); page.Total != 0 || len(page.Items) != 0 {
		t.Errorf("bob's report after unshare: %+v, want empty", page)
	}
	if got := f.cards(t, "bob"); len(got) != 0 {
		t.Errorf("bob's cards after unshare: %v, want none", cardIDs(got))
	}
	page = f.report(t, "alice", ReportQuery{})
	if len(page.Items) != 1 || page.Items[0].Shared {
		t.Errorf("alice's report after unshare: %+v, want s1 not shared", page)
	}
	if c := f.cards(t, "alice"); len(c) != 1 || c[0].Shared || c[0].Type != "apiSecret" {
		t.Errorf("alice's cards after unshare: %+v, want s1 not shared", c)
	}
	d = f.details(t, "s1")
	if d.Shared || !strings.Contains(jsonOf(t, d), `"access":[]`) {
		t.Errorf("details after unshare: %s, want shared false and access []", jsonOf(t, d))
	}
}

func TestDetailsShowAllVisibleFieldsAndNeverTheSecret(t *testing.T) {
	f := newFixture(t)
	f.user("alice", "Alice")
	c := create("s1", "Payments API", "prod")
	c.Fields.Identifier, c.Fields.Method, c.Fields.Notes = "acct-7", "post", "rotate yearly"
	c.SealedClientSecret = []byte("SEALED-VALUE")
	f.secret("alice", "s1", c)
	f.sync(t)

	d := f.details(t, "s1")
	if d == nil {
		t.Fatal("no details for s1")
	}
	if d.ID != "s1" || d.Name != "Payments API" || d.URL != "https://api.example.com/s1" || d.ClientID != "client-s1" ||
		d.Identifier != "acct-7" || d.Method != "POST" || d.Notes != "rotate yearly" || !slices.Equal(d.Tags, []string{"prod"}) ||
		d.Owner != (Person{ID: "alice", Name: "Alice"}) || d.Status != StatusEnabled || d.Shared || d.Revision != 0 ||
		d.LastUsed != nil || d.CreatedAt.IsZero() || !d.UpdatedAt.Equal(d.CreatedAt) {
		t.Errorf("details: %s", jsonOf(t, d))
	}
	for key, v := range dump(t, f.r.rdb, string(f.r.keys)) {
		if strings.Contains(v, "SEALED") || strings.Contains(v, "U0VBTEVE") { // the raw or base64 value
			t.Errorf("key %s holds the sealed client secret: %s", key, v)
		}
	}
	if d, err := f.r.Details(context.Background(), "nope"); d != nil || err != nil {
		t.Errorf("details of a missing secret: %v, %v; want nil, nil", d, err)
	}
}

func TestRevealSetsLastUsedAndStatusFollowsDisableEnable(t *testing.T) {
	f := newFixture(t)
	f.user("alice", "Alice")
	f.secret("alice", "s1", create("s1", "One"))
	f.secret("alice", "s1", domain.RevealSecret{})
	revealedAt := f.now
	f.sync(t)

	row := f.report(t, "alice", ReportQuery{}).Items[0]
	if row.LastUsed == nil || !row.LastUsed.Equal(revealedAt) {
		t.Errorf("lastUsed %v, want %v", row.LastUsed, revealedAt)
	}
	d := f.details(t, "s1")
	if d.Revision != 1 || d.UpdatedAt.Equal(revealedAt) {
		t.Errorf("after reveal: revision %d, updatedAt %v; want 1 and unchanged by the reveal", d.Revision, d.UpdatedAt)
	}

	f.secret("alice", "s1", domain.CopySecret{Field: "clientId"})
	copiedAt := f.now
	f.secret("alice", "s1", domain.DisableSecret{})
	f.sync(t)
	row = f.report(t, "alice", ReportQuery{}).Items[0]
	if row.Status != StatusDisabled || !row.LastUsed.Equal(copiedAt) {
		t.Errorf("after copy and disable: status %s, lastUsed %v; want disabled, %v", row.Status, row.LastUsed, copiedAt)
	}
	if d := f.details(t, "s1"); d.Status != StatusDisabled || !d.UpdatedAt.Equal(f.now) || d.Revision != 3 {
		t.Errorf("details after disable: %s", jsonOf(t, d))
	}

	f.secret("alice", "s1", domain.EnableSecret{})
	f.sync(t)
	if s := f.report(t, "alice", ReportQuery{}).Items[0].Status; s != StatusEnabled {
		t.Errorf("after enable: status %s", s)
	}
}

func TestUpdateChangesFields(t *testing.T) {
	f := newFixture(t)
	f.user("alice", "Alice")
	f.secret("alice", "s1", create("s1", "Old name", "a"))
	name, tags := "New name", []string{"b", "c"}
	f.secret("alice", "s1", domain.UpdateSecret{Changes: domain.SecretChanges{Name: &name, Tags: &tags}})
	f.sync(t)

	d := f.details(t, "s1")
	if d.Name != "New name" || !slices.Equal(d.Tags, tags) || d.URL != "https://api.example.com/s1" ||
		d.Revision != 1 || !d.UpdatedAt.Equal(f.now) || d.UpdatedAt.Equal(d.CreatedAt) {
		t.Errorf("details after update: %s", jsonOf(t, d))
	}
	if row := f.report(t, "alice", ReportQuery{}).Items[0]; row.Name != "New name" {
		t.Errorf("report after update: %+v", row)
	}
	none := []string{}
	f.secret("alice", "s1", domain.UpdateSecret{Changes: domain.SecretChanges{Tags: &none}})
	f.sync(t)
	if !strings.Contains(jsonOf(t, f.report(t, "alice", ReportQuery{}).Items[0]), `"tags":[]`) {
		t.Error("a secret without tags must show tags: []")
	}
}

func TestPermissionChangeRecordsWhoAndWhen(t *testing.T) {
	f := newFixture(t)
	f.user("alice", "Alice")
	f.user("bob", "Bob")
	f.user("carol", "Carol")
	f.secret("alice", "s1", create("s1", "One"))
	f.secret("alice", "s1", share("bob", false), share("carol", false))
	f.secret("alice", "s1", domain.ChangeSharePermission{Grant: domain.Grant{Principal: domain.User("carol"),
		Permission: domain.Permission{CanView: true, CanEdit: true}}})
	changedAt := f.now
	// A group grant shows in the details, with no name yet, but reaches
	// no access set: membership is not known here.
	f.secret("alice", "s1", domain.ShareSecret{Grant: domain.Grant{Principal: domain.Principal{Type: domain.PrincipalGroup, ID: "ops"},
		Permission: domain.Permission{CanView: true}}})
	f.sync(t)

	d := f.details(t, "s1")
	got := ids(d.Access, func(a Access) string { return a.Principal.Type + ":" + a.Principal.ID })
	if !slices.Equal(got, []string{"user:bob", "user:carol", "group:ops"}) {
		t.Fatalf("access %v, want bob, carol, group ops in grant order", got)
	}
	carol := d.Access[1]
	if !carol.CanEdit || !carol.CanView || !carol.GrantedAt.Equal(changedAt) || carol.GrantedBy.Name != "Alice" {
		t.Errorf("carol's grant: %+v, want can edit, granted by Alice at %v", carol, changedAt)
	}
	if bob := d.Access[0]; bob.CanEdit || !bob.GrantedAt.Before(changedAt) {
		t.Errorf("bob's grant: %+v, want can view from before", bob)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		if got := cardIDs(f.cards(t, u)); !slices.Equal(got, []string{"s1"}) {
			t.Errorf("%s's cards: %v, want [s1]", u, got)
		}
	}
	if got := f.cards(t, "ops"); len(got) != 0 {
		t.Errorf("a group got an access set: %v", cardIDs(got))
	}

	// The Share dialog's single click: the list replaces the grants.
	f.secret("alice", "s1", domain.ApplyShares{Grants: []domain.Grant{{Principal: domain.User("carol"),
		Permission: domain.Permission{CanView: true}}}})
	f.sync(t)
	if got := cardIDs(f.cards(t, "bob")); len(got) != 0 {
		t.Errorf("bob's cards after removal: %v", got)
	}
	if got := cardIDs(f.cards(t, "carol")); !slices.Equal(got, []string{"s1"}) {
		t.Errorf("carol's cards: %v", got)
	}
}

func TestReportFiltersAndPages(t *testing.T) {
	f := newFixture(t)
	f.user("alice", "Alice Liddell")
	f.user("bob", "Bob Builder")
	f.secret("alice", "a1", create("a1", "Payments API", "prod", "billing"))
	f.secret("alice", "a2", create("a2", "Search", "staging"))
	f.secret("bob", "b1", create("b1", "Billing export", "prod"))
	f.secret("bob", "b1", domain.ShareSecret{Grant: domain.Grant{Principal: domain.User("alice"), Permission: domain.Permission{CanView: true}}})
	f.secret("alice", "a3", create("a3", "Mail", "internal"))
	f.secret("alice", "a3", domain.DisableSecret{})
	f.sync(t)

	yes, no := true, false
	for _, tc := range []struct {
		name string
		q    ReportQuery
		want []string
	}{
		{"all, newest first", ReportQuery{}, []string{"a3", "b1", "a2", "a1"}},
		{"shared", ReportQuery{Shared: &yes}, []string{"b1"}},
		{"not shared", ReportQuery{Shared: &no}, []string{"a3", "a2", "a1"}},
		{"q in name, any case", ReportQuery{Q: "BILLING"}, []string{"b1", "a1"}}, // a1 by its tag
		{"q in url", ReportQuery{Q: "example.com/a2"}, []string{"a2"}},
		{"owner by id", ReportQuery{Owner: "bob"}, []string{"b1"}},
		{"owner by name", ReportQuery{Owner: "lidd"}, []string{"a3", "a2", "a1"}},
		{"tag, exact", ReportQuery{Tag: "prod"}, []string{"b1", "a1"}},
		{"tag, not a substring", ReportQuery{Tag: "pro"}, []string{}},
		{"status", ReportQuery{Status: StatusDisabled}, []string{"a3"}},
		{"combined", ReportQuery{Tag: "prod", Owner: "alice"}, []string{"a1"}},
		{"page 2 of 3", ReportQuery{PageSize: 3, Page: 2}, []string{"a1"}},
		{"filtered page 2", ReportQuery{Shared: &no, PageSize: 2, Page: 2}, []string{"a1"}},
		{"past the end", ReportQuery{Page: 5}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := f.report(t, "alice", tc.q)
			if got := rowIDs(page); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if !strings.Contains(jsonOf(t, page), `"items":[`) {
				t.Errorf("items must be an array: %s", jsonOf(t, page))
			}
		})
	}
	if p := f.report(t, "alice", ReportQuery{PageSize: 3, Page: 2}); p.Total != 4 {
		t.Errorf("unfiltered total %d, want 4", p.Total)
	}
	if p := f.report(t, "alice", ReportQuery{Shared: &no, PageSize: 2, Page: 2}); p.Total != 3 {
		t.Errorf("filtered total %d, want 3", p.Total)
	}
	if got := cardIDs(f.cards(t, "alice")); !slices.Equal(got, []string{"a3", "b1", "a2", "a1"}) {
		t.Errorf("cards %v", got)
	}
	if got := cardIDs(f.cards(t, "bob")); !slices.Equal(got, []string{"b1"}) {
		t.Errorf("bob's cards %v", got)
	}
	if got := (ReportQuery{PageSize: 1000}); func() int { s, e := got.window(); return e - s }() != MaxPageSize {
		t.Errorf("page size is not capped at %d", MaxPageSize)
	}
}

func TestApplyingABatchTwiceHasNoMoreEffect(t *testing.T) {
	w := newWorld(t)
	w.user("alice", "Alice")
	w.user("bob", "Bob")
	w.secret("alice", "s1", create("s1", "One"), share("bob", false))
	w.secret("alice", "s1", domain.RevealSecret{}, revoke("bob"), share("bob", true))
	w.secret("alice", "s2", create("s2", "Two"), share("bob", false), revoke("bob"))

	rdb, prefix := newRedis(t)
	s := NewSecrets(rdb, prefix, quietLogger())
	full := readAll(t, w.store, s)
	ctx := context.Background()

	// Redelivery of the whole batch.
	pos, err := s.Apply(ctx, full)
	if err != nil || pos != full.Position {
		t.Fatalf("Apply: %s, %v; want %s", pos, err, full.Position)
	}
	once := dump(t, rdb, prefix)
	if pos, err := s.Apply(ctx, full); err != nil || pos != full.Position {
		t.Fatalf("Apply again: %s, %v", pos, err)
	}
	diffDumps(t, dump(t, rdb, prefix), once)

	// A redelivery overlapping the checkpoint: the first half applied, then
	// everything again (a crash after EXEC and a resubscription with larger
	// batches).
	rdb2, prefix2 := newRedis(t)
	s2 := NewSecrets(rdb2, prefix2, quietLogger())
	half := Batch{Events: full.Events[:len(full.Events)/2]}
	half.Position = half.Events[len(half.Events)-1].Position
	for _, b := range []Batch{half, full, half, full} {
		if _, err := s2.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	diffDumps(t, dump(t, rdb2, prefix2), once)

	if got, err := s.Checkpoint(ctx); err != nil || got != full.Position {
		t.Errorf("checkpoint %s, %v; want %s", got, err, full.Position)
	}
	// The projection's answer: bob can reach s1 only, with Can edit.
	r := NewReader(rdb, prefix)
	cards, err := r.Cards(ctx, "bob")
	if err != nil || !slices.Equal(cardIDs(cards), []string{"s1"}) {
		t.Errorf("bob's cards: %v, %v; want [s1]", cardIDs(cards), err)
	}
}

func TestUnknownEventsAreSkipped(t *testing.T) {
	w := newWorld(t)
	w.user("alice", "Alice")
	w.secret("alice", "s1", create("s1", "One"))
	ctx := context.Background()
	// An event type from a newer version, and one the projection ignores.
	if _, err := w.store.Append(ctx, domain.SecretStream("s1"), eventstore.Any,
		eventstore.EventData{ID: newID(), Type: "SecretFrobnicated", Data: []byte(`{}`)},
		eventstore.EventData{ID: newID(), Type: "SecretKeyIssued", Data: []byte(`{"wrappedKey":"AA=="}`)}); err != nil {
		t.Fatal(err)
	}
	res := w.secret("alice", "s1", domain.RevealSecret{})

	rdb, prefix := newRedis(t)
	p := testProjector(w.store, rdb, prefix, 0)
	run(t, p)
	waitFor(t, p, res)
	d, err := NewReader(rdb, prefix).Details(ctx, "s1")
	if err != nil || d == nil || d.LastUsed == nil || d.Revision != 3 {
		t.Errorf("details: %+v, %v; want the reveal at revision 3 applied", d, err)
	}
}

func TestTimesAreUTCRFC3339(t *testing.T) {
	f := newFixture(t)
	f.user("alice", "Alice")
	f.secret("alice", "s1", create("s1", "One"), domain.RevealSecret{})
	f.sync(t)
	var row map[string]any
	if err := json.Unmarshal([]byte(jsonOf(t, f.report(t, "alice", ReportQuery{}).Items[0])), &row); err != nil {
		t.Fatal(err)
	}
	if _, err := time.Parse(time.RFC3339, row["lastUsed"].(string)); err != nil {
		t.Errorf("lastUsed %v: %v", row["lastUsed"], err)
	}
}
