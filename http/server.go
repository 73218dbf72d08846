// Package http is mysafe's HTTP API: gin routes, authentication, request
// validation, the command side that appends to the log, and the single
// mapping from error kinds to problem+json answers.
package http

import (
	"context"
	"errors"
	"log/slog"
	nethttp "net/http"
	"regexp"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/domain/secretbox"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/http/mail"
	"github.com/mysafe/mysafe/projections"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 1 << 20

// ReadModels answers the screens' queries from the projections.
type ReadModels interface {
	Report(ctx context.Context, userID string, q projections.ReportQuery) (projections.ReportPage, error)
	Cards(ctx context.Context, userID string) ([]projections.Card, error)
	Details(ctx context.Context, secretID string) (*projections.Details, error)
	// Groups, the directory and external shares (groups.go).
	GroupReadModels
}

// Progress tells how far the projections have read the log.
type Progress interface {
	Ready() bool
	WaitFor(ctx context.Context, pos eventstore.Position) error
}

// Config is what the server is built from.
type Config struct {
	Store      eventstore.Store
	Keys       *secretbox.Keyring
	SigningKey []byte
	ReadModels ReadModels
	Progress   Progress
	// Ping checks the read models' Redis for /readyz.
	Ping func(context.Context) error
	// WaitTimeout bounds how long a query waits for the projections to
	// reach the position it names (X-MySafe-Min-Position). Default 5 s.
	WaitTimeout time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// TrustedProxies are the addresses (IPs or CIDRs) of reverse proxies
	// whose X-Forwarded-For is believed; none by default.
	TrustedProxies []string
	// Audit answers the audit report and the reach index (audit.go).
	Audit AuditReadModel
	// Membership joins group membership into the access-at-time queries;
	// nil means the groups' own streams (groups.go).
	Membership MembershipHistory
	// Mailer sends the e-mails of external shares; nil refuses to make
	// them.
	Mailer mail.Mailer
	// ExternalShares configures temporary external shares (extshares.go).
	ExternalShares ExternalShareConfig
}

// Server is the HTTP API.
type Server struct {
	cfg  Config
	auth *authenticator
	cmds *commands
	gin  *gin.Engine
}

// NewServer builds the API.
func NewServer(cfg Config) *Server {
	if cfg.WaitTimeout == 0 {
		cfg.WaitTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:  cfg,
		auth: newAuthenticator(cfg.SigningKey, cfg.Now),
		cmds: &commands{store: cfg.Store, keys: cfg.Keys},
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	// The client IP goes into audit records: trust no X-Forwarded-For unless
	// the operator names the proxies that set it.
	_ = r.SetTrustedProxies(cfg.TrustedProxies)
	r.Use(withRequestID, logRequests, gin.CustomRecovery(func(c *gin.Context, v any) {
		abortWithError(c, domain.Errorf(domain.Other, "panic: %v", v))
	}), limitBody)
	r.NoRoute(func(c *gin.Context) {
		abortWithError(c, domain.Errorf(domain.NotFound, "no route %s %s", c.Request.Method, c.Request.URL.Path))
	})
	r.NoMethod(func(c *gin.Context) {
		abortWithError(c, domain.Errorf(domain.Invalid, "method %s is not allowed on %s", c.Request.Method, c.Request.URL.Path))
	})
	r.GET("/healthz", func(c *gin.Context) { c.JSON(nethttp.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", s.ready)

	api := r.Group("/api/v1", noStore, s.requireIdentity)
	api.POST("/secrets", s.createSecret)
	api.GET("/secrets", s.report)
	api.GET("/secrets/:id", s.details)
	api.PATCH("/secrets/:id", s.updateSecret)
	api.POST("/secrets/:id/disable", s.disableSecret)
	api.POST("/secrets/:id/enable", s.enableSecret)
	api.PUT("/secrets/:id/shares", s.applyShares)
	api.POST("/secrets/:id/shares", s.shareSecret)
	api.PATCH("/secrets/:id/shares/:type/:principalId", s.changeSharePermission)
	api.DELETE("/secrets/:id/shares/:type/:principalId", s.revokeShare)
	api.POST("/secrets/:id/reveal", s.revealSecret)
	api.POST("/secrets/:id/copy", s.copySecret)
	api.GET("/secrets/:id/history", s.history)
	api.GET("/secrets/:id/access", s.secretAccessAt)
	api.GET("/secrets/:id/access/intervals", s.secretAccessIntervals)
	api.GET("/users/:id/access", s.userAccessAt)
	api.GET("/audit/events", s.auditEvents)
	api.GET("/audit/export", s.auditExport)
	api.GET("/audit/verify", s.auditVerify)
	api.GET("/home/cards", s.cards)

	// Groups, the directory and external shares (groups.go, directory.go,
	// extshares.go).
	if s.cfg.Membership == nil {
		s.cfg.Membership = s.groupMembershipHistory
	}
	api.POST("/groups", s.createGroup)
	api.GET("/groups", s.listGroups)
	api.GET("/groups/:id", s.groupDetails)
	api.PATCH("/groups/:id", s.updateGroup)
	api.POST("/groups/:id/disable", s.disableGroup)
	api.POST("/groups/:id/enable", s.enableGroup)
	api.POST("/groups/:id/members", s.addGroupMember)
	api.DELETE("/groups/:id/members/:userId", s.removeGroupMember)
	api.GET("/secrets/:id/access/effective", s.effectiveAccess)
	api.GET("/principals", s.searchPrincipals)
	api.PUT("/users/:id", s.putUser)
	api.POST("/secrets/:id/external-shares", s.createExternalShare)
	api.GET("/external-shares", s.externalShareReport(false))
	api.GET("/admin/external-shares", s.externalShareReport(true))
	api.POST("/external-shares/:id/revoke", s.revokeExternalShare)
	api.POST("/external-shares/:id/resend", s.resendExternalShare)
	// The recipient's routes: the link's token and the e-mailed code are
	// the credentials; the request log names the pattern, never the token.
	recipient := r.Group("/x", noStore, newIPLimiter(cfg.ExternalShares.RecipientRate).middleware)
	recipient.GET("/:token", s.openLink)
	recipient.POST("/:token/open", s.openExternalShare)

	s.gin = r
	return s
}

// ServeHTTP makes the server an http.Handler.
func (s *Server) ServeHTTP(w nethttp.ResponseWriter, r *nethttp.Request) { s.gin.ServeHTTP(w, r) }

// ready answers 200 once the projections have caught up with the log and
// the read models' Redis answers.
func (s *Server) ready(c *gin.Context) {
	if !s.cfg.Progress.Ready() {
		abortWithError(c, domain.Errorf(domain.Unavailable, "the read models are still catching up with the log"))
		return
	}
	if err := s.cfg.Ping(c.Request.Context()); err != nil {
		abortWithError(c, domain.Errorf(domain.Unavailable, "the read models' Redis does not answer"))
		return
	}
	c.JSON(nethttp.StatusOK, gin.H{"status": "ready"})
}

// request collects what the command side records about this request.
func (s *Server) request(c *gin.Context, id Identity) request {
	return request{
		meta: domain.Meta{
			Actor:         id.Actor(),
			At:            s.cfg.Now().UTC(),
			CorrelationID: requestID(c),
			ClientIP:      c.ClientIP(),
			UserAgent:     c.Request.UserAgent(),
		},
		idempotencyKey: c.GetHeader("Idempotency-Key"),
		route:          c.Request.Method + " " + c.FullPath(),
	}
}

// waitForMinPosition holds a query until the projections have passed the
// position the client names, so a UI never shows what it just changed as
// unchanged. Past the bound it answers 503 with Retry-After.
func (s *Server) waitForMinPosition(c *gin.Context) bool {
	raw := c.GetHeader("X-MySafe-Min-Position")
	if raw == "" {
		return true
	}
	pos, err := eventstore.ParsePosition(raw)
	if err != nil {
		abortWithError(c, domain.InvalidField("X-MySafe-Min-Position", "%q is not a position this API returned", raw))
		return false
	}
	return s.waitFor(c, pos)
}

func (s *Server) waitFor(c *gin.Context, pos eventstore.Position) bool {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.WaitTimeout)
	defer cancel()
	if err := s.cfg.Progress.WaitFor(ctx, pos); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = domain.Errorf(domain.Unavailable, "the read models have not reached position %s within %s; retry shortly", pos, s.cfg.WaitTimeout)
		}
		abortWithError(c, err)
		return false
	}
	return true
}

const requestIDKey = "mysafe.requestId"

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// withRequestID takes the caller's X-Request-Id when it is sane, or makes
// one, and echoes it; events record it as their correlation ID.
func withRequestID(c *gin.Context) {
	id := c.GetHeader("X-Request-Id")
	if !validRequestID.MatchString(id) {
		id = uuid.NewString()
	}
	c.Set(requestIDKey, id)
	c.Header("X-Request-Id", id)
	c.Next()
}

func requestID(c *gin.Context) string { return c.GetString(requestIDKey) }

// logRequests writes one structured line per request. It logs neither
// bodies nor headers: they carry secrets and tokens.
func logRequests(c *gin.Context) {
	start := time.Now()
	c.Next()
	slog.Info("request", "method", c.Request.Method, "route", c.FullPath(), "status", c.Writer.Status(),
		"duration", time.Since(start), "requestId", requestID(c), "ip", c.ClientIP())
}

// limitBody refuses bodies over MaxBodyBytes: at once when the length is
// declared, while reading when it is not.
func limitBody(c *gin.Context) {
	if c.Request.ContentLength > MaxBodyBytes {
		abortWithError(c, domain.Errorf(domain.TooLarge, "the request body is %d bytes; at most %d are accepted", c.Request.ContentLength, MaxBodyBytes))
		return
	}
	c.Request.Body = nethttp.MaxBytesReader(c.Writer, c.Request.Body, MaxBodyBytes)
	c.Next()
}

// noStore keeps API answers, some of which hold secret values, out of
// every cache.
func noStore(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	c.Next()
}
