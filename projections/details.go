package projections

// The details page ("View API secret"): every field but the client secret,
// and "Users with access to information", each grantee with its
// permissions. Its data is one secret document of the secrets projection
// (secrets.go).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Details is the details page of one secret.
type Details struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	URL        string     `json:"url"`
	ClientID   string     `json:"clientId"`
	Identifier string     `json:"identifier"`
	Method     string     `json:"method"`
	Tags       []string   `json:"tags"`
	Notes      string     `json:"notes"`
	Owner      Person     `json:"owner"`
	Status     string     `json:"status"`
	Shared     bool       `json:"shared"`
	CreatedAt  time.Time  `json:"createdAt"`
	UpdatedAt  time.Time  `json:"updatedAt"`
	LastUsed   *time.Time `json:"lastUsed"`
	// Revision is the stream revision of the last event shown, usable as
	// the expected revision (If-Match) of a change.
	Revision uint64 `json:"revision"`
	// Access lists the grantees in the order they were granted; empty (not
	// null) when the secret is not shared.
	Access []Access `json:"access"`
}

// Access is one grantee of a secret.
type Access struct {
	Principal PrincipalRef `json:"principal"`
	CanView   bool         `json:"canView"`
	CanEdit   bool         `json:"canEdit"`
	// GrantedBy and GrantedAt are who set the current permission and when.
	GrantedBy Person    `json:"grantedBy"`
	GrantedAt time.Time `json:"grantedAt"`
	// MemberCount is, for a group, how many members it has; the group
	// shows as one grantee, GET .../access/effective expands it.
	MemberCount *int `json:"memberCount,omitempty"`
}

// Details returns the details of a secret in one round trip, or nil, nil
// if there is no such secret.
func (r *Reader) Details(ctx context.Context, secretID string) (*Details, error) {
	v, err := r.rdb.Get(ctx, r.keys.secret(secretID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("details of secret %s: %w", secretID, err)
	}
	var d secretDoc
	if err := decodeDoc(v, &d); err != nil {
		return nil, fmt.Errorf("details of secret %s: stored document: %w", secretID, err)
	}
	out := &Details{ID: d.ID, Name: d.Name, URL: d.URL, ClientID: d.ClientID, Identifier: d.Identifier,
		Method: d.Method, Tags: d.tags(), Notes: d.Notes, Owner: d.Owner, Status: d.Status, Shared: d.shared(),
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, LastUsed: d.LastUsed, Revision: d.Revision,
		Access: make([]Access, 0, len(d.Grants))}
	for _, g := range d.Grants {
		out.Access = append(out.Access, Access{Principal: g.Principal, CanView: g.CanView, CanEdit: g.CanEdit,
			GrantedBy: g.GrantedBy, GrantedAt: g.GrantedAt})
	}
	if err := r.describeGroups(ctx, out.Access); err != nil {
		return nil, fmt.Errorf("details of secret %s: %w", secretID, err)
	}
	return out, nil
}

// describeGroups gives each group grantee its current name and member
// count, read from the group documents (one more round trip, only when the
// secret is shared with groups).
func (r *Reader) describeGroups(ctx context.Context, access []Access) error {
	var groupIDs idList
	for _, a := range access {
		if a.Principal.Type == "group" {
			groupIDs.add(a.Principal.ID)
		}
	}
	if len(groupIDs.list) == 0 {
		return nil
	}
	groups, err := r.groupDocs(ctx, groupIDs.list)
	if err != nil {
		return err
	}
	for _, g := range groups {
		for i := range access {
			if a := &access[i]; a.Principal.Type == "group" && a.Principal.ID == g.ID {
				n := len(g.Members)
				a.Principal.Name, a.MemberCount = g.Name, &n
			}
		}
	}
	return nil
}
