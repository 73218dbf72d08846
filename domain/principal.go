package domain

// PrincipalType says what kind of principal a grant goes to.
type PrincipalType string

const (
	PrincipalUser  PrincipalType = "user"
	PrincipalGroup PrincipalType = "group"
)

// Principal is a user or a group, the grantee of a share.
type Principal struct {
	Type PrincipalType `json:"type"`
	ID   string        `json:"id"`
}

// User is the principal of a user.
func User(id string) Principal { return Principal{Type: PrincipalUser, ID: id} }

// String renders a principal as "type:id", the way errors name it.
func (p Principal) String() string { return string(p.Type) + ":" + p.ID }

// Validate checks the principal's type and id.
func (p Principal) Validate(field string) error {
	if p.Type != PrincipalUser && p.Type != PrincipalGroup {
		return InvalidField(field+".type", "%q is not a principal type; want %q or %q", p.Type, PrincipalUser, PrincipalGroup)
	}
	if p.ID == "" {
		return InvalidField(field+".id", "is required")
	}
	if len(p.ID) > maxIDLength {
		return InvalidField(field+".id", "is %d characters long; at most %d are allowed", len(p.ID), maxIDLength)
	}
	return nil
}

const maxIDLength = 128

// Permission is what a grant allows. Can edit implies can view.
type Permission struct {
	CanView bool `json:"canView"`
	CanEdit bool `json:"canEdit"`
}

// Normalized applies the rule that Can edit implies Can view.
func (p Permission) Normalized() Permission {
	if p.CanEdit {
		p.CanView = true
	}
	return p
}

// Grant is a principal's permission on a secret.
type Grant struct {
	Principal  Principal  `json:"principal"`
	Permission Permission `json:"permission"`
}

func (g Grant) validate(field string) (Grant, error) {
	if err := g.Principal.Validate(field + ".principal"); err != nil {
		return g, err
	}
	g.Permission = g.Permission.Normalized()
	if !g.Permission.CanView {
		return g, InvalidField(field, "the grant for %s allows nothing; set canView or canEdit, or remove the grantee", g.Principal)
	}
	return g, nil
}

func (p Permission) String() string {
	switch {
	case p.CanEdit:
		return "can edit"
	case p.CanView:
		return "can view"
	}
	return "none"
}
