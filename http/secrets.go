package http

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	nethttp "net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/projections"
)

// written is the answer to a command: where its last event landed.
type written struct {
	Revision uint64 `json:"revision"`
	Position string `json:"position"`
}

func writtenOf(res eventstore.AppendResult) written {
	return written{Revision: res.NextExpectedRevision, Position: res.Position.String()}
}

// secretInput is the body of create and update. Pointers tell "absent"
// from "empty" for updates.
type secretInput struct {
	Name         *string   `json:"name"`
	URL          *string   `json:"url"`
	ClientID     *string   `json:"clientId"`
	ClientSecret *string   `json:"clientSecret"`
	Identifier   *string   `json:"identifier"`
	Method       *string   `json:"method"`
	Tags         *[]string `json:"tags"`
	Notes        *string   `json:"notes"`
}

func (in secretInput) changes() domain.SecretChanges {
	return domain.SecretChanges{Name: in.Name, URL: in.URL, ClientID: in.ClientID, Identifier: in.Identifier,
		Method: in.Method, Tags: in.Tags, Notes: in.Notes}
}

// checkClientSecret bounds the client secret without ever quoting it.
func (in secretInput) checkClientSecret() error {
	if in.ClientSecret != nil && utf8.RuneCountInString(*in.ClientSecret) > domain.MaxClientSecretLength {
		return domain.InvalidField("clientSecret", "is longer than %d characters", domain.MaxClientSecretLength)
	}
	return nil
}

func (s *Server) createSecret(c *gin.Context) {
	var in secretInput
	if !bindJSON(c, &in) {
		return
	}
	if err := in.checkClientSecret(); err != nil {
		abortWithError(c, err)
		return
	}
	req := s.request(c, identity(c))
	// Check the fields before a data key is issued for a secret that will
	// never exist.
	fields := in.changes().ApplyTo(domain.SecretFields{})
	if _, err := fields.Normalize(); err != nil {
		abortWithError(c, err)
		return
	}
	secretID := uuid.NewString()
	if derive := req.derivedID("secret"); derive != nil {
		secretID = derive(0).String()
	}
	var sealed []byte
	if in.ClientSecret != nil && *in.ClientSecret != "" {
		var err error
		if sealed, err = s.cmds.seal(c.Request.Context(), secretID, *in.ClientSecret); err != nil {
			abortWithError(c, err)
			return
		}
	}
	out, err := s.cmds.onSecret(c.Request.Context(), req, secretID,
		domain.CreateSecret{SecretID: secretID, Fields: fields, SealedClientSecret: sealed}, nil)
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusCreated, gin.H{"id": secretID, "revision": out.NextExpectedRevision, "position": out.Position.String()})
}

func (s *Server) updateSecret(c *gin.Context) {
	var in secretInput
	if !bindJSON(c, &in) {
		return
	}
	ifMatch, ok := parseIfMatch(c)
	if !ok {
		return
	}
	if err := in.checkClientSecret(); err != nil {
		abortWithError(c, err)
		return
	}
	id := c.Param("id")
	cmd := domain.UpdateSecret{Changes: in.changes()}
	if in.ClientSecret != nil {
		// Only someone who may edit gets a value sealed: an outsider cannot
		// even have a data key issued.
		state, _, err := s.cmds.loadSecret(c.Request.Context(), id)
		if err == nil {
			err = state.CheckEdit(identity(c).UserID)
		}
		if err == nil {
			cmd.SealedClientSecret, err = s.cmds.seal(c.Request.Context(), id, *in.ClientSecret)
		}
		if err != nil {
			abortWithError(c, err)
			return
		}
	}
	s.runSecretCommand(c, cmd, ifMatch)
}

// parseIfMatch reads an optional If-Match: "<revision>".
func parseIfMatch(c *gin.Context) (*uint64, bool) {
	raw := c.GetHeader("If-Match")
	if raw == "" {
		return nil, true
	}
	rev, err := strconv.ParseUint(strings.Trim(strings.TrimPrefix(raw, "W/"), `"`), 10, 64)
	if err != nil {
		abortWithError(c, domain.InvalidField("If-Match", "%q is not a revision; send the revision a read returned, in quotes", raw))
		return nil, false
	}
	return &rev, true
}

func (s *Server) disableSecret(c *gin.Context) { s.runSecretCommand(c, domain.DisableSecret{}, nil) }
func (s *Server) enableSecret(c *gin.Context)  { s.runSecretCommand(c, domain.EnableSecret{}, nil) }

// runSecretCommand runs a command on the secret named in the path and
// answers with where its events landed.
func (s *Server) runSecretCommand(c *gin.Context, cmd any, ifMatch *uint64) {
	out, err := s.cmds.onSecret(c.Request.Context(), s.request(c, identity(c)), c.Param("id"), cmd, ifMatch)
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, writtenOf(out.AppendResult))
}

// grantInput is one grantee of the share dialog. canView defaults to true,
// as the dialog's checkbox does.
type grantInput struct {
	Principal domain.Principal `json:"principal"`
	CanView   *bool            `json:"canView"`
	CanEdit   bool             `json:"canEdit"`
}

func (g grantInput) grant() domain.Grant {
	canView := g.CanView == nil || *g.CanView
	return domain.Grant{Principal: g.Principal, Permission: domain.Permission{CanView: canView, CanEdit: g.CanEdit}}
}

// shareChange is one change the share dialog's click made.
type shareChange struct {
	Type      string             `json:"type"`
	Principal domain.Principal   `json:"principal"`
	Before    *domain.Permission `json:"before,omitempty"`
	After     *domain.Permission `json:"after,omitempty"`
}

func (s *Server) applyShares(c *gin.Context) {
	var in struct {
		Grants *[]grantInput `json:"grants"`
	}
	if !bindJSON(c, &in) {
		return
	}
	if in.Grants == nil {
		abortWithError(c, domain.InvalidField("grants", "is required: the full list of grantees, [] to unshare everyone"))
		return
	}
	grants := make([]domain.Grant, len(*in.Grants))
	for i, g := range *in.Grants {
		grants[i] = g.grant()
	}
	if err := s.cmds.requireKnownPrincipals(c.Request.Context(), grants); err != nil {
		abortWithError(c, err)
		return
	}
	out, err := s.cmds.onSecret(c.Request.Context(), s.request(c, identity(c)), c.Param("id"), domain.ApplyShares{Grants: grants}, nil)
	if err != nil {
		abortWithError(c, err)
		return
	}
	changes := []shareChange{}
	for _, e := range out.events {
		switch p := e.Payload.(type) {
		case domain.ShareGranted:
			changes = append(changes, shareChange{Type: e.Type(), Principal: p.Principal, After: &p.Permission})
		case domain.SharePermissionChanged:
			changes = append(changes, shareChange{Type: e.Type(), Principal: p.Principal, Before: &p.Before, After: &p.After})
		case domain.ShareRevoked:
			changes = append(changes, shareChange{Type: e.Type(), Principal: p.Principal, Before: &p.Before})
		}
	}
	// The dialog's toast says "Shared" whatever the click did, removals too.
	c.JSON(nethttp.StatusOK, gin.H{"message": "Shared", "revision": out.NextExpectedRevision,
		"position": out.Position.String(), "changes": changes})
}

func (s *Server) shareSecret(c *gin.Context) {
	var in grantInput
	if !bindJSON(c, &in) {
		return
	}
	g := in.grant()
	if err := s.cmds.requireKnownPrincipals(c.Request.Context(), []domain.Grant{g}); err != nil {
		abortWithError(c, err)
		return
	}
	s.runSecretCommand(c, domain.ShareSecret{Grant: g}, nil)
}

func (s *Server) changeSharePermission(c *gin.Context) {
	var in struct {
		CanView *bool `json:"canView"`
		CanEdit bool  `json:"canEdit"`
	}
	if !bindJSON(c, &in) {
		return
	}
	g := grantInput{Principal: pathPrincipal(c), CanView: in.CanView, CanEdit: in.CanEdit}.grant()
	s.runSecretCommand(c, domain.ChangeSharePermission{Grant: g}, nil)
}

func (s *Server) revokeShare(c *gin.Context) {
	s.runSecretCommand(c, domain.RevokeShare{Principal: pathPrincipal(c)}, nil)
}

func pathPrincipal(c *gin.Context) domain.Principal {
	return domain.Principal{Type: domain.PrincipalType(c.Param("type")), ID: c.Param("principalId")}
}

func (s *Server) revealSecret(c *gin.Context) {
	out, err := s.cmds.onSecret(c.Request.Context(), s.request(c, identity(c)), c.Param("id"), domain.RevealSecret{}, nil)
	if err == nil && out.events == nil {
		err = errReplayedAccess
	}
	var value string
	if err == nil {
		// The audit event is in the log; only now is the value opened.
		value, err = s.cmds.unseal(c.Request.Context(), c.Param("id"), out.state.SealedClientSecret)
	}
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, gin.H{"clientSecret": value})
}

// errReplayedAccess refuses an idempotent replay of a reveal or copy: the
// value is handed out once per audited access, never from a replay.
var errReplayedAccess = domain.Errorf(domain.Conflict, "this Idempotency-Key was already used for an access; send a new key to access the value again")

func (s *Server) copySecret(c *gin.Context) {
	var in struct {
		Field string `json:"field"`
	}
	if !bindJSON(c, &in) {
		return
	}
	out, err := s.cmds.onSecret(c.Request.Context(), s.request(c, identity(c)), c.Param("id"), domain.CopySecret{Field: in.Field}, nil)
	if err == nil && out.events == nil {
		err = errReplayedAccess
	}
	var value string
	if err == nil {
		// The decision accepted the field: it is visible or the client secret.
		var visible bool
		if value, visible = out.state.Fields.Visible(in.Field); !visible {
			value, err = s.cmds.unseal(c.Request.Context(), c.Param("id"), out.state.SealedClientSecret)
		}
	}
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, gin.H{"value": value})
}

// details answers from the read model, but decides who may read from the
// log itself and waits until the read model has caught up with the
// secret's last event: a revoke takes effect at once for every read.
func (s *Server) details(c *gin.Context) {
	id := c.Param("id")
	state, pos, err := s.cmds.loadSecret(c.Request.Context(), id)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if !state.CanRead(identity(c).UserID) {
		abortWithError(c, domain.Errorf(domain.NotFound, "secret %s not found", id))
		return
	}
	if !s.waitForMinPosition(c) || !s.waitFor(c, pos) {
		return
	}
	d, err := s.cfg.ReadModels.Details(c.Request.Context(), id)
	if err == nil && d == nil {
		err = domain.Errorf(domain.NotFound, "secret %s not found", id)
	}
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, d)
}

func (s *Server) report(c *gin.Context) {
	q, err := parseReportQuery(c)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if !s.waitForMinPosition(c) {
		return
	}
	page, err := s.cfg.ReadModels.Report(c.Request.Context(), identity(c).UserID, q)
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, page)
}

func parseReportQuery(c *gin.Context) (projections.ReportQuery, error) {
	q := projections.ReportQuery{Q: c.Query("q"), Owner: c.Query("owner"), Tag: c.Query("tag"), Page: 1, PageSize: 30}
	switch v := c.Query("shared"); v {
	case "", "all":
	case "yes", "no":
		shared := v == "yes"
		q.Shared = &shared
	default:
		return q, domain.InvalidField("shared", "%q is not yes, no or all", v)
	}
	switch v := c.Query("status"); v {
	case "", "enabled", "disabled":
		q.Status = v
	default:
		return q, domain.InvalidField("status", "%q is not enabled or disabled", v)
	}
	err := parsePaging(c, &q.Page, &q.PageSize)
	return q, err
}

// parsePaging reads ?page= and ?pageSize= into page and size, leaving them
// as they are when absent.
func parsePaging(c *gin.Context, page, size *int) error {
	for _, p := range []struct {
		name string
		to   *int
		max  int
	}{{"page", page, 1 << 20}, {"pageSize", size, 200}} {
		raw := c.Query(p.name)
		if raw == "" {
			continue
		}
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > p.max {
			return domain.InvalidField(p.name, "%q is not a whole number from 1 to %d", raw, p.max)
		}
		*p.to = n
	}
	return nil
}

func (s *Server) cards(c *gin.Context) {
	if !s.waitForMinPosition(c) {
		return
	}
	cards, err := s.cfg.ReadModels.Cards(c.Request.Context(), identity(c).UserID)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if cards == nil {
		cards = []projections.Card{}
	}
	c.JSON(nethttp.StatusOK, gin.H{"cards": cards})
}

// historyEvent is one entry of a secret's history. Data never holds a
// secret value, sealed or not.
type historyEvent struct {
	Type     string         `json:"type"`
	At       string         `json:"at"`
	Actor    domain.Actor   `json:"actor"`
	Revision uint64         `json:"revision"`
	Position string         `json:"position"`
	Data     map[string]any `json:"data"`
	// Stream is set on the events of the secret's external shares, which
	// the history shows among the secret's own (Revision is then the
	// share stream's).
	Stream string `json:"stream,omitempty"`
}

// history lists every event of a secret, for its owner, admins and
// auditors, straight from the log.
func (s *Server) history(c *gin.Context) {
	id, who := c.Param("id"), identity(c)
	records, err := s.cfg.Store.ReadStream(c.Request.Context(), domain.SecretStream(id), eventstore.ReadStreamOptions{})
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		err = domain.Errorf(domain.NotFound, "secret %s not found", id)
	}
	if err != nil {
		abortWithError(c, err)
		return
	}
	state, err := foldSecret(id, records)
	if err == nil {
		_, err = s.cmds.resolveGroups(c.Request.Context(), &state)
	}
	if err != nil {
		abortWithError(c, err)
		return
	}
	switch {
	case who.Role == RoleAdmin || who.Role == RoleAuditor || state.Owner == who.UserID:
	case state.CanRead(who.UserID):
		abortWithError(c, domain.Errorf(domain.Forbidden, "only the owner of secret %s, admins and auditors may read its history", id))
		return
	default:
		abortWithError(c, domain.Errorf(domain.NotFound, "secret %s not found", id))
		return
	}
	events := make([]historyEvent, 0, len(records))
	for _, r := range records {
		e, err := domain.Decode(r.Type, r.Data, r.Metadata)
		if err != nil {
			abortWithError(c, err)
			return
		}
		events = append(events, historyEvent{Type: r.Type, At: e.At.UTC().Format("2006-01-02T15:04:05.000Z07:00"), Actor: e.Actor,
			Revision: r.Revision, Position: r.Position.String(), Data: domain.PublicData(e)})
	}
	if events, err = s.withExternalShares(c.Request.Context(), records, events); err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, gin.H{"events": events})
}

// bindJSON decodes the body strictly into v, or answers 400 or 413 naming
// what was wrong.
func bindJSON(c *gin.Context, v any) bool {
	dec := json.NewDecoder(c.Request.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("trailing data")
	}
	if err == nil {
		return true
	}
	var (
		tooLarge  *nethttp.MaxBytesError
		syntax    *json.SyntaxError
		wrongType *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		err = domain.Errorf(domain.TooLarge, "the request body is over %d bytes", MaxBodyBytes)
	case errors.Is(err, io.EOF):
		err = domain.InvalidField("body", "a JSON object is required")
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		err = domain.InvalidField("body", "is not well-formed JSON (%v)", err)
	case errors.As(err, &wrongType):
		err = domain.InvalidField(wrongType.Field, "must be a JSON %s", jsonKind(wrongType.Type.Kind().String()))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		err = domain.InvalidField(field, "is not a field of this request")
	default:
		err = domain.InvalidField("body", "%v", err)
	}
	abortWithError(c, err)
	return false
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "struct", "map", "ptr":
		return "object"
	}
	return fmt.Sprintf("number (%s)", goKind)
}
