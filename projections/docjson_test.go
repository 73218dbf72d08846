package projections

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// decodeDoc must read every stored document exactly as encoding/json does:
// here, every secret and user document a mixed history leaves in Redis.
func TestDecodeDocReadsDocumentsAsEncodingJSONDoes(t *testing.T) {
	f := newFixture(t)
	history(f.world, 30, 7)
	f.sync(t)
	docs := dump(t, f.r.rdb, string(f.r.keys))
	checked := 0
	for key, raw := range docs {
		var viaDecodeDoc, viaStd any
		switch {
		case strings.HasPrefix(key, "secret:"):
			viaDecodeDoc, viaStd = new(secretDoc), new(secretDoc)
		case strings.HasPrefix(key, "user:"):
			viaDecodeDoc, viaStd = new(userDoc), new(userDoc)
		default:
			continue
		}
		if err := json.Unmarshal([]byte(raw), viaStd); err != nil {
			t.Fatalf("%s: encoding/json: %v", key, err)
		}
		if err := decodeDoc([]byte(raw), viaDecodeDoc); err != nil {
			t.Fatalf("%s: decodeDoc: %v", key, err)
		}
		if !reflect.DeepEqual(viaDecodeDoc, viaStd) {
			t.Errorf("%s: decodeDoc read\n%+v\nencoding/json read\n%+v", key, viaDecodeDoc, viaStd)
		}
		checked++
	}
	if checked < 30 {
		t.Fatalf("only %d documents checked", checked)
	}
	// And a document with every field set, escapes and all.
	used := time.Date(2026, 3, 1, 9, 30, 0, 123456789, time.UTC)
	full := secretDoc{ID: "s-1", Name: "Billing \"API\" <prod> ünïcode ✓", URL: "https://api.example.com/v1?a=1&b=2",
		ClientID: "c\\id", Identifier: "x\ny", Method: "POST", Tags: []string{"prod", "éu"}, Notes: "line1\nline2\t\u2028",
		Owner: Person{ID: "olivia", Name: "Olivia"}, Status: StatusEnabled, CreatedAt: used.Add(-time.Hour), UpdatedAt: used,
		LastUsed: &used, Revision: 42, CreatedPosition: "7-7",
		Grants: []grantDoc{{Principal: PrincipalRef{Type: "user", ID: "gus", Name: "Gus"}, CanView: true, GrantedBy: Person{ID: "olivia"}, GrantedAt: used}}}
	raw, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var viaDecodeDoc, viaStd secretDoc
	if err := decodeDoc(raw, &viaDecodeDoc); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &viaStd); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(viaDecodeDoc, viaStd) {
		t.Errorf("decodeDoc read\n%+v\nencoding/json read\n%+v", viaDecodeDoc, viaStd)
	}
}
