package http

// External shares: a secret handed for a limited time to a person without
// an account (domain/extshare.go has the rules).
//
//   - The owner creates one: the secret's stream records it
//     (SecretSharedExternally, so the secret's history shows it), then the
//     share's own stream starts, and the recipient is mailed a link.
//   - The link (/x/{token}) is "<shareId>.<256 random bits>"; the log keeps
//     only its hash. Opening it mails a fresh 8-digit code, kept as a hash
//     bound to the token; POST /x/{token}/open with the code spends one
//     access, records it, and only then unseals and shows the secret.
//   - Revoke, resend, and the scheduler that records expiries run commands
//     on the share's stream with its expected revision, so replicas racing
//     on the same share append once.
//
// The /x routes take no bearer token: the link and the code are the
// credentials. They are rate-limited per client IP, and nothing logs their
// path (the request log names the route pattern) or a message body.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	nethttp "net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/http/mail"
	"github.com/mysafe/mysafe/projections"
)

// DefaultExternalShareMax is the longest an external share may last unless
// the administrator says otherwise.
const DefaultExternalShareMax = 30 * 24 * time.Hour

// ExternalShareConfig configures temporary external shares.
type ExternalShareConfig struct {
	// Disabled switches the feature off: no share can be made, and links
	// already sent stop opening.
	Disabled bool
	// Max is the longest a share may last; 0 means DefaultExternalShareMax.
	Max time.Duration
	// PublicURL is the base of the links mailed to recipients, such as
	// https://mysafe.example.com; empty means the scheme and host of the
	// request that makes the link.
	PublicURL string
	// RecipientRate bounds the requests per minute one client IP may make
	// to the recipient routes; 0 means 20.
	RecipientRate int
}

// expiryChoices are the expiries the External tab offers.
var expiryChoices = map[string]time.Duration{"1h": time.Hour, "24h": 24 * time.Hour, "1w": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour}

// externalShareOutcome is what a command on an external share did.
type externalShareOutcome struct {
	eventstore.AppendResult
	before domain.ExternalShare // the state the decision was made on
	events []domain.Event       // nil when nothing was decided or replayed
}

// after is the share's state once the events are applied.
func (o externalShareOutcome) after() domain.ExternalShare {
	x := o.before
	for _, e := range o.events {
		x.Apply(e)
	}
	return x
}

func (o externalShareOutcome) has(p domain.Payload) bool {
	for _, e := range o.events {
		if e.Type() == p.EventType() {
			return true
		}
	}
	return false
}

func foldExternalShare(shareID string, history []eventstore.RecordedEvent) (domain.ExternalShare, error) {
	x := domain.ExternalShare{ID: shareID}
	for _, r := range history {
		e, err := domain.Decode(r.Type, r.Data, r.Metadata)
		if err != nil {
			return x, err
		}
		x.Apply(e)
	}
	return x, nil
}

// onExternalShare runs a command on an external share. meta is made from
// the state, so that a recipient's events can name the recipient.
func (c *commands) onExternalShare(ctx context.Context, shareID string, meta func(domain.ExternalShare) domain.Meta,
	eventID func(int) uuid.UUID, cmd any) (externalShareOutcome, error) {
	var out externalShareOutcome
	decided := false
	res, err := eventstore.Execute(ctx, c.store, eventstore.Command{
		Stream:  domain.ExternalShareStream(shareID),
		EventID: eventID,
		Decide: func(history []eventstore.RecordedEvent) ([]eventstore.EventData, error) {
			x, err := foldExternalShare(shareID, history)
			if err != nil {
				return nil, err
			}
			events, err := domain.DecideExternalShare(x, cmd, meta(x))
			if err != nil {
				return nil, err
			}
			out.before, out.events, decided = x, events, true
			return encode(events)
		},
	})
	out.AppendResult = res
	if err == nil && !decided {
		// A replay of an idempotent request: its events are in the log
		// already; answer from the share as it stands.
		out.before, err = c.loadExternalShare(ctx, shareID)
	}
	return out, err
}

// loadExternalShare folds a share's stream as it is now.
func (c *commands) loadExternalShare(ctx context.Context, shareID string) (domain.ExternalShare, error) {
	history, err := c.store.ReadStream(ctx, domain.ExternalShareStream(shareID), eventstore.ReadStreamOptions{})
	if errors.Is(err, eventstore.ErrStreamNotFound) {
		return domain.ExternalShare{ID: shareID}, nil
	}
	if err != nil {
		return domain.ExternalShare{}, err
	}
	return foldExternalShare(shareID, history)
}

// newLinkToken makes the token of a share's link.
func newLinkToken(shareID string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return shareID + "." + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// parseLinkToken finds the share a link's token names.
func parseLinkToken(token string) (shareID string, ok bool) {
	id, secret, ok := strings.Cut(token, ".")
	if _, err := uuid.Parse(id); !ok || err != nil || len(secret) != 43 {
		return "", false
	}
	return id, true
}

// newAccessCode draws an 8-digit code, every value equally likely.
func newAccessCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(100_000_000))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%08d", n.Int64()), nil
}

func (s *Server) externalShareMax() time.Duration {
	if s.cfg.ExternalShares.Max > 0 {
		return s.cfg.ExternalShares.Max
	}
	return DefaultExternalShareMax
}

// requireExternalShares refuses when the feature is off or no mail can go.
func (s *Server) requireExternalShares(c *gin.Context) bool {
	switch {
	case s.cfg.ExternalShares.Disabled:
		abortWithError(c, domain.Errorf(domain.Forbidden, "external sharing is switched off by the administrator"))
		return false
	case s.cfg.Mailer == nil:
		abortWithError(c, domain.Errorf(domain.Unavailable, "external sharing needs e-mail, and none is configured"))
		return false
	}
	return true
}

// createExternalShare answers POST /secrets/{id}/external-shares.
func (s *Server) createExternalShare(c *gin.Context) {
	if !s.requireExternalShares(c) {
		return
	}
	var in struct {
		RecipientEmail string          `json:"recipientEmail"`
		ExpiresIn      string          `json:"expiresIn"`
		ExpiresAt      string          `json:"expiresAt"`
		MaxAccesses    json.RawMessage `json:"maxAccesses"`
	}
	if !bindJSON(c, &in) {
		return
	}
	req := s.request(c, identity(c))
	terms := domain.ExternalShareTerms{RecipientEmail: in.RecipientEmail}
	switch {
	case in.ExpiresIn != "" && in.ExpiresAt != "":
		abortWithError(c, domain.InvalidField("expiresIn", "give expiresIn or expiresAt, not both"))
		return
	case in.ExpiresIn != "":
		d, ok := expiryChoices[in.ExpiresIn]
		if !ok {
			abortWithError(c, domain.InvalidField("expiresIn", "%q is not one of 1h, 24h, 1w, 30d; or give expiresAt", in.ExpiresIn))
			return
		}
		terms.ExpiresAt = req.meta.At.Add(d)
	case in.ExpiresAt != "":
		t, err := time.Parse(time.RFC3339, in.ExpiresAt)
		if err != nil {
			abortWithError(c, domain.InvalidField("expiresAt", "%q is not an RFC 3339 time such as 2026-03-04T14:00:00Z", in.ExpiresAt))
			return
		}
		terms.ExpiresAt = t
	default:
		abortWithError(c, domain.InvalidField("expiresIn", "is required: 1h, 24h, 1w or 30d; or give expiresAt"))
		return
	}
	switch raw := strings.TrimSpace(string(in.MaxAccesses)); raw {
	case "":
		abortWithError(c, domain.InvalidField("maxAccesses", "is required: a number from 1 to %d, or null for unlimited", domain.MaxExternalAccesses))
		return
	case "null":
	default:
		n, err := strconv.Atoi(raw)
		if err != nil {
			abortWithError(c, domain.InvalidField("maxAccesses", "%s is not a whole number; use null for unlimited", raw))
			return
		}
		terms.MaxAccesses = &n
	}

	ctx, secretID := c.Request.Context(), c.Param("id")
	shareID := uuid.NewString()
	if derive := req.derivedID("extshare"); derive != nil {
		shareID = derive(0).String()
	}
	// 1. The secret decides whether its caller may share it so, and records
	// that it did.
	recorded, err := s.cmds.onSecret(ctx, req, secretID, domain.ShareExternally{ShareID: shareID, Terms: terms, MaxDuration: s.externalShareMax()}, nil)
	if err != nil {
		var de *domain.Error
		if in.ExpiresIn != "" && errors.As(err, &de) && de.Field == "expiresAt" {
			err = domain.InvalidField("expiresIn", "%s is longer than the %s the administrator allows for external shares", in.ExpiresIn, s.externalShareMax())
		}
		abortWithError(c, err)
		return
	}
	for _, e := range recorded.events {
		if p, ok := e.Payload.(domain.SecretSharedExternally); ok {
			terms = p.ExternalShareTerms
		}
	}
	// 2. The share's own stream starts.
	token, err := newLinkToken(shareID)
	if err != nil {
		abortWithError(c, err)
		return
	}
	out, err := s.cmds.onExternalShare(ctx, shareID, func(domain.ExternalShare) domain.Meta { return req.meta }, req.derivedID("extshare-event"),
		domain.CreateExternalShare{ShareID: shareID, SecretID: secretID, SecretName: recorded.state.Fields.Name, Terms: terms, TokenHash: domain.HashLinkToken(token)})
	if err != nil {
		abortWithError(c, err)
		return
	}
	x := out.after()
	// 3. The recipient gets the link, unless this was a replay: its link
	// went out the first time, and only its hash was kept.
	linkSent := false
	if out.has(domain.ExternalShareCreated{}) {
		linkSent = s.mailLink(ctx, c, x, token, identity(c).Name)
	}
	c.JSON(nethttp.StatusCreated, gin.H{"id": shareID, "secretId": secretID, "recipientEmail": x.RecipientEmail,
		"expiresAt": x.ExpiresAt, "maxAccesses": x.MaxAccesses, "status": x.StatusAt(req.meta.At),
		"revision": out.NextExpectedRevision, "position": out.Position.String(), "linkSent": linkSent})
}

// linkBase is the scheme and host links start with.
func (s *Server) linkBase(c *gin.Context) string {
	if u := s.cfg.ExternalShares.PublicURL; u != "" {
		return strings.TrimSuffix(u, "/")
	}
	scheme := "http"
	if c.Request.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + c.Request.Host
}

// send mails a message, bounded in time and carried through even if the
// client goes away: the event that calls for it is already in the log. A
// failure is logged without the message and reported as false.
func (s *Server) send(ctx context.Context, m mail.Message, what string) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.cfg.Mailer.Send(ctx, m); err != nil {
		slog.WarnContext(ctx, "e-mail not sent", "what", what, "err", err)
		return false
	}
	return true
}

func (s *Server) mailLink(ctx context.Context, c *gin.Context, x domain.ExternalShare, token, sharerName string) bool {
	if sharerName == "" {
		sharerName = x.Sharer
	}
	views := "Unlimited"
	if x.MaxAccesses != nil {
		views = strconv.Itoa(*x.MaxAccesses)
	}
	body := fmt.Sprintf("%s shared a record with you through MySafe.\n\nName: %s\nType: API secret\nExpiration date: %s\nMaximum views: %s\n\nAccess now: %s/x/%s\n\nThe link is yours alone. Opening it sends a one-time code to this address; each code opens the record once.\n",
		sharerName, x.SecretName, x.ExpiresAt.UTC().Format("2006-01-02 15:04 MST"), views, s.linkBase(c), token)
	return s.send(ctx, mail.Message{To: x.RecipientEmail, Subject: "A new record has been shared with you", Body: body}, "external share link")
}

// notifyEnded tells the recipient that their access ended, when the
// command just recorded it: expired or revoked.
func (s *Server) notifyEnded(ctx context.Context, out externalShareOutcome) {
	x := out.after()
	var why string
	switch {
	case out.has(domain.ExternalShareRevoked{}):
		why = "was revoked by its sender"
	case out.has(domain.ExternalShareExpired{}):
		why = "has expired"
	default:
		return
	}
	sharer := x.Sharer
	if users, err := s.cfg.ReadModels.Users(ctx, []string{x.Sharer}); err == nil && users[x.Sharer].Name != "" {
		sharer = users[x.Sharer].Name
	}
	if s.cfg.Mailer == nil {
		return
	}
	body := fmt.Sprintf("Your access to %q, shared with you by %s, %s at %s. The link no longer opens it.\n",
		x.SecretName, sharer, why, x.ExpiresAt.UTC().Format("2006-01-02 15:04 MST"))
	s.send(ctx, mail.Message{To: x.RecipientEmail, Subject: "MySafe - access expired", Body: body}, "external share ended")
}

// revokeExternalShare answers POST /external-shares/{id}/revoke: the
// sharer's or an admin's; the expiry moves to now and the recipient is
// told.
func (s *Server) revokeExternalShare(c *gin.Context) {
	who := identity(c)
	req := s.request(c, who)
	out, err := s.cmds.onExternalShare(c.Request.Context(), c.Param("id"), func(domain.ExternalShare) domain.Meta { return req.meta },
		req.derivedID("event"), domain.RevokeExternalShare{ByAdmin: who.Role == RoleAdmin})
	if err != nil {
		abortWithError(c, err)
		return
	}
	s.notifyEnded(c.Request.Context(), out)
	x := out.after()
	if out.events != nil && !out.has(domain.ExternalShareRevoked{}) {
		abortWithError(c, domain.Errorf(domain.Conflict, "external share %s had already expired at %s", x.ID, x.ExpiresAt.UTC().Format(time.RFC3339)))
		return
	}
	c.JSON(nethttp.StatusOK, gin.H{"revision": out.NextExpectedRevision, "position": out.Position.String(),
		"status": domain.ExternalShareCancelled, "expiresAt": x.ExpiresAt})
}

// resendExternalShare answers POST /external-shares/{id}/resend: a new
// link goes to the recipient, and the old one stops working (only hashes
// are kept, so the old link cannot be sent again).
func (s *Server) resendExternalShare(c *gin.Context) {
	if !s.requireExternalShares(c) {
		return
	}
	who := identity(c)
	req := s.request(c, who)
	shareID := c.Param("id")
	token, err := newLinkToken(shareID)
	if err != nil {
		abortWithError(c, err)
		return
	}
	out, err := s.cmds.onExternalShare(c.Request.Context(), shareID, func(domain.ExternalShare) domain.Meta { return req.meta },
		req.derivedID("event"), domain.ResendExternalShareLink{TokenHash: domain.HashLinkToken(token), ByAdmin: who.Role == RoleAdmin})
	if err != nil {
		abortWithError(c, err)
		return
	}
	s.notifyEnded(c.Request.Context(), out)
	x := out.after()
	if out.has(domain.ExternalShareExpired{}) {
		abortWithError(c, domain.Errorf(domain.Conflict, "external share %s had already expired at %s", x.ID, x.ExpiresAt.UTC().Format(time.RFC3339)))
		return
	}
	linkSent := false
	if out.has(domain.ExternalShareLinkResent{}) {
		name := ""
		if users, err := s.cfg.ReadModels.Users(c.Request.Context(), []string{x.Sharer}); err == nil {
			name = users[x.Sharer].Name
		}
		linkSent = s.mailLink(c.Request.Context(), c, x, token, name)
	}
	c.JSON(nethttp.StatusOK, gin.H{"revision": out.NextExpectedRevision, "position": out.Position.String(), "linkSent": linkSent})
}

// externalShareReport answers GET /external-shares (the caller's) and GET
// /admin/external-shares (everyone's, with the sharer's username).
func (s *Server) externalShareReport(admin bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		if admin && !requireRole(c, RoleAdmin) {
			return
		}
		q, err := s.parseExternalShareQuery(c)
		if err != nil {
			abortWithError(c, err)
			return
		}
		if !admin {
			q.Sharer = identity(c).UserID
		}
		if !s.waitForMinPosition(c) {
			return
		}
		page, err := s.cfg.ReadModels.ExternalShares(c.Request.Context(), q)
		if err != nil {
			abortWithError(c, err)
			return
		}
		c.JSON(nethttp.StatusOK, page)
	}
}

func (s *Server) parseExternalShareQuery(c *gin.Context) (projections.ExternalShareQuery, error) {
	q := projections.ExternalShareQuery{ID: c.Query("id"), Name: c.Query("name"), Type: c.Query("type"), Recipient: c.Query("recipient"),
		Username: c.Query("username"), Status: c.Query("status"), Remaining: c.Query("remaining"), Now: s.cfg.Now().UTC()}
	switch strings.ToLower(q.Status) {
	case "", "approved", "finished", "cancelled", "error":
	default:
		return q, domain.InvalidField("status", "%q is not Approved, Finished, Cancelled or Error", q.Status)
	}
	if r := q.Remaining; r != "" && !strings.EqualFold(r, projections.Unlimited) {
		if n, err := strconv.Atoi(r); err != nil || n < 0 {
			return q, domain.InvalidField("remaining", "%q is not a number of accesses or Unlimited", r)
		}
	}
	for _, p := range []struct {
		name string
		to   *time.Time
	}{{"from", &q.From}, {"to", &q.To}, {"expiresFrom", &q.ExpiresFrom}, {"expiresTo", &q.ExpiresTo}} {
		if raw := c.Query(p.name); raw != "" {
			t, err := time.Parse(time.RFC3339, raw)
			if err != nil {
				return q, domain.InvalidField(p.name, "%q is not an RFC 3339 time such as 2026-03-03T14:00:00Z", raw)
			}
			*p.to = t
		}
	}
	q.Page, q.PageSize = 1, 30
	return q, parsePaging(c, &q.Page, &q.PageSize)
}

// The recipient's side.

// recipientMeta stamps the recipient's events: the actor is the recipient
// of the share, named by their address.
func (s *Server) recipientMeta(c *gin.Context) func(domain.ExternalShare) domain.Meta {
	base := domain.Meta{At: s.cfg.Now().UTC(), CorrelationID: requestID(c), ClientIP: c.ClientIP(), UserAgent: c.Request.UserAgent()}
	return func(x domain.ExternalShare) domain.Meta {
		m := base
		m.Actor = domain.Actor{ID: "recipient:" + x.ID, Name: x.RecipientEmail}
		return m
	}
}

// recipientLink reads the token in the path; false when it cannot name a
// share or the feature is off (the answer is sent).
func (s *Server) recipientLink(c *gin.Context) (token, shareID string, ok bool) {
	if s.cfg.ExternalShares.Disabled {
		abortWithError(c, domain.Errorf(domain.NotFound, "external sharing is switched off"))
		return "", "", false
	}
	token = c.Param("token")
	if shareID, ok = parseLinkToken(token); !ok {
		abortWithError(c, domain.Errorf(domain.NotFound, "no such link; check that it was copied whole"))
	}
	return token, shareID, ok
}

// openLink answers GET /x/{token}: it mails the recipient a fresh code
// (unless one went out less than a minute ago) and describes the share.
func (s *Server) openLink(c *gin.Context) {
	token, shareID, ok := s.recipientLink(c)
	if !ok {
		return
	}
	if s.cfg.Mailer == nil {
		abortWithError(c, domain.Errorf(domain.Unavailable, "external sharing needs e-mail, and none is configured"))
		return
	}
	code, err := newAccessCode()
	if err != nil {
		abortWithError(c, err)
		return
	}
	ctx := c.Request.Context()
	out, err := s.cmds.onExternalShare(ctx, shareID, s.recipientMeta(c), nil,
		domain.SendAccessCode{TokenHash: domain.HashLinkToken(token), CodeHash: domain.HashAccessCode(token, code)})
	if err != nil {
		abortWithError(c, err)
		return
	}
	s.notifyEnded(ctx, out)
	now := s.cfg.Now().UTC()
	x := out.after()
	if err := x.Refusal(now); err != nil {
		abortWithError(c, err)
		return
	}
	sent := false
	if out.has(domain.ExternalShareCodeSent{}) {
		body := fmt.Sprintf("Your MySafe authentication token: %s\n\nIt is valid for %s, until %s, and opens %q once.\nIf you did not open the link, ignore this message.\n",
			code, domain.AccessCodeTTL, now.Add(domain.AccessCodeTTL).Format("15:04 MST"), x.SecretName)
		sent = s.send(ctx, mail.Message{To: x.RecipientEmail, Subject: "MySafe - your authentication token", Body: body}, "external share code")
	}
	sharer := x.Sharer
	if users, err := s.cfg.ReadModels.Users(ctx, []string{x.Sharer}); err == nil && users[x.Sharer].Name != "" {
		sharer = users[x.Sharer].Name
	}
	c.JSON(nethttp.StatusOK, gin.H{"id": x.ID, "name": x.SecretName, "type": projections.ItemTypeAPISecret, "sharedBy": sharer,
		"expiresAt": x.ExpiresAt, "remainingAccesses": remainingOf(x), "codeSent": sent, "sentTo": maskEmail(x.RecipientEmail)})
}

func remainingOf(x domain.ExternalShare) any {
	if r := x.Remaining(); r != nil {
		return *r
	}
	return projections.Unlimited
}

// maskEmail shows enough of an address to recognise it: r***@example.com.
func maskEmail(email string) string {
	local, domainPart, ok := strings.Cut(email, "@")
	if !ok || local == "" {
		return "***"
	}
	return local[:1] + "***@" + domainPart
}

// openExternalShare answers POST /x/{token}/open {code}: one access is
// spent and recorded, then the secret is shown, client secret included.
func (s *Server) openExternalShare(c *gin.Context) {
	token, shareID, ok := s.recipientLink(c)
	if !ok {
		return
	}
	var in struct {
		Code string `json:"code"`
	}
	if !bindJSON(c, &in) {
		return
	}
	if len(in.Code) != 8 || strings.Trim(in.Code, "0123456789") != "" {
		abortWithError(c, domain.InvalidField("code", "is the 8 digits of the code we e-mailed you"))
		return
	}
	ctx := c.Request.Context()
	x, err := s.cmds.loadExternalShare(ctx, shareID)
	if err == nil {
		err = x.CheckToken(domain.HashLinkToken(token))
	}
	if err != nil {
		abortWithError(c, err)
		return
	}
	// The secret must still be there for its sharer to share before an
	// access is spent on it.
	secret, _, err := s.cmds.loadSecret(ctx, x.SecretID)
	if err != nil {
		abortWithError(c, err)
		return
	}
	if !secret.CanRead(x.Sharer) || secret.Disabled {
		abortWithError(c, domain.Errorf(domain.Forbidden, "the shared record is no longer available; ask its sender"))
		return
	}
	out, err := s.cmds.onExternalShare(ctx, shareID, s.recipientMeta(c), nil,
		domain.OpenExternalShare{TokenHash: domain.HashLinkToken(token), CodeHash: domain.HashAccessCode(token, in.Code)})
	if err != nil {
		abortWithError(c, err)
		return
	}
	s.notifyEnded(ctx, out)
	x = out.after()
	switch {
	case out.has(domain.ExternalShareLocked{}):
		abortWithError(c, domain.Errorf(domain.Forbidden, "wrong code; after %d wrong codes this link is locked. Ask its sender for a new one", domain.MaxWrongCodes))
		return
	case out.has(domain.ExternalShareCodeRejected{}):
		left := domain.MaxWrongCodes
		for _, e := range out.events {
			if p, ok := e.Payload.(domain.ExternalShareCodeRejected); ok {
				left -= p.WrongCodes
			}
		}
		abortWithError(c, domain.InvalidField("code", "is wrong; %d tries left before the link is locked", left))
		return
	case !out.has(domain.ExternalShareAccessed{}):
		err := x.Refusal(s.cfg.Now().UTC())
		if err == nil {
			err = domain.Errorf(domain.Conflict, "the access was not recorded; open the link again")
		}
		abortWithError(c, err)
		return
	}
	// The access is in the log; only now is the value opened.
	clientSecret, err := s.cmds.unseal(ctx, secret.ID, secret.SealedClientSecret)
	if err != nil {
		abortWithError(c, err)
		return
	}
	f := secret.Fields
	tags := f.Tags
	if tags == nil {
		tags = []string{}
	}
	c.JSON(nethttp.StatusOK, gin.H{"name": f.Name, "type": projections.ItemTypeAPISecret, "url": f.URL, "clientId": f.ClientID,
		"clientSecret": clientSecret, "identifier": f.Identifier, "method": f.Method, "tags": tags, "notes": f.Notes,
		"expiresAt": x.ExpiresAt, "remainingAccesses": remainingOf(x)})
}

// ExpireExternalShares records ExternalShareExpired for every approved
// share whose expiry has passed, and tells each recipient. Several
// replicas may run it at once: each share's command appends with its
// expected revision, so one of them records each expiry, and only that one
// sends the notice. It returns how many expiries this call recorded.
func (s *Server) ExpireExternalShares(ctx context.Context) (int, error) {
	now := s.cfg.Now().UTC()
	ids, err := s.cfg.ReadModels.DueExternalShares(ctx, now, 500)
	if err != nil {
		return 0, err
	}
	system := func(domain.ExternalShare) domain.Meta {
		return domain.Meta{Actor: domain.Actor{ID: "system", Name: "mysafe expiry scheduler"}, At: now}
	}
	n := 0
	for _, id := range ids {
		out, err := s.cmds.onExternalShare(ctx, id, system, nil, domain.ExpireExternalShare{})
		if err != nil {
			return n, fmt.Errorf("expire external share %s: %w", id, err)
		}
		if out.has(domain.ExternalShareExpired{}) {
			n++
			s.notifyEnded(ctx, out)
		}
	}
	return n, nil
}

// RunExternalShareExpiry runs ExpireExternalShares every interval (a
// minute if 0) until ctx ends.
func (s *Server) RunExternalShareExpiry(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.ExpireExternalShares(ctx); err != nil && ctx.Err() == nil {
				slog.WarnContext(ctx, "external share expiry", "err", err)
			}
		}
	}
}

// ipLimiter limits requests per client IP with a token bucket each.
type ipLimiter struct {
	mu    sync.Mutex
	every time.Duration
	burst int
	byIP  map[string]*ipBucket
}

type ipBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(perMinute int) *ipLimiter {
	if perMinute <= 0 {
		perMinute = 20
	}
	return &ipLimiter{every: time.Minute / time.Duration(perMinute), burst: perMinute, byIP: map[string]*ipBucket{}}
}

func (l *ipLimiter) allow(ip string) bool {
	now := time.Now() // real time, whatever clock the server is given
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.byIP) > 10000 { // forget addresses idle for long
		for k, b := range l.byIP {
			if now.Sub(b.seen) > 10*time.Minute {
				delete(l.byIP, k)
			}
		}
	}
	b := l.byIP[ip]
	if b == nil {
		b = &ipBucket{lim: rate.NewLimiter(rate.Every(l.every), l.burst)}
		l.byIP[ip] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// middleware rate-limits the routes it guards per client IP.
func (l *ipLimiter) middleware(c *gin.Context) {
	if !l.allow(c.ClientIP()) {
		abortWithError(c, domain.Errorf(domain.TooManyRequests, "too many requests from your address; wait a little and try again"))
		return
	}
	c.Next()
}

// withExternalShares adds to a secret's history the events of the external
// shares its SecretSharedExternally events name, in log order.
func (s *Server) withExternalShares(ctx context.Context, records []eventstore.RecordedEvent, events []historyEvent) ([]historyEvent, error) {
	type placed struct {
		pos eventstore.Position
		ev  historyEvent
	}
	var all []placed
	for _, ev := range events {
		pos, err := eventstore.ParsePosition(ev.Position)
		if err != nil {
			return nil, err
		}
		all = append(all, placed{pos, ev})
	}
	for _, r := range records {
		if r.Type != (domain.SecretSharedExternally{}).EventType() {
			continue
		}
		e, err := domain.Decode(r.Type, r.Data, r.Metadata)
		if err != nil {
			return nil, err
		}
		stream := domain.ExternalShareStream(e.Payload.(domain.SecretSharedExternally).ShareID)
		shared, err := s.cfg.Store.ReadStream(ctx, stream, eventstore.ReadStreamOptions{})
		if errors.Is(err, eventstore.ErrStreamNotFound) {
			continue // the share's stream was never started
		}
		if err != nil {
			return nil, err
		}
		for _, r := range shared {
			e, err := domain.Decode(r.Type, r.Data, r.Metadata)
			if err != nil {
				return nil, err
			}
			all = append(all, placed{r.Position, historyEvent{Type: r.Type, At: e.At.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
				Actor: e.Actor, Revision: r.Revision, Position: r.Position.String(), Data: domain.PublicData(e), Stream: stream}})
		}
	}
	slices.SortStableFunc(all, func(a, b placed) int { return a.pos.Compare(b.pos) })
	out := make([]historyEvent, len(all))
	for i, p := range all {
		out[i] = p.ev
	}
	return out, nil
}
