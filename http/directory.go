package http

// The directory: the share dialog's search for users and groups, and the
// administrators' import and update of users.

import (
	nethttp "net/http"
	"strconv"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/projections"
)

// searchPrincipals answers GET /principals?q=&limit=: users by name,
// username or e-mail and the groups the caller may see by name, prefix or
// substring, ignoring case.
func (s *Server) searchPrincipals(c *gin.Context) {
	q := c.Query("q")
	switch {
	case q == "":
		abortWithError(c, domain.InvalidField("q", "is required: part of a name, username or e-mail"))
		return
	case utf8.RuneCountInString(q) > projections.MaxTermRunes:
		abortWithError(c, domain.InvalidField("q", "is %d characters long; at most %d are matched", utf8.RuneCountInString(q), projections.MaxTermRunes))
		return
	}
	limit := projections.DefaultDirectoryLimit
	if raw := c.Query("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > projections.MaxDirectoryLimit {
			abortWithError(c, domain.InvalidField("limit", "%q is not a whole number from 1 to %d", raw, projections.MaxDirectoryLimit))
			return
		}
		limit = n
	}
	if !s.waitForMinPosition(c) {
		return
	}
	who := identity(c)
	hits, err := s.cfg.ReadModels.Principals(c.Request.Context(), projections.DirectoryQuery{Q: q, Caller: who.UserID,
		Admin: who.Role == RoleAdmin, Limit: limit})
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, gin.H{"principals": hits})
}

// putUser answers PUT /users/{id} (admins): import a user, or update their
// name, username and e-mail. Names change wherever the read models show
// them.
func (s *Server) putUser(c *gin.Context) {
	if !requireRole(c, RoleAdmin) {
		return
	}
	var in struct {
		Name     string `json:"name"`
		Username string `json:"username"`
		Email    string `json:"email"`
	}
	if !bindJSON(c, &in) {
		return
	}
	userID, req := c.Param("id"), s.request(c, identity(c))
	res, err := eventstore.Execute(c.Request.Context(), s.cfg.Store, eventstore.Command{
		Stream:  domain.UserStream(userID),
		EventID: req.derivedID("event"),
		Decide: func(history []eventstore.RecordedEvent) ([]eventstore.EventData, error) {
			var u domain.UserRecord
			for _, r := range history {
				e, err := domain.Decode(r.Type, r.Data, r.Metadata)
				if err != nil {
					return nil, err
				}
				u.Apply(e)
			}
			events, err := domain.DecideUserUpdate(u, domain.UpdateUser{UserID: userID, Name: in.Name, Username: in.Username, Email: in.Email}, req.meta)
			if err != nil {
				return nil, err
			}
			return encode(events)
		},
	})
	if err != nil {
		abortWithError(c, err)
		return
	}
	s.cmds.knownUsers.Store(userID, struct{}{})
	c.JSON(nethttp.StatusOK, gin.H{"id": userID, "revision": res.NextExpectedRevision, "position": res.Position.String()})
}
