package domain

import (
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// GroupStreamPrefix is the category of group streams.
const GroupStreamPrefix = "group-"

// GroupStream is the stream of one group.
func GroupStream(groupID string) string { return GroupStreamPrefix + groupID }

// Limits on a group.
const (
	MaxGroupDescriptionLength = 500
	MaxGroupMembers           = 10000
)

// GroupCreated starts a group's stream. The creator owns the group.
type GroupCreated struct {
	GroupID            string `json:"groupId"`
	Owner              string `json:"owner"`
	Name               string `json:"name"`
	Description        string `json:"description,omitempty"`
	AllowMembersToView bool   `json:"allowMembersToView"`
	// Disabled is true when the group is created disabled.
	Disabled bool `json:"disabled,omitempty"`
}

// GroupUpdated records a rename or a new description or visibility: it
// holds every attribute after the change, Changed names those that differ.
type GroupUpdated struct {
	Name               string   `json:"name"`
	Description        string   `json:"description,omitempty"`
	AllowMembersToView bool     `json:"allowMembersToView"`
	Changed            []string `json:"changed"`
}

// GroupMemberAdded adds a user to a group; the event's actor and time are
// the member's "added by" and "added on".
type GroupMemberAdded struct {
	UserID string `json:"userId"`
}

// GroupMemberRemoved takes a user out of a group: they lose, at once,
// whatever they could reach through it.
type GroupMemberRemoved struct {
	UserID string `json:"userId"`
}

// GroupDisabled suspends a group: its grants reach nobody until it is
// enabled again.
type GroupDisabled struct{}

// GroupEnabled lifts GroupDisabled.
type GroupEnabled struct{}

func (GroupCreated) EventType() string       { return "GroupCreated" }
func (GroupUpdated) EventType() string       { return "GroupUpdated" }
func (GroupMemberAdded) EventType() string   { return "GroupMemberAdded" }
func (GroupMemberRemoved) EventType() string { return "GroupMemberRemoved" }
func (GroupDisabled) EventType() string      { return "GroupDisabled" }
func (GroupEnabled) EventType() string       { return "GroupEnabled" }

// Member is one member of a group.
type Member struct {
	UserID  string
	AddedBy Actor
	AddedAt time.Time
}

// Group is the state of one group, folded from its stream. A group is a
// principal: a secret shared with it is reachable by each of its current
// members. Start from Group{ID: id} so that errors can name a group that
// does not exist.
type Group struct {
	ID                 string
	created            bool
	Owner              string
	Name               string
	Description        string
	AllowMembersToView bool
	Disabled           bool
	Members            []Member // in the order they were added
	CreatedAt          time.Time
}

// Exists reports whether the group has been created.
func (g *Group) Exists() bool { return g.created }

// Apply folds one event into the state.
func (g *Group) Apply(e Event) {
	switch p := e.Payload.(type) {
	case GroupCreated:
		*g = Group{ID: p.GroupID, created: true, Owner: p.Owner, Name: p.Name, Description: p.Description,
			AllowMembersToView: p.AllowMembersToView, Disabled: p.Disabled, CreatedAt: e.At}
	case GroupUpdated:
		g.Name, g.Description, g.AllowMembersToView = p.Name, p.Description, p.AllowMembersToView
	case GroupMemberAdded:
		if !g.IsMember(p.UserID) {
			g.Members = append(g.Members, Member{UserID: p.UserID, AddedBy: e.Actor, AddedAt: e.At})
		}
	case GroupMemberRemoved:
		g.Members = slices.DeleteFunc(g.Members, func(m Member) bool { return m.UserID == p.UserID })
	case GroupDisabled:
		g.Disabled = true
	case GroupEnabled:
		g.Disabled = false
	}
}

// IsMember reports whether the user is listed in the group, enabled or not.
func (g *Group) IsMember(userID string) bool {
	return slices.ContainsFunc(g.Members, func(m Member) bool { return m.UserID == userID })
}

// EffectiveMembers are the users the group's grants reach: its members
// while it is enabled, nobody while it is disabled.
func (g *Group) EffectiveMembers() map[string]bool {
	out := map[string]bool{}
	if !g.created || g.Disabled {
		return out
	}
	for _, m := range g.Members {
		out[m.UserID] = true
	}
	return out
}

// CanView reports whether the user may see the group and its members: its
// owner, and its members when it allows them to.
func (g *Group) CanView(userID string) bool {
	return g.created && (g.Owner == userID || g.AllowMembersToView && g.IsMember(userID))
}

// GroupMembers maps the IDs of groups to the sets of their effective
// members. A Secret consults it for its group grants.
type GroupMembers map[string]map[string]bool

// Has reports whether the user is an effective member of the group.
func (m GroupMembers) Has(groupID, userID string) bool { return m[groupID][userID] }

// Commands on a group.
type (
	CreateGroup struct {
		GroupID            string
		Name               string
		Description        string
		AllowMembersToView bool
		Disabled           bool
	}
	// UpdateGroup changes the attributes given; nil means unchanged.
	UpdateGroup struct {
		Name               *string
		Description        *string
		AllowMembersToView *bool
	}
	AddGroupMember    struct{ UserID string }
	RemoveGroupMember struct{ UserID string }
	DisableGroup      struct{}
	EnableGroup       struct{}
)

// DecideGroup decides what a command does to a group: the new events, or an
// error saying why not. Only the group's owner manages it.
func DecideGroup(g Group, cmd any, meta Meta) ([]Event, error) {
	payloads, err := decideGroup(&g, cmd, meta.Actor.ID)
	if err != nil {
		return nil, err
	}
	events := make([]Event, len(payloads))
	for i, p := range payloads {
		events[i] = Event{Meta: meta, Payload: p}
	}
	return events, nil
}

func decideGroup(g *Group, cmd any, actor string) ([]Payload, error) {
	if c, ok := cmd.(CreateGroup); ok {
		if g.Exists() {
			return nil, Errorf(Conflict, "group %s already exists", g.ID)
		}
		if c.GroupID == "" || c.GroupID != g.ID {
			return nil, Errorf(Other, "create: group ID %q does not match its stream's %q", c.GroupID, g.ID)
		}
		name, desc, err := groupAttributes(c.Name, c.Description)
		if err != nil {
			return nil, err
		}
		return []Payload{GroupCreated{GroupID: c.GroupID, Owner: actor, Name: name, Description: desc,
			AllowMembersToView: c.AllowMembersToView, Disabled: c.Disabled}}, nil
	}
	if err := g.CheckManage(actor); err != nil {
		return nil, err
	}
	switch c := cmd.(type) {
	case UpdateGroup:
		next := GroupUpdated{Name: g.Name, Description: g.Description, AllowMembersToView: g.AllowMembersToView}
		if c.Name != nil {
			next.Name = *c.Name
		}
		if c.Description != nil {
			next.Description = *c.Description
		}
		if c.AllowMembersToView != nil {
			next.AllowMembersToView = *c.AllowMembersToView
		}
		var err error
		if next.Name, next.Description, err = groupAttributes(next.Name, next.Description); err != nil {
			return nil, err
		}
		for _, f := range []struct {
			name string
			same bool
		}{{"name", next.Name == g.Name}, {"description", next.Description == g.Description},
			{"allowMembersToView", next.AllowMembersToView == g.AllowMembersToView}} {
			if !f.same {
				next.Changed = append(next.Changed, f.name)
			}
		}
		if len(next.Changed) == 0 {
			return nil, nil
		}
		return []Payload{next}, nil
	case AddGroupMember:
		if err := validateUserID("userId", c.UserID); err != nil {
			return nil, err
		}
		if g.IsMember(c.UserID) {
			return nil, Errorf(Conflict, "user:%s is already a member of group %q", c.UserID, g.Name)
		}
		if len(g.Members) >= MaxGroupMembers {
			return nil, Errorf(Conflict, "group %q has %d members, the most a group may have", g.Name, MaxGroupMembers)
		}
		return []Payload{GroupMemberAdded{UserID: c.UserID}}, nil
	case RemoveGroupMember:
		if !g.IsMember(c.UserID) {
			return nil, Errorf(NotFound, "user:%s is not a member of group %q, so there is nobody to remove", c.UserID, g.Name)
		}
		return []Payload{GroupMemberRemoved{UserID: c.UserID}}, nil
	case DisableGroup:
		if g.Disabled {
			return nil, nil
		}
		return []Payload{GroupDisabled{}}, nil
	case EnableGroup:
		if !g.Disabled {
			return nil, nil
		}
		return []Payload{GroupEnabled{}}, nil
	}
	return nil, Errorf(Other, "unknown command %T", cmd)
}

// CheckManage tells whether the user may change the group: NotFound if they
// may not even see it, Forbidden if they may only see it.
func (g *Group) CheckManage(userID string) error {
	if !g.CanView(userID) {
		return Errorf(NotFound, "group %s not found", g.ID)
	}
	if g.Owner != userID {
		return Errorf(Forbidden, "only the owner of group %q may change it", g.Name)
	}
	return nil
}

func groupAttributes(name, description string) (string, string, error) {
	name, description = strings.TrimSpace(name), strings.TrimSpace(description)
	switch {
	case name == "":
		return "", "", InvalidField("name", "is required")
	case utf8.RuneCountInString(name) > MaxNameLength:
		return "", "", InvalidField("name", "is %d characters long; at most %d are allowed", utf8.RuneCountInString(name), MaxNameLength)
	case utf8.RuneCountInString(description) > MaxGroupDescriptionLength:
		return "", "", InvalidField("description", "is %d characters long; at most %d are allowed", utf8.RuneCountInString(description), MaxGroupDescriptionLength)
	}
	return name, description, nil
}

func validateUserID(field, id string) error {
	switch {
	case id == "":
		return InvalidField(field, "is required")
	case len(id) > maxIDLength:
		return InvalidField(field, "is %d characters long; at most %d are allowed", len(id), maxIDLength)
	}
	return nil
}
