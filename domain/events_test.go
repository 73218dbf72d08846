package domain_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/mysafe/mysafe/domain"
)

var update = flag.Bool("update", false, "rewrite the golden event fixtures (only for a new event type or schema version)")

// storedEvent is an event as the log keeps it.
type storedEvent struct {
	Type     string          `json:"type"`
	Data     json.RawMessage `json:"data"`
	Metadata json.RawMessage `json:"metadata"`
}

// goldenEvents is one example of every event type. Its fixture in
// testdata/events must keep decoding to it for as long as mysafe runs: old
// events stay in the log forever.
var goldenEvents = []domain.Event{
	{Meta: metaV1, Payload: domain.SecretCreated{SecretID: "s1", Owner: "olivia", Fields: domain.SecretFields{Name: "Billing API", URL: "https://billing.example.com", ClientID: "client-1", Identifier: "billing", Method: "POST", Tags: []string{"prod"}, Notes: "n"}, SealedClientSecret: []byte{1, 2, 3}}},
	{Meta: metaV1, Payload: domain.SecretUpdated{Fields: domain.SecretFields{Name: "Billing", URL: "https://billing.example.com", ClientID: "client-1"}, Changed: []string{"name", "clientSecret"}, SealedClientSecret: []byte{4, 5}}},
	{Meta: metaV1, Payload: domain.SecretDisabled{}},
	{Meta: metaV1, Payload: domain.SecretEnabled{}},
	{Meta: metaV1, Payload: domain.ShareGranted{Principal: domain.User("gus"), Permission: domain.Permission{CanView: true}}},
	{Meta: metaV1, Payload: domain.SharePermissionChanged{Principal: domain.User("gus"), Before: domain.Permission{CanView: true}, After: domain.Permission{CanView: true, CanEdit: true}}},
	{Meta: metaV1, Payload: domain.ShareRevoked{Principal: domain.Principal{Type: domain.PrincipalGroup, ID: "ops"}, Before: domain.Permission{CanView: true}}},
	{Meta: metaV1, Payload: domain.SecretRevealed{}},
	{Meta: metaV1, Payload: domain.SecretCopied{Field: "clientId"}},
	{Meta: metaV1, Payload: domain.UserRegistered{UserID: "gus", Name: "Gus", Email: "gus@example.com"}},
	{Meta: metaV1, Payload: domain.SecretKeyIssued{WrappedKey: []byte{9, 9}}},
	// Groups, the directory and external shares.
	{Meta: metaV1, Payload: domain.GroupCreated{GroupID: "g1", Owner: "olivia", Name: "ops", Description: "on call", AllowMembersToView: true}},
	{Meta: metaV1, Payload: domain.GroupUpdated{Name: "sre", Description: "on call", AllowMembersToView: true, Changed: []string{"name"}}},
	{Meta: metaV1, Payload: domain.GroupMemberAdded{UserID: "gus"}},
	{Meta: metaV1, Payload: domain.GroupMemberRemoved{UserID: "gus"}},
	{Meta: metaV1, Payload: domain.GroupDisabled{}},
	{Meta: metaV1, Payload: domain.GroupEnabled{}},
	{Meta: metaV1, Payload: domain.UserUpdated{UserID: "gus", Name: "Gus Grantee", Username: "gus.g", Email: "gus@example.com", Changed: []string{"name", "username"}}},
	{Meta: metaV1, Payload: domain.SecretSharedExternally{ShareID: "x1", ExternalShareTerms: goldenTerms}},
	{Meta: metaV1, Payload: domain.ExternalShareCreated{ShareID: "x1", SecretID: "s1", SecretName: "Billing API", Sharer: "olivia", ExternalShareTerms: goldenTerms, TokenHash: "ab12"}},
	{Meta: metaV1, Payload: domain.ExternalShareLinkResent{TokenHash: "cd34"}},
	{Meta: metaV1, Payload: domain.ExternalShareCodeSent{CodeHash: "ef56", ExpiresAt: t0.Add(10 * time.Minute)}},
	{Meta: metaV1, Payload: domain.ExternalShareCodeRejected{WrongCodes: 1}},
	{Meta: metaV1, Payload: domain.ExternalShareAccessed{Accesses: 1, Remaining: &goldenOne}},
	{Meta: metaV1, Payload: domain.ExternalShareExhausted{}},
	{Meta: metaV1, Payload: domain.ExternalShareExpired{}},
	{Meta: metaV1, Payload: domain.ExternalShareRevoked{ExpiresAt: t0}},
	{Meta: metaV1, Payload: domain.ExternalShareLocked{WrongCodes: 5}},
}

var (
	goldenTwo, goldenOne = 2, 1
	goldenTerms          = domain.ExternalShareTerms{RecipientEmail: "rita@example.com", ExpiresAt: t0.Add(24 * time.Hour), MaxAccesses: &goldenTwo}
)

var metaV1 = domain.Meta{Schema: 1, Actor: domain.Actor{ID: "olivia", Name: "Olivia"}, At: t0,
	CorrelationID: "req-1", ClientIP: "192.0.2.1", UserAgent: "curl/8"}

func TestGoldenEventsStillDecode(t *testing.T) {
	seen := map[string]bool{}
	for _, want := range goldenEvents {
		path := filepath.Join("testdata", "events", want.Type()+".v1.json")
		seen[want.Type()] = true
		if *update {
			typ, data, meta, err := domain.Encode(want)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.MarshalIndent(storedEvent{typ, data, meta}, "", "  ")
			if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v (a new event type needs a fixture: go test ./domain -update)", want.Type(), err)
		}
		var stored storedEvent
		if err := json.Unmarshal(b, &stored); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		got, err := domain.Decode(stored.Type, stored.Data, stored.Metadata)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s decodes to\n%#v\nwant\n%#v", path, got, want)
		}
	}
	for _, typ := range []string{"SecretCreated", "SecretUpdated", "SecretDisabled", "SecretEnabled", "ShareGranted",
		"SharePermissionChanged", "ShareRevoked", "SecretRevealed", "SecretCopied", "UserRegistered", "SecretKeyIssued"} {
		if !domain.IsKnownEventType(typ) || !seen[typ] {
			t.Errorf("event type %s: known %v, golden fixture %v", typ, domain.IsKnownEventType(typ), seen[typ])
		}
	}
}

func TestDecodeUnknownType(t *testing.T) {
	if _, err := domain.Decode("NoSuchEvent", []byte(`{}`), nil); err == nil {
		t.Fatal("decoding an unknown event type succeeded")
	}
}
