package domain

import (
	"strings"
	"unicode/utf8"
)

// UserRecord is a user's directory entry, folded from the user's stream.
type UserRecord struct {
	ID         string
	Name       string
	Username   string // the login name the directory shows; the ID unless imported otherwise
	Email      string
	Registered bool
}

// Apply folds one event into the record.
func (u *UserRecord) Apply(e Event) {
	switch p := e.Payload.(type) {
	case UserRegistered:
		*u = UserRecord{ID: p.UserID, Name: p.Name, Username: p.UserID, Email: p.Email, Registered: true}
	case UserUpdated:
		*u = UserRecord{ID: p.UserID, Name: p.Name, Username: p.Username, Email: p.Email, Registered: true}
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

// UserUpdated records an administrator's import or update of a user's
// directory entry: every attribute after the change. It makes the user
// known (a principal one can share with) before their first sign-in.
type UserUpdated struct {
	UserID   string   `json:"userId"`
	Name     string   `json:"name"`
	Username string   `json:"username"`
	Email    string   `json:"email,omitempty"`
	Changed  []string `json:"changed"`
}

func (UserUpdated) EventType() string { return "UserUpdated" }

// UpdateUser imports or updates a user's directory entry.
type UpdateUser struct {
	UserID   string
	Name     string
	Username string // empty: the user ID
	Email    string
}

// DecideUserUpdate decides an import or update of a user: nothing when the
// entry already reads so.
func DecideUserUpdate(u UserRecord, c UpdateUser, meta Meta) ([]Event, error) {
	if err := validateUserID("id", c.UserID); err != nil {
		return nil, err
	}
	next := UserUpdated{UserID: c.UserID, Name: strings.TrimSpace(c.Name), Username: strings.TrimSpace(c.Username), Email: strings.TrimSpace(c.Email)}
	if next.Username == "" {
		next.Username = c.UserID
	}
	switch {
	case next.Name == "":
		return nil, InvalidField("name", "is required")
	case utf8.RuneCountInString(next.Name) > MaxNameLength:
		return nil, InvalidField("name", "is %d characters long; at most %d are allowed", utf8.RuneCountInString(next.Name), MaxNameLength)
	case len(next.Username) > maxIDLength || strings.ContainsAny(next.Username, " \t\r\n"):
		return nil, InvalidField("username", "%q is not a username: at most %d characters, no spaces", next.Username, maxIDLength)
	}
	if err := ValidateEmail("email", next.Email, false); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		same bool
	}{{"name", next.Name == u.Name}, {"username", next.Username == u.Username}, {"email", next.Email == u.Email}} {
		if !f.same || !u.Registered {
			next.Changed = append(next.Changed, f.name)
		}
	}
	if u.Registered && len(next.Changed) == 0 {
		return nil, nil
	}
	return []Event{{Meta: meta, Payload: next}}, nil
}
