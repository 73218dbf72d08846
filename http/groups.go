package http

// Groups: one stream per group, managed by its owner. A group is a
// principal: a secret shared with it is reachable by each current member,
// and a member's permission is the union of their own grant and their
// groups' grants. Authorization reads the groups' streams, never a read
// model, so removing a member takes access away at once.

import (
	"context"
	"errors"
	nethttp "net/http"
	"slices"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/projections"
)

// GroupReadModels answers the queries on groups, the directory and external
// shares (projections.Reader).
type GroupReadModels interface {
	Group(ctx context.Context, groupID string) (*projections.GroupView, error)
	Groups(ctx context.Context, userID string, admin bool) ([]projections.GroupSummary, error)
	GroupsEver(ctx context.Context, userID string) ([]string, error)
	Principals(ctx context.Context, q projections.DirectoryQuery) ([]projections.PrincipalHit, error)
	Users(ctx context.Context, ids []string) (map[string]projections.UserView, error)
	ExternalShares(ctx context.Context, q projections.ExternalShareQuery) (projections.ExternalSharePage, error)
	DueExternalShares(ctx context.Context, now time.Time, limit int) ([]string, error)
}

// foldGroup rebuilds a group's state from its stream.
func foldGroup(groupID string, history []eventstore.RecordedEvent) (domain.Group, error) {
	g := domain.Group{ID: groupID}
	for _, r := range history {
		e, err := domain.Decode(r.Type, r.Data, r.Metadata)
		if err != nil {
			return g, err
		}
		g.Apply(e)
	}
	return g, nil
}

// loadGroup folds a group's stream as it is now, with the position of its
// last event.
func (c *commands) loadGroup(ctx context.Context, groupID string) (domain.Group, eventstore.Position, error) {
	history, err := c.store.ReadStream(ctx, domain.GroupStream(groupID), eventstore.ReadStreamOptions{})
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return domain.Group{ID: groupID}, eventstore.Start, nil
	}
	if err != nil {
		return domain.Group{}, eventstore.Start, err
	}
	g, err := foldGroup(groupID, history)
	return g, history[len(history)-1].Position, err
}

// resolveGroups loads the groups a secret is shared with from their
// streams and gives the secret their effective members, so that its
// permissions count group grants. The secret's grants name the groups, so
// this reads a bounded number of streams, and always their latest state.
func (c *commands) resolveGroups(ctx context.Context, s *domain.Secret) (map[string]domain.Group, error) {
	groups := map[string]domain.Group{}
	members := domain.GroupMembers{}
	for _, id := range s.GrantedGroups() {
		g, _, err := c.loadGroup(ctx, id)
		if err != nil {
			return nil, err
		}
		groups[id], members[id] = g, g.EffectiveMembers()
	}
	s.Groups = members
	return groups, nil
}

// requireKnownGroup checks that a group exists.
func (c *commands) requireKnownGroup(ctx context.Context, field, groupID string) error {
	_, err := c.store.ReadStream(ctx, domain.GroupStream(groupID), eventstore.ReadStreamOptions{Max: 1})
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return domain.InvalidField(field, "%s is not a known principal; no group has this ID", domain.Principal{Type: domain.PrincipalGroup, ID: groupID})
	}
	return err
}

// onGroup runs a command on a group.
func (c *commands) onGroup(ctx context.Context, req request, groupID string, cmd any) (eventstore.AppendResult, error) {
	return eventstore.Execute(ctx, c.store, eventstore.Command{
		Stream:  domain.GroupStream(groupID),
		EventID: req.derivedID("event"),
		Decide: func(history []eventstore.RecordedEvent) ([]eventstore.EventData, error) {
			g, err := foldGroup(groupID, history)
			if err != nil {
				return nil, err
			}
			events, err := domain.DecideGroup(g, cmd, req.meta)
			if err != nil {
				return nil, err
			}
			return encode(events)
		},
	})
}

// groupInput is the body of create and update; pointers tell "absent".
type groupInput struct {
	Name               *string `json:"name"`
	Description        *string `json:"description"`
	AllowMembersToView *bool   `json:"allowMembersToView"`
}

func (s *Server) createGroup(c *gin.Context) {
	var in struct {
		groupInput
		Status string `json:"status"`
	}
	if !bindJSON(c, &in) {
		return
	}
	if in.Status != "" && in.Status != projections.StatusEnabled && in.Status != projections.StatusDisabled {
		abortWithError(c, domain.InvalidField("status", "%q is not enabled or disabled", in.Status))
		return
	}
	req := s.request(c, identity(c))
	groupID := uuid.NewString()
	if derive := req.derivedID("group"); derive != nil {
		groupID = derive(0).String()
	}
	cmd := domain.CreateGroup{GroupID: groupID, Disabled: in.Status == projections.StatusDisabled}
	if in.Name != nil {
		cmd.Name = *in.Name
	}
	if in.Description != nil {
		cmd.Description = *in.Description
	}
	if in.AllowMembersToView != nil {
		cmd.AllowMembersToView = *in.AllowMembersToView
	}
	res, err := s.cmds.onGroup(c.Request.Context(), req, groupID, cmd)
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusCreated, gin.H{"id": groupID, "revision": res.NextExpectedRevision, "position": res.Position.String()})
}

func (s *Server) updateGroup(c *gin.Context) {
	var in groupInput
	if !bindJSON(c, &in) {
		return
	}
	s.runGroupCommand(c, domain.UpdateGroup{Name: in.Name, Description: in.Description, AllowMembersToView: in.AllowMembersToView})
}

func (s *Server) disableGroup(c *gin.Context) { s.runGroupCommand(c, domain.DisableGroup{}) }
func (s *Server) enableGroup(c *gin.Context)  { s.runGroupCommand(c, domain.EnableGroup{}) }

func (s *Server) addGroupMember(c *gin.Context) {
	var in struct {
		UserID string `json:"userId"`
	}
	if !bindJSON(c, &in) {
		return
	}
	if in.UserID != "" {
		// Only a manager of the group learns whether a user exists.
		g, _, err := s.cmds.loadGroup(c.Request.Context(), c.Param("id"))
		if err == nil {
			err = g.CheckManage(identity(c).UserID)
		}
		if err == nil {
			err = s.cmds.requireKnownUser(c.Request.Context(), "userId", in.UserID)
		}
		if err != nil {
			abortWithError(c, err)
			return
		}
	}
	s.runGroupCommand(c, domain.AddGroupMember{UserID: in.UserID})
}

func (s *Server) removeGroupMember(c *gin.Context) {
	s.runGroupCommand(c, domain.RemoveGroupMember{UserID: c.Param("userId")})
}

// runGroupCommand runs a command on the group named in the path and answers
// with where its events landed.
func (s *Server) runGroupCommand(c *gin.Context, cmd any) {
	res, err := s.cmds.onGroup(c.Request.Context(), s.request(c, identity(c)), c.Param("id"), cmd)
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, writtenOf(res))
}

// groupDetails answers from the read model, deciding who may see the group
// from its stream (its owner, its members if it allows them, admins), as
// the secret details do.
func (s *Server) groupDetails(c *gin.Context) {
	id, who := c.Param("id"), identity(c)
	g, pos, err := s.cmds.loadGroup(c.Request.Context(), id)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if !g.Exists() || !g.CanView(who.UserID) && who.Role != RoleAdmin {
		abortWithError(c, domain.Errorf(domain.NotFound, "group %s not found", id))
		return
	}
	if !s.waitForMinPosition(c) || !s.waitFor(c, pos) {
		return
	}
	v, err := s.cfg.ReadModels.Group(c.Request.Context(), id)
	if err == nil && v == nil {
		err = domain.Errorf(domain.NotFound, "group %s not found", id)
	}
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, v)
}

// listGroups lists the groups the caller may see; an admin sees them all.
func (s *Server) listGroups(c *gin.Context) {
	if !s.waitForMinPosition(c) {
		return
	}
	who := identity(c)
	groups, err := s.cfg.ReadModels.Groups(c.Request.Context(), who.UserID, who.Role == RoleAdmin)
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, gin.H{"groups": groups})
}

// effectiveUser is one user who can reach a secret, and how.
type effectiveUser struct {
	User       projections.UserView `json:"user"`
	CanView    bool                 `json:"canView"`
	CanEdit    bool                 `json:"canEdit"`
	Via        []effectiveVia       `json:"via"`
	permission domain.Permission
}

// effectiveVia is one way a user reaches a secret: as its owner, by a grant
// to them, or by a grant to a group they are an effective member of.
type effectiveVia struct {
	Type    string `json:"type"` // owner, user or group
	GroupID string `json:"groupId,omitempty"`
	Name    string `json:"name,omitempty"` // the group's
	CanView bool   `json:"canView"`
	CanEdit bool   `json:"canEdit"`
}

// effectiveAccess answers GET /secrets/{id}/access/effective: the details'
// access list with each group expanded to its current effective members,
// from the log. Whoever may read the details may ask.
func (s *Server) effectiveAccess(c *gin.Context) {
	id, who := c.Param("id"), identity(c)
	state, groups, _, err := s.cmds.loadSecretAndGroups(c.Request.Context(), id)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if !state.CanRead(who.UserID) && who.Role != RoleAdmin && who.Role != RoleAuditor || !state.Exists() {
		abortWithError(c, domain.Errorf(domain.NotFound, "secret %s not found", id))
		return
	}
	var order []string
	byUser := map[string]*effectiveUser{}
	reach := func(userID string, via effectiveVia) {
		u := byUser[userID]
		if u == nil {
			u = &effectiveUser{User: projections.UserView{ID: userID}}
			byUser[userID] = u
			order = append(order, userID)
		}
		u.Via = append(u.Via, via)
		u.permission.CanView = u.permission.CanView || via.CanView
		u.permission.CanEdit = u.permission.CanEdit || via.CanEdit
	}
	reach(state.Owner, effectiveVia{Type: domain.ViaOwner, CanView: true, CanEdit: true})
	for _, g := range state.Grants {
		via := effectiveVia{Type: string(g.Principal.Type), CanView: g.Permission.CanView, CanEdit: g.Permission.CanEdit}
		if g.Principal.Type == domain.PrincipalUser {
			reach(g.Principal.ID, via)
			continue
		}
		group := groups[g.Principal.ID]
		via.GroupID, via.Name = group.ID, group.Name
		members := group.EffectiveMembers()
		for _, m := range group.Members { // in the order they were added
			if members[m.UserID] {
				reach(m.UserID, via)
			}
		}
	}
	names, err := s.cfg.ReadModels.Users(c.Request.Context(), order)
	if err != nil {
		abortWithError(c, err)
		return
	}
	out := make([]effectiveUser, 0, len(order))
	for _, userID := range order {
		u := byUser[userID]
		u.User = names[userID]
		u.User.Email = "" // the directory's business, not this list's
		u.CanView, u.CanEdit = u.permission.CanView, u.permission.CanEdit
		out = append(out, *u)
	}
	c.JSON(nethttp.StatusOK, gin.H{"secretId": id, "users": out})
}

// groupMembershipHistory is the Membership seam of the access-at-an-instant
// queries (audit.go): the groups the user ever belonged to, from the read
// model's index, and their membership spans, folded from the groups' own
// streams.
func (s *Server) groupMembershipHistory(ctx context.Context, userID string) ([]string, domain.Membership, error) {
	ids, err := s.cfg.ReadModels.GroupsEver(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	histories := map[string]*domain.GroupHistory{}
	for _, id := range ids {
		records, err := s.cfg.Store.ReadStream(ctx, domain.GroupStream(id), eventstore.ReadStreamOptions{})
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		h := domain.NewGroupHistory(id)
		for _, r := range records {
			if !domain.IsKnownEventType(r.Type) {
				continue
			}
			e, err := domain.Decode(r.Type, r.Data, r.Metadata)
			if err != nil {
				return nil, nil, err
			}
			h.Apply(e)
		}
		histories[id] = h
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return histories[id] == nil })
	return ids, domain.GroupMembership(histories), nil
}
