package projections

// The groups read model. The secrets projection (secrets.go) keeps it in
// the same transaction as the access sets that group membership feeds, so
// that a member added to or removed from a group shared on a thousand
// secrets changes a thousand access-set entries atomically with the group:
//
//	<p>group:<groupId>      STRING  JSON groupDoc: id, name, description,
//	                                owner (user ID), status ("enabled" or
//	                                "disabled"), allowMembersToView, members
//	                                in the order added, each {id, addedBy,
//	                                addedAt}, createdAt/By, updatedAt/By,
//	                                revision.
//	<p>groups               SET     every group ID (the administrators' list).
//
// User names are resolved when a group is read, from the user documents, so
// renaming a user rewrites no group.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/domain"
)

func (k keys) allGroups() string { return string(k) + "groups" }

type groupDoc struct {
	ID                 string      `json:"id"`
	Name               string      `json:"name"`
	Description        string      `json:"description"`
	Owner              string      `json:"owner"`
	Status             string      `json:"status"`
	AllowMembersToView bool        `json:"allowMembersToView"`
	Members            []memberDoc `json:"members"`
	CreatedAt          time.Time   `json:"createdAt"`
	CreatedBy          string      `json:"createdBy"`
	UpdatedAt          time.Time   `json:"updatedAt"`
	UpdatedBy          string      `json:"updatedBy"`
	Revision           uint64      `json:"revision"`
}

type memberDoc struct {
	ID      string    `json:"id"`
	AddedBy string    `json:"addedBy"`
	AddedAt time.Time `json:"addedAt"`
}

// effectiveMembers are the users the group's grants reach: its members
// while it is enabled, nobody while it is disabled (domain.Group's rule).
func (g *groupDoc) effectiveMembers() []string {
	if g.Status == StatusDisabled {
		return nil
	}
	out := make([]string, len(g.Members))
	for i, m := range g.Members {
		out[i] = m.ID
	}
	return out
}

func (g *groupDoc) isMember(userID string) bool {
	return slices.ContainsFunc(g.Members, func(m memberDoc) bool { return m.ID == userID })
}

// involved are the users whose groups list shows the group.
func (g *groupDoc) involved() map[string]bool {
	out := map[string]bool{g.Owner: true}
	for _, m := range g.Members {
		out[m.ID] = true
	}
	return out
}

// visibleTo reports whether the user may see the group (domain.Group's
// CanView rule); admins see every group.
func (g *groupDoc) visibleTo(userID string, admin bool) bool {
	return admin || g.Owner == userID || g.AllowMembersToView && g.isMember(userID)
}

// terms are the group's directory entries.
func (g *groupDoc) terms() map[string]bool {
	return directoryEntries(dirKey(domain.PrincipalGroup, g.ID), g.Name)
}

// applyGroup folds one event of a group's stream.
func (f *fold) applyGroup(id string, e decoded) {
	g := f.groups[id]
	if c, ok := e.ev.Payload.(domain.GroupCreated); ok {
		if g != nil {
			return // already created: a replayed event
		}
		status := StatusEnabled
		if c.Disabled {
			status = StatusDisabled
		}
		g = &groupDoc{ID: id, Name: c.Name, Description: c.Description, Owner: c.Owner, Status: status,
			AllowMembersToView: c.AllowMembersToView, Members: []memberDoc{}, CreatedAt: e.ev.At, CreatedBy: e.ev.Actor.ID}
		f.groups[id] = g
		f.join(id, c.Owner)
	} else {
		if g == nil {
			f.log.Warn("secrets projection: event for a group never created; skipped",
				"stream", e.rec.StreamID, "type", e.rec.Type, "position", e.rec.Position.String())
			return
		}
		if e.rec.Revision <= g.Revision {
			return // already applied
		}
	}
	g.Revision, g.UpdatedAt, g.UpdatedBy = e.rec.Revision, e.ev.At, e.ev.Actor.ID
	switch p := e.ev.Payload.(type) {
	case domain.GroupUpdated:
		g.Name, g.Description, g.AllowMembersToView = p.Name, p.Description, p.AllowMembersToView
	case domain.GroupMemberAdded:
		if !g.isMember(p.UserID) {
			g.Members = append(g.Members, memberDoc{ID: p.UserID, AddedBy: e.ev.Actor.ID, AddedAt: e.ev.At})
			f.join(id, p.UserID)
		}
	case domain.GroupMemberRemoved:
		g.Members = slices.DeleteFunc(g.Members, func(m memberDoc) bool { return m.ID == p.UserID })
	case domain.GroupDisabled:
		g.Status = StatusDisabled
	case domain.GroupEnabled:
		g.Status = StatusEnabled
	}
	markDirty(&f.dirtyGroups, id)
}

// join records that a user became a group's owner or member.
func (f *fold) join(groupID, userID string) {
	if f.joined[groupID] == nil {
		f.joined[groupID] = map[string]bool{}
	}
	f.joined[groupID][userID] = true
}

// GroupView is a group as its details page shows it.
type GroupView struct {
	ID                 string        `json:"id"`
	Name               string        `json:"name"`
	Description        string        `json:"description"`
	Owner              Person        `json:"owner"`
	Status             string        `json:"status"`
	AllowMembersToView bool          `json:"allowMembersToView"`
	MemberCount        int           `json:"memberCount"`
	Members            []GroupMember `json:"members"`
	CreatedAt          time.Time     `json:"createdAt"`
	CreatedBy          Person        `json:"createdBy"`
	UpdatedAt          time.Time     `json:"updatedAt"`
	UpdatedBy          Person        `json:"updatedBy"`
	// Revision is the stream revision of the last event shown.
	Revision uint64 `json:"revision"`
}

// GroupMember is one member of a group, with who added them and when.
type GroupMember struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Username string    `json:"username"`
	AddedBy  Person    `json:"addedBy"`
	AddedAt  time.Time `json:"addedAt"`
}

// GroupSummary is one row of the groups list.
type GroupSummary struct {
	ID                 string `json:"id"`
	Name               string `json:"name"`
	Description        string `json:"description"`
	Owner              Person `json:"owner"`
	Status             string `json:"status"`
	AllowMembersToView bool   `json:"allowMembersToView"`
	MemberCount        int    `json:"memberCount"`
}

// Group returns a group's details, or nil, nil if there is no such group.
// It only reads: the HTTP layer decides who may see it.
func (r *Reader) Group(ctx context.Context, groupID string) (*GroupView, error) {
	gs, err := r.groupDocs(ctx, []string{groupID})
	if err != nil || len(gs) == 0 {
		return nil, err
	}
	g := gs[0]
	ids := []string{g.Owner, g.CreatedBy, g.UpdatedBy}
	for _, m := range g.Members {
		ids = append(ids, m.ID, m.AddedBy)
	}
	users, err := r.userDocs(ctx, ids)
	if err != nil {
		return nil, err
	}
	person := func(id string) Person { return Person{ID: id, Name: users[id].Name} }
	v := &GroupView{ID: g.ID, Name: g.Name, Description: g.Description, Owner: person(g.Owner), Status: g.Status,
		AllowMembersToView: g.AllowMembersToView, MemberCount: len(g.Members), Members: make([]GroupMember, 0, len(g.Members)),
		CreatedAt: g.CreatedAt, CreatedBy: person(g.CreatedBy), UpdatedAt: g.UpdatedAt, UpdatedBy: person(g.UpdatedBy), Revision: g.Revision}
	for _, m := range g.Members {
		u := users[m.ID]
		v.Members = append(v.Members, GroupMember{ID: m.ID, Name: u.Name, Username: u.username(), AddedBy: person(m.AddedBy), AddedAt: m.AddedAt})
	}
	return v, nil
}

// Groups lists the groups userID may see (all of them for an admin), by
// name.
func (r *Reader) Groups(ctx context.Context, userID string, admin bool) ([]GroupSummary, error) {
	key := r.keys.groupsOf(userID)
	if admin {
		key = r.keys.allGroups()
	}
	ids, err := r.rdb.SMembers(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("groups of %s: %w", userID, err)
	}
	gs, err := r.groupDocs(ctx, ids)
	if err != nil {
		return nil, err
	}
	owners := make([]string, len(gs))
	for i, g := range gs {
		owners[i] = g.Owner
	}
	users, err := r.userDocs(ctx, owners)
	if err != nil {
		return nil, err
	}
	out := []GroupSummary{}
	for _, g := range gs {
		if g.visibleTo(userID, admin) {
			out = append(out, GroupSummary{ID: g.ID, Name: g.Name, Description: g.Description, Owner: Person{ID: g.Owner, Name: users[g.Owner].Name},
				Status: g.Status, AllowMembersToView: g.AllowMembersToView, MemberCount: len(g.Members)})
		}
	}
	slices.SortFunc(out, func(a, b GroupSummary) int {
		return cmpFold(a.Name, b.Name, a.ID, b.ID)
	})
	return out, nil
}

// cmpFold orders by name ignoring case, then by ID.
func cmpFold(nameA, nameB, idA, idB string) int {
	if c := strings.Compare(strings.ToLower(nameA), strings.ToLower(nameB)); c != 0 {
		return c
	}
	return strings.Compare(idA, idB)
}

// groupDocs loads groups in one round trip, in order, leaving out missing
// ones.
func (r *Reader) groupDocs(ctx context.Context, ids []string) ([]*groupDoc, error) {
	found := map[string]*groupDoc{}
	if err := readDocs(ctx, r.rdb, ids, r.keys.group, found, "group"); err != nil {
		return nil, err
	}
	out := make([]*groupDoc, 0, len(found))
	for _, id := range ids {
		if g := found[id]; g != nil {
			out = append(out, g)
		}
	}
	return out, nil
}

// userDocs loads users in one round trip; a missing user reads as a
// document with its ID only.
func (r *Reader) userDocs(ctx context.Context, ids []string) (map[string]*userDoc, error) {
	var unique idList
	for _, id := range ids {
		unique.add(id)
	}
	found := map[string]*userDoc{}
	if err := readDocs(ctx, r.rdb, unique.list, r.keys.user, found, "user"); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if found[id] == nil {
			found[id] = &userDoc{ID: id}
		}
	}
	return found, nil
}

// readDocs reads JSON documents of one kind in one round trip.
func readDocs[T any](ctx context.Context, rdb redis.UniversalClient, ids []string, key func(string) string, into map[string]*T, what string) error {
	if len(ids) == 0 {
		return nil
	}
	var cmds []*redis.SliceCmd
	_, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		cmds = mget(ctx, pipe, ids, key)
		return nil
	})
	if err != nil {
		return fmt.Errorf("load %ss: %w", what, err)
	}
	return decodeInto(ids, cmds, into, what)
}

// GroupsEver lists the groups the user ever owned or was listed in.
func (r *Reader) GroupsEver(ctx context.Context, userID string) ([]string, error) {
	ids, err := r.rdb.SMembers(ctx, r.keys.groupsEver(userID)).Result()
	if err != nil {
		return nil, fmt.Errorf("groups ever of %s: %w", userID, err)
	}
	slices.Sort(ids)
	return ids, nil
}

// Users returns the users' names and usernames by ID; unknown users have
// an empty name.
func (r *Reader) Users(ctx context.Context, ids []string) (map[string]UserView, error) {
	docs, err := r.userDocs(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]UserView, len(ids))
	for _, id := range ids {
		u := docs[id]
		out[id] = UserView{ID: id, Name: u.Name, Username: u.username(), Email: u.Email}
	}
	return out, nil
}

// UserView is a user as the directory shows one.
type UserView struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Username string `json:"username"`
	Email    string `json:"email"`
}
