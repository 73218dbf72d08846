package projections

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// auditWorld fills a log with every kind of audit event, from two IPs.
func auditWorld(t *testing.T) *world {
	w := newWorld(t)
	w.user("olivia", "Olivia")
	w.user("gus", "Gus")
	w.user("mia", "Mia")
	ip := map[string]string{"olivia": "192.0.2.1", "gus": "192.0.2.2", "mia": "192.0.2.2"}
	as := func(actor, id string, cmds ...any) {
		w.execute(domain.SecretStream(id), func(past []domain.Event) ([]domain.Event, error) {
			s := domain.Secret{ID: id}
			for _, e := range past {
				s.Apply(e)
			}
			var out []domain.Event
			for _, c := range cmds {
				m := w.meta(actor)
				m.ClientIP = ip[actor]
				events, err := domain.DecideSecret(s, c, m)
				if err != nil {
					return nil, err
				}
				for _, e := range events {
					s.Apply(e)
				}
				out = append(out, events...)
			}
			return out, nil
		})
	}
	as("olivia", "s1", create("s1", "Billing API"), share("gus", false))
	as("gus", "s2", create("s2", "Mail API"), share("mia", true), share("olivia", false))
	as("gus", "s1", domain.RevealSecret{}, domain.CopySecret{Field: "clientId"})
	as("olivia", "s1", domain.ChangeSharePermission{Grant: domain.Grant{Principal: domain.User("gus"), Permission: domain.Permission{CanEdit: true}}})
	as("gus", "s1", domain.UpdateSecret{Changes: domain.SecretChanges{Name: ptr("Billing API v2")}})
	as("mia", "s2", domain.DisableSecret{}, domain.EnableSecret{}, domain.RevealSecret{})
	as("olivia", "s1", revoke("gus"), domain.CopySecret{Field: "url"})
	as("gus", "s2", revoke("mia"))
	// One share-dialog click: three events with one time, which pages
	// must order and split by their place in the log.
	as("mia", "s3", create("s3", "Ties"), domain.ApplyShares{Grants: []domain.Grant{
		{Principal: domain.User("olivia"), Permission: domain.Permission{CanView: true}},
		{Principal: domain.User("gus"), Permission: domain.Permission{CanView: true}},
		{Principal: domain.Principal{Type: domain.PrincipalGroup, ID: "ops"}, Permission: domain.Permission{CanView: true}},
	}})
	for i := range 20 { // enough to span several small pages
		as([]string{"olivia", "gus"}[i%2], []string{"s1", "s2"}[i%2], domain.RevealSecret{})
	}
	return w
}

func ptr[T any](v T) *T { return &v }

// oracle computes the records a query should list, newest first, straight
// from the log.
func oracle(t *testing.T, store eventstore.Store, q AuditQuery) []string {
	t.Helper()
	all, err := store.ReadAll(context.Background(), eventstore.ReadAllOptions{})
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		AuditRecord
		seq int
	}
	var recs []rec
	names := map[string]string{}
	for _, r := range all {
		if _, ok := domain.AuditEvent(r.Type); !ok {
			continue
		}
		e, err := domain.Decode(r.Type, r.Data, r.Metadata)
		if err != nil {
			t.Fatal(err)
		}
		id := strings.TrimPrefix(r.StreamID, domain.SecretStreamPrefix)
		a, _ := NewAuditRecord(r, e, names[id])
		names[id] = a.SecretName
		ok := (q.SecretID == "" || a.SecretID == q.SecretID) &&
			(q.SecretName == "" || strings.EqualFold(a.SecretName, q.SecretName)) &&
			(q.Types == nil || slices.Contains(q.Types, a.Type)) &&
			(q.User == "" || a.Actor.ID == q.User) && (q.IP == "" || a.IP == q.IP) &&
			(q.From.IsZero() || !a.At.Before(q.From)) && (q.To.IsZero() || !a.At.After(q.To))
		if ok {
			recs = append(recs, rec{a, len(recs)})
		}
	}
	slices.SortFunc(recs, func(x, y rec) int {
		return cmp.Or(y.At.Compare(x.At), cmp.Compare(y.seq, x.seq))
	})
	ids := []string{}
	for _, r := range recs {
		ids = append(ids, r.EventID)
	}
	return ids
}

// pages walks the report page by page and returns the event IDs in order.
func pages(t *testing.T, r *AuditReader, q AuditQuery, between func()) []string {
	t.Helper()
	ids := []string{}
	for range 1000 {
		page, err := r.Events(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) > q.Limit {
			t.Fatalf("%d items; limit %d", len(page.Items), q.Limit)
		}
		for _, it := range page.Items {
			ids = append(ids, it.EventID)
		}
		if page.Next == "" {
			return ids
		}
		q.Cursor = page.Next
		if between != nil {
			between()
		}
	}
	t.Fatal("the report never ends")
	return nil
}

func TestAuditReportFiltersEachField(t *testing.T) {
	w := auditWorld(t)
	rdb, prefix := newRedis(t)
	p := testProjector(w.store, rdb, prefix, 7, NewAudit(rdb, prefix, quietLogger()))
	run(t, p)
	waitFor(t, p, w.last)
	r := NewAuditReader(rdb, prefix)
	start := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	for name, q := range map[string]AuditQuery{
		"everything":            {},
		"secret name":           {SecretName: "billing api"},
		"secret name renamed":   {SecretName: "Billing API v2"},
		"secret id":             {SecretID: "s2"},
		"type":                  {Types: []string{"ShareGranted"}},
		"event View":            {Types: domain.AuditEventTypes("View")},
		"event Permission":      {Types: domain.AuditEventTypes("Permission change")},
		"user":                  {User: "gus"},
		"ip":                    {IP: "192.0.2.2"},
		"from":                  {From: start.Add(20 * time.Minute)},
		"to":                    {To: start.Add(12 * time.Minute)},
		"from and to":           {From: start.Add(10 * time.Minute), To: start.Add(25 * time.Minute)},
		"user and ip":           {User: "mia", IP: "192.0.2.2"},
		"user and secret":       {User: "olivia", SecretID: "s1", Types: []string{"SecretRevealed"}},
		"several types":         {Types: []string{"SecretDisabled", "SecretEnabled"}},
		"nothing matches":       {User: "olivia", IP: "192.0.2.2"},
		"unknown event":         {Types: []string{}},
		"all filters":           {SecretName: "Mail API", SecretID: "s2", User: "gus", IP: "192.0.2.2", Types: []string{"SecretRevealed"}, From: start, To: start.Add(time.Hour)},
		"type unknown to index": {Types: []string{"NoSuchEvent"}},
		"ties":                  {SecretID: "s3"},
	} {
		t.Run(name, func(t *testing.T) {
			want := oracle(t, w.store, q)
			for _, limit := range []int{1, 3, 100} {
				q.Limit = limit
				if got := pages(t, r, q, nil); !slices.Equal(got, want) {
					t.Fatalf("limit %d: %d records\n%v\nwant %d\n%v", limit, len(got), got, len(want), want)
				}
			}
		})
	}
	if want := oracle(t, w.store, AuditQuery{}); len(want) < 35 {
		t.Fatalf("the world has %d audit events; want over 35", len(want))
	}
	if _, err := r.Events(context.Background(), AuditQuery{Cursor: "not-a-cursor"}); err != ErrBadCursor {
		t.Fatalf("bad cursor: %v; want ErrBadCursor", err)
	}
}

func TestAuditReportPagesWithoutGapsOrDuplicatesWhileEventsArrive(t *testing.T) {
	w := auditWorld(t)
	rdb, prefix := newRedis(t)
	p := testProjector(w.store, rdb, prefix, 0, NewAudit(rdb, prefix, quietLogger()))
	run(t, p)
	waitFor(t, p, w.last)
	r := NewAuditReader(rdb, prefix)
	for name, q := range map[string]AuditQuery{"everything": {Limit: 4}, "one secret": {SecretID: "s1", Limit: 2}} {
		t.Run(name, func(t *testing.T) {
			before := oracle(t, w.store, q)
			n := 0
			got := pages(t, r, q, func() {
				// A newer event, and one recorded with an older time (a
				// slow request), arrive between every two pages.
				n++
				w.secret("olivia", "s1", domain.RevealSecret{})
				w.execute(domain.SecretStream("s1"), func([]domain.Event) ([]domain.Event, error) {
					return []domain.Event{{Meta: domain.Meta{Actor: domain.Actor{ID: "olivia"}, At: w.now.Add(-90 * time.Minute)},
						Payload: domain.SecretCopied{Field: "url"}}}, nil
				})
				waitFor(t, p, w.last)
			})
			if n == 0 {
				t.Fatal("a single page: nothing arrived between pages")
			}
			seen := map[string]bool{}
			for _, id := range got {
				if seen[id] {
					t.Fatalf("event %s listed twice", id)
				}
				seen[id] = true
			}
			for _, id := range before {
				if !seen[id] {
					t.Fatalf("event %s, there before the first page, was skipped", id)
				}
			}
		})
	}
}

func TestAuditProjectionAppliesARedeliveredBatchOnce(t *testing.T) {
	w := auditWorld(t)
	rdb, prefix := newRedis(t)
	a := NewAudit(rdb, prefix, quietLogger())
	b := readAll(t, w.store, a)
	half := Batch{Events: b.Events[:len(b.Events)/2], Position: b.Events[len(b.Events)/2-1].Position}
	for _, batch := range []Batch{half, half, b, half, b} {
		if _, err := a.Apply(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	got := pages(t, NewAuditReader(rdb, prefix), AuditQuery{Limit: 1000}, nil)
	if want := oracle(t, w.store, AuditQuery{}); !slices.Equal(got, want) {
		t.Fatalf("%d records; want %d", len(got), len(want))
	}
}

func TestAuditRecordsKeepSecretValuesOut(t *testing.T) {
	w := newWorld(t)
	w.user("olivia", "Olivia")
	w.secret("olivia", "s1", domain.CreateSecret{SecretID: "s1", SealedClientSecret: []byte("SEALED-BYTES"),
		Fields: domain.SecretFields{Name: "Billing", URL: "https://b.example.com", ClientID: "c"}})
	rdb, prefix := newRedis(t)
	p := testProjector(w.store, rdb, prefix, 0, NewAudit(rdb, prefix, quietLogger()))
	run(t, p)
	waitFor(t, p, w.last)
	for k, v := range dump(t, rdb, prefix) {
		if strings.Contains(v, "SEALED") || strings.Contains(v, "U0VBTEVE") || strings.Contains(v, "sealed") {
			t.Fatalf("key %s holds the sealed client secret: %s", k, v)
		}
	}
	page, err := NewAuditReader(rdb, prefix).Events(context.Background(), AuditQuery{})
	if err != nil || len(page.Items) != 1 || page.Items[0].Hash == "" || page.Items[0].Data["clientSecretSet"] != true {
		t.Fatalf("page = %+v, %v; want the creation, hashed, clientSecretSet", page, err)
	}
}

func TestReachIndexKeepsEverySecretEverGranted(t *testing.T) {
	w := auditWorld(t)
	rdb, prefix := newRedis(t)
	p := testProjector(w.store, rdb, prefix, 0, NewAudit(rdb, prefix, quietLogger()))
	run(t, p)
	waitFor(t, p, w.last)
	r := NewAuditReader(rdb, prefix)
	for user, want := range map[string][]string{"gus": {"s1", "s2", "s3"}, "mia": {"s2", "s3"}, "olivia": {"s1", "s2", "s3"}, "nobody": {}} {
		got, err := r.Reached(context.Background(), domain.User(user))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s reached %v; want %v", user, got, want)
		}
	}
}
