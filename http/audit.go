package http

// Audit and compliance: who could read a secret at an instant, the access
// intervals, the audit report, exports and hash-chain verification.
//
// Who may ask:
//   - a secret's access at T and its intervals: its owner, admins, auditors
//     (a grantee gets 403, anyone else 404, as for the history);
//   - a user's access at T: that user, admins, auditors (403 otherwise);
//   - the audit report, exports and verification: admins and auditors.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	nethttp "net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/auditlog"
	"github.com/mysafe/mysafe/projections"
)

// AuditReadModel answers the audit report and lists the secrets each
// principal ever reached (projections.AuditReader).
type AuditReadModel interface {
	Events(ctx context.Context, q projections.AuditQuery) (projections.AuditPage, error)
	Reached(ctx context.Context, p domain.Principal) ([]string, error)
}

// MembershipHistory is the seam where group membership joins the access
// queries: the groups a user was ever a member of, and when they were. A
// nil MembershipHistory (the default) reaches nobody through groups.
type MembershipHistory func(ctx context.Context, userID string) (groups []string, members domain.Membership, err error)

// requireRole refuses callers without one of the roles.
func requireRole(c *gin.Context, roles ...Role) bool {
	if slices.Contains(roles, identity(c).Role) {
		return true
	}
	abortWithError(c, domain.Errorf(domain.Forbidden, "only the %s roles may do this; you are a %s", joinRoles(roles), identity(c).Role))
	return false
}

func joinRoles(roles []Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, " and ")
}

// parseTime reads an optional RFC 3339 query parameter; zero if absent.
func parseTime(c *gin.Context, name string) (time.Time, bool) {
	raw := c.Query(name)
	if raw == "" {
		return time.Time{}, true
	}
	t, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		abortWithError(c, domain.InvalidField(name, "%q is not an RFC 3339 time such as 2026-03-03T14:00:00Z", raw))
		return time.Time{}, false
	}
	return t.UTC(), true
}

// instant is the ?at= of an access query: now when absent.
func (s *Server) instant(c *gin.Context) (time.Time, bool) {
	t, ok := parseTime(c, "at")
	if ok && t.IsZero() {
		t = s.cfg.Now().UTC()
	}
	return t, ok
}

// secretHistory is a secret's events folded for access, with the name the
// secret had at each revision.
type secretHistory struct {
	access *domain.SecretAccess
	owner  domain.Actor
	names  []string // by revision
	times  []time.Time
}

// nameAt is the secret's name at t.
func (h *secretHistory) nameAt(t time.Time) string {
	name := ""
	for i, at := range h.times {
		if at.After(t) {
			break
		}
		name = h.names[i]
	}
	return name
}

// loadHistory folds a secret's stream for access queries; NotFound if the
// secret never existed.
func (s *Server) loadHistory(ctx context.Context, secretID string) (*secretHistory, domain.Secret, error) {
	records, err := s.cfg.Store.ReadStream(ctx, domain.SecretStream(secretID), eventstore.ReadStreamOptions{})
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		err = domain.Errorf(domain.NotFound, "secret %s not found", secretID)
	}
	if err != nil {
		return nil, domain.Secret{}, err
	}
	h := &secretHistory{access: domain.NewSecretAccess(secretID)}
	state := domain.Secret{ID: secretID}
	name := ""
	for _, r := range records {
		if !domain.IsKnownEventType(r.Type) {
			continue // from a newer version
		}
		e, err := domain.Decode(r.Type, r.Data, r.Metadata)
		if err != nil {
			return nil, state, err
		}
		switch p := e.Payload.(type) {
		case domain.SecretCreated:
			name, h.owner = p.Fields.Name, e.Actor
		case domain.SecretUpdated:
			name = p.Fields.Name
		}
		h.times = append(h.times, h.access.Time(e))
		h.names = append(h.names, name)
		h.access.Apply(r.Revision, e)
		state.Apply(e)
	}
	if !state.Exists() {
		return nil, state, domain.Errorf(domain.NotFound, "secret %s not found", secretID)
	}
	return h, state, nil
}

// secretAuditor loads a secret's history for someone who may audit it:
// its owner, an admin, an auditor. A grantee is refused; anyone else is
// not told the secret exists.
func (s *Server) secretAuditor(c *gin.Context) (*secretHistory, bool) {
	id, who := c.Param("id"), identity(c)
	h, state, err := s.loadHistory(c.Request.Context(), id)
	if err != nil {
		abortWithError(c, err)
		return nil, false
	}
	switch {
	case who.Role == RoleAdmin || who.Role == RoleAuditor || state.Owner == who.UserID:
		return h, true
	case state.CanRead(who.UserID):
		abortWithError(c, domain.Errorf(domain.Forbidden, "only the owner of secret %s, admins and auditors may read its access history", id))
	default:
		abortWithError(c, domain.Errorf(domain.NotFound, "secret %s not found", id))
	}
	return nil, false
}

// secretAccessAt answers GET /secrets/{id}/access?at=: the owner and the
// grants in force at that instant.
func (s *Server) secretAccessAt(c *gin.Context) {
	at, ok := s.instant(c)
	if !ok {
		return
	}
	h, ok := s.secretAuditor(c)
	if !ok {
		return
	}
	grants := h.access.GrantsAt(at)
	if grants == nil {
		grants = []domain.GrantAt{}
	}
	out := gin.H{"secretId": h.access.SecretID, "at": at, "exists": h.access.ExistedAt(at), "grants": grants}
	if h.access.ExistedAt(at) {
		out["owner"], out["name"], out["disabled"] = h.owner, h.nameAt(at), h.access.DisabledAt(at)
	}
	c.JSON(nethttp.StatusOK, out)
}

// secretAccessIntervals answers GET /secrets/{id}/access/intervals.
func (s *Server) secretAccessIntervals(c *gin.Context) {
	h, ok := s.secretAuditor(c)
	if !ok {
		return
	}
	intervals := h.access.Intervals
	if intervals == nil {
		intervals = []domain.AccessInterval{}
	}
	c.JSON(nethttp.StatusOK, gin.H{"secretId": h.access.SecretID, "owner": h.owner, "createdAt": h.access.CreatedAt,
		"intervals": intervals})
}

// projectionProgress is a Progress that can wait for one projection.
type projectionProgress interface {
	WaitForProjection(ctx context.Context, name string, pos eventstore.Position) error
}

// waitForAudit waits until the audit projection has reached pos: the
// queries that read it need no other projection to have.
func (s *Server) waitForAudit(c *gin.Context, pos eventstore.Position) bool {
	pp, ok := s.cfg.Progress.(projectionProgress)
	if !ok {
		return s.waitFor(c, pos)
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.WaitTimeout)
	defer cancel()
	if err := pp.WaitForProjection(ctx, projections.AuditProjection, pos); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = domain.Errorf(domain.Unavailable, "the audit read model has not reached position %s within %s; retry shortly", pos, s.cfg.WaitTimeout)
		}
		abortWithError(c, err)
		return false
	}
	return true
}

// userSecretAccess is one secret a user could read at an instant.
type userSecretAccess struct {
	SecretID   string            `json:"secretId"`
	Name       string            `json:"name"`
	Permission domain.Permission `json:"permission"`
	Via        []domain.Reach    `json:"via"`
}

// userAccessAt answers GET /users/{id}/access?at=: every secret the user
// could read at that instant, and through which grant. It folds the
// history of every secret the user (or a group of theirs) ever reached,
// from the log; the reach index only says which.
func (s *Server) userAccessAt(c *gin.Context) {
	userID, who := c.Param("id"), identity(c)
	if who.UserID != userID && who.Role != RoleAdmin && who.Role != RoleAuditor {
		abortWithError(c, domain.Errorf(domain.Forbidden, "only %s, admins and auditors may read what %s could access", userID, userID))
		return
	}
	at, ok := s.instant(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	// The reach index must hold everything the log holds now.
	head, err := auditlog.Head(ctx, s.cfg.Store)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if !s.waitForAudit(c, head) {
		return
	}
	var groups []string
	var members domain.Membership
	if s.cfg.Membership != nil {
		if groups, members, err = s.cfg.Membership(ctx, userID); err != nil {
			abortWithError(c, err)
			return
		}
	}
	principals := []domain.Principal{domain.User(userID)}
	for _, g := range groups {
		principals = append(principals, domain.Principal{Type: domain.PrincipalGroup, ID: g})
	}
	var ids []string
	for _, p := range principals {
		reached, err := s.cfg.Audit.Reached(ctx, p)
		if err != nil {
			abortWithError(c, err)
			return
		}
		for _, id := range reached {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	out := []userSecretAccess{}
	for _, id := range ids {
		h, _, err := s.loadHistory(ctx, id)
		if domain.KindOf(err) == domain.NotFound {
			continue
		}
		if err != nil {
			abortWithError(c, err)
			return
		}
		if reaches := h.access.UserAccessAt(userID, at, members); len(reaches) > 0 {
			out = append(out, userSecretAccess{SecretID: id, Name: h.nameAt(at), Permission: domain.Union(reaches), Via: reaches})
		}
	}
	c.JSON(nethttp.StatusOK, gin.H{"userId": userID, "at": at, "secrets": out})
}

// auditEvents answers GET /audit/events, the Audit screen's report.
func (s *Server) auditEvents(c *gin.Context) {
	if !requireRole(c, RoleAdmin, RoleAuditor) {
		return
	}
	q := projections.AuditQuery{SecretName: c.Query("secret"), SecretID: c.Query("secretId"), User: c.Query("user"),
		IP: c.Query("ip"), Cursor: c.Query("cursor"), Limit: 50}
	var ok bool
	if q.From, ok = parseTime(c, "from"); !ok {
		return
	}
	if q.To, ok = parseTime(c, "to"); !ok {
		return
	}
	if raw := c.Query("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > 500 {
			abortWithError(c, domain.InvalidField("limit", "%q is not a whole number from 1 to 500", raw))
			return
		}
		q.Limit = n
	}
	if typ := c.Query("type"); typ != "" {
		if _, known := domain.AuditEvent(typ); !known {
			abortWithError(c, domain.InvalidField("type", "%q is not an audited event type; want one of %s", typ, strings.Join(domain.AuditEventTypeNames(), ", ")))
			return
		}
		q.Types = []string{typ}
	}
	if name := c.Query("event"); name != "" {
		types := domain.AuditEventTypes(name)
		if types == nil {
			abortWithError(c, domain.InvalidField("event", "%q is not an audit event; want one of %s", name, strings.Join(domain.AuditEventNames(), ", ")))
			return
		}
		if q.Types != nil {
			types = slices.DeleteFunc(types, func(t string) bool { return !slices.Contains(q.Types, t) })
		}
		q.Types = append([]string{}, types...) // non-nil: a type= and event= that exclude each other match nothing
	}
	if raw := c.GetHeader("X-MySafe-Min-Position"); raw != "" {
		pos, err := eventstore.ParsePosition(raw)
		if err != nil {
			abortWithError(c, domain.InvalidField("X-MySafe-Min-Position", "%q is not a position this API returned", raw))
			return
		}
		if !s.waitForAudit(c, pos) {
			return
		}
	}
	page, err := s.cfg.Audit.Events(c.Request.Context(), q)
	if errors.Is(err, projections.ErrBadCursor) {
		err = domain.InvalidField("cursor", "is not a cursor this report handed out; start again without one")
	}
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, page)
}

// ExportEventsTrailer is the HTTP trailer that ends a complete export with
// the number of events written; an export cut short has none.
const ExportEventsTrailer = "X-Mysafe-Export-Events"

// LogHeadHeader carries, on an export, the position of the last event of
// the log when the export began, so a client can show its progress.
const LogHeadHeader = "X-Mysafe-Log-Head"

// auditExport answers GET /audit/export?format=csv|ndjson&from=&to=&type=,
// streaming the log page by page.
func (s *Server) auditExport(c *gin.Context) {
	if !requireRole(c, RoleAdmin, RoleAuditor) {
		return
	}
	format, err := auditlog.ParseFormat(c.Query("format"))
	if err != nil {
		abortWithError(c, domain.InvalidField("format", "%q is not an export format; want csv or ndjson", c.Query("format")))
		return
	}
	var filter auditlog.Filter
	var ok bool
	if filter.From, ok = parseTime(c, "from"); !ok {
		return
	}
	if filter.To, ok = parseTime(c, "to"); !ok {
		return
	}
	for _, t := range c.QueryArray("type") {
		for typ := range strings.SplitSeq(t, ",") {
			if !domain.IsKnownEventType(typ) {
				abortWithError(c, domain.InvalidField("type", "%q is not an event type", typ))
				return
			}
			filter.Types = append(filter.Types, typ)
		}
	}
	ctx := c.Request.Context()
	head, err := auditlog.Head(ctx, s.cfg.Store)
	if err != nil {
		abortWithError(c, err)
		return
	}
	h := c.Writer.Header()
	h.Set("Content-Type", format.ContentType())
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="mysafe-audit.%s"`, format))
	h.Set(LogHeadHeader, head.String())
	h.Set("Trailer", ExportEventsTrailer)
	c.Status(nethttp.StatusOK)
	n, err := auditlog.Export(ctx, s.cfg.Store, c.Writer, format, filter, nil, c.Writer.Flush)
	if err != nil {
		// The status is sent: all that is left is to end the answer
		// without its trailer, which tells the client it is incomplete.
		logAbort(c, err)
		return
	}
	h.Set(ExportEventsTrailer, strconv.FormatUint(n, 10))
}

// logAbort logs why an answer already under way was cut short.
func logAbort(c *gin.Context, err error) {
	slog.ErrorContext(c.Request.Context(), "answer cut short", "route", c.FullPath(), "err", err, "requestId", requestID(c))
}

// auditVerify answers GET /audit/verify?stream=: recomputes the hash
// chains of one stream, or of the whole log, and names the first event
// that does not match.
func (s *Server) auditVerify(c *gin.Context) {
	if !requireRole(c, RoleAdmin, RoleAuditor) {
		return
	}
	stream := c.Query("stream")
	rep, err := auditlog.Verify(c.Request.Context(), s.cfg.Store, stream, nil)
	if errors.Is(err, eventstore.ErrStreamNotFound) || errors.Is(err, eventstore.ErrStreamDeleted) {
		err = domain.Errorf(domain.NotFound, "stream %s not found", stream)
	}
	if err != nil {
		abortWithError(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, rep)
}
