package http

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"

	"github.com/mysafe/mysafe/domain"
)

// Role is what a user may do beyond their own secrets.
type Role string

const (
	RoleUser    Role = "user"
	RoleAdmin   Role = "admin"
	RoleAuditor Role = "auditor"
)

// Roles lists the valid roles.
var Roles = []Role{RoleUser, RoleAdmin, RoleAuditor}

// Identity is the authenticated caller.
type Identity struct {
	UserID string
	Name   string
	Email  string
	Role   Role
}

// Actor is the identity as events record it.
func (id Identity) Actor() domain.Actor { return domain.Actor{ID: id.UserID, Name: id.Name} }

// claims is the JWT body mysafe issues and accepts.
type claims struct {
	jwt.RegisteredClaims
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	Role  Role   `json:"role"`
}

// tokenIssuer names mysafe in its tokens so that tokens of another service
// signed with a reused key are still refused.
const tokenIssuer = "mysafe"

// IssueToken signs a bearer token for the identity (HS256).
func IssueToken(signingKey []byte, id Identity, ttl time.Duration, now time.Time) (string, error) {
	if id.UserID == "" {
		return "", fmt.Errorf("token: a user ID is required")
	}
	if !slices.Contains(Roles, id.Role) {
		return "", fmt.Errorf("token: role %q is not one of %v", id.Role, Roles)
	}
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   id.UserID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Name: id.Name, Email: id.Email, Role: id.Role,
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(signingKey)
}

// authenticator checks bearer tokens.
type authenticator struct {
	key    []byte
	parser *jwt.Parser
}

func newAuthenticator(signingKey []byte, now func() time.Time) *authenticator {
	return &authenticator{key: signingKey, parser: jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(now),
	)}
}

func (a *authenticator) identify(header string) (Identity, error) {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return Identity{}, domain.Errorf(domain.Unauthenticated, "an Authorization: Bearer <token> header is required; `mysafe token` issues one")
	}
	var c claims
	if _, err := a.parser.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return a.key, nil }); err != nil {
		// The parser's reasons (expired, bad signature) are safe to show.
		return Identity{}, domain.Errorf(domain.Unauthenticated, "the bearer token is not valid: %v", err)
	}
	if c.Subject == "" || !slices.Contains(Roles, c.Role) {
		return Identity{}, domain.Errorf(domain.Unauthenticated, "the bearer token names no user or an unknown role")
	}
	return Identity{UserID: c.Subject, Name: c.Name, Email: c.Email, Role: c.Role}, nil
}

const identityKey = "mysafe.identity"

// requireIdentity authenticates the request and records the user the first
// time their token is seen, so their name shows in read models.
func (s *Server) requireIdentity(c *gin.Context) {
	id, err := s.auth.identify(c.GetHeader("Authorization"))
	if err != nil {
		abortWithError(c, err)
		return
	}
	if err := s.cmds.RegisterUser(c.Request.Context(), s.request(c, id), id); err != nil {
		abortWithError(c, err)
		return
	}
	c.Set(identityKey, id)
	c.Next()
}

func identity(c *gin.Context) Identity { return c.MustGet(identityKey).(Identity) }
