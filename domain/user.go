package domain

import (
	"strings"
	"unicode/utf8"
)

// UserRecord is a user's directory entry, folded from the user's stream.
type UserRecord struct {
	ID         string
	Name       string
	Email      string
	Registered bool
}

// Apply folds one event into the record.
func (u *UserRecord) Apply(e Event) {
	if p, ok := e.Payload.(UserRegistered); ok {
		*u = UserRecord{ID: p.UserID, Name: p.Name, Email: p.Email, Registered: true}
	}
}

// RegisterUser records a user the first time their token is seen.
type RegisterUser struct {
	UserID string
	Name   string
	Email  string
}

// DecideUser decides what a command does to a user record.
func DecideUser(u UserRecord, c RegisterUser, meta Meta) ([]Event, error) {
	if u.Registered {
		return nil, nil
	}
	if c.UserID == "" {
		return nil, InvalidField("sub", "the token names no user")
	}
	if len(c.UserID) > maxIDLength {
		return nil, InvalidField("sub", "user ID is %d characters long; at most %d are allowed", len(c.UserID), maxIDLength)
	}
	name := strings.TrimSpace(c.Name)
	if utf8.RuneCountInString(name) > MaxNameLength {
		return nil, InvalidField("name", "is %d characters long; at most %d are allowed", utf8.RuneCountInString(name), MaxNameLength)
	}
	return []Event{{Meta: meta, Payload: UserRegistered{UserID: c.UserID, Name: name, Email: strings.TrimSpace(c.Email)}}}, nil
}
