package domain

import "time"

// Group membership over time, for the access-at-an-instant queries
// (access.go): a grant to a group reaches a user at T when the user was an
// effective member of the group at T: listed in it while it was enabled.

// GroupHistory is the membership history of one group. Build it with
// NewGroupHistory and Apply, or FoldGroupHistory.
type GroupHistory struct {
	GroupID string

	spans    map[string][]Span // user → spans of effective membership, in order
	listed   map[string]bool   // current members, enabled or not
	disabled bool
	clock    time.Time
}

// NewGroupHistory starts the membership history of a group.
func NewGroupHistory(groupID string) *GroupHistory {
	return &GroupHistory{GroupID: groupID, spans: map[string][]Span{}, listed: map[string]bool{}}
}

// FoldGroupHistory folds a group's events, in stream order.
func FoldGroupHistory(groupID string, events []Event) *GroupHistory {
	h := NewGroupHistory(groupID)
	for _, e := range events {
		h.Apply(e)
	}
	return h
}

// Apply folds the next event of the group's stream. As in SecretAccess, an
// event's time is taken as no earlier than the one before it.
func (h *GroupHistory) Apply(e Event) {
	t := e.At.UTC()
	if t.Before(h.clock) {
		t = h.clock
	}
	h.clock = t
	switch p := e.Payload.(type) {
	case GroupCreated:
		h.disabled = p.Disabled
	case GroupMemberAdded:
		if !h.listed[p.UserID] {
			h.listed[p.UserID] = true
			if !h.disabled {
				h.open(p.UserID, t)
			}
		}
	case GroupMemberRemoved:
		if h.listed[p.UserID] {
			delete(h.listed, p.UserID)
			h.close(p.UserID, t)
		}
	case GroupDisabled:
		if !h.disabled {
			h.disabled = true
			for u := range h.listed {
				h.close(u, t)
			}
		}
	case GroupEnabled:
		if h.disabled {
			h.disabled = false
			for u := range h.listed {
				h.open(u, t)
			}
		}
	}
}

func (h *GroupHistory) open(userID string, t time.Time) {
	h.spans[userID] = append(h.spans[userID], Span{From: t})
}

func (h *GroupHistory) close(userID string, t time.Time) {
	if s := h.spans[userID]; len(s) > 0 && s[len(s)-1].To.IsZero() {
		s[len(s)-1].To = t
		if s[len(s)-1].From.Equal(t) {
			// Added and removed at the same instant: never a member.
			h.spans[userID] = s[:len(s)-1]
		}
	}
}

// Spans lists the spans during which the user was an effective member.
func (h *GroupHistory) Spans(userID string) []Span { return h.spans[userID] }

// MembersAt lists the effective members at t.
func (h *GroupHistory) MembersAt(t time.Time) []string {
	var out []string
	for u, spans := range h.spans {
		for _, s := range spans {
			if s.Contains(t) {
				out = append(out, u)
				break
			}
		}
	}
	return out
}

// GroupMembership is the Membership that the access fold consults, answered
// from these groups' histories (by group ID); a group not among them reaches
// nobody.
func GroupMembership(histories map[string]*GroupHistory) Membership {
	return func(groupID, userID string) []Span {
		if h := histories[groupID]; h != nil {
			return h.Spans(userID)
		}
		return nil
	}
}
