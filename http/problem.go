package http

import (
	"context"
	"errors"
	"log/slog"
	"net"
	nethttp "net/http"

	"github.com/gin-gonic/gin"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// statusOf is the one place where an error kind becomes an HTTP status.
var statusOf = map[domain.Kind]int{
	domain.Invalid:            nethttp.StatusBadRequest,
	domain.Unauthenticated:    nethttp.StatusUnauthorized,
	domain.Forbidden:          nethttp.StatusForbidden,
	domain.NotFound:           nethttp.StatusNotFound,
	domain.Conflict:           nethttp.StatusConflict,
	domain.PreconditionFailed: nethttp.StatusPreconditionFailed,
	domain.TooLarge:           nethttp.StatusRequestEntityTooLarge,
	domain.Unavailable:        nethttp.StatusServiceUnavailable,
	domain.TooManyRequests:    nethttp.StatusTooManyRequests,
	domain.Other:              nethttp.StatusInternalServerError,
}

// Problem is an RFC 9457 problem detail.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Field     string `json:"field,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}

// kindOf classifies errors from outside the domain too: a store or Redis
// that cannot be reached is Unavailable, a lost append race is Conflict.
func kindOf(err error) domain.Kind {
	if k := domain.KindOf(err); k != domain.Other {
		return k
	}
	var netErr net.Error
	switch {
	case errors.Is(err, eventstore.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr):
		return domain.Unavailable
	case errors.Is(err, eventstore.ErrConflict):
		return domain.Conflict
	}
	return domain.Other
}

// abortWithError answers with the problem for err. Details of unexpected
// errors are logged, not shown: they may name internals.
func abortWithError(c *gin.Context, err error) {
	kind := kindOf(err)
	status := statusOf[kind]
	p := Problem{Type: "about:blank", Title: nethttp.StatusText(status), Status: status, RequestID: requestID(c)}
	var de *domain.Error
	switch {
	case kind == domain.Other:
		slog.ErrorContext(c.Request.Context(), "request failed", "err", err, "requestId", p.RequestID)
		p.Detail = "an unexpected error occurred; quote the request ID when reporting it"
	case errors.As(err, &de):
		p.Detail, p.Field = de.Error(), de.Field
	case kind == domain.Unavailable:
		slog.WarnContext(c.Request.Context(), "dependency unavailable", "err", err, "requestId", p.RequestID)
		p.Detail = "a storage dependency is unavailable; retry shortly"
	default:
		p.Detail = err.Error()
	}
	switch status {
	case nethttp.StatusServiceUnavailable:
		c.Header("Retry-After", "1")
	case nethttp.StatusTooManyRequests:
		c.Header("Retry-After", "10")
	}
	c.Header("Content-Type", "application/problem+json")
	c.AbortWithStatusJSON(status, p)
}
