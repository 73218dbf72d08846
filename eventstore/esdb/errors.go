package esdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	esdbclient "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mysafe/mysafe/eventstore"
)

var (
	// errClosed answers operations on a closed Store. It wraps
	// ErrUnavailable: during a shutdown the request may be retried
	// elsewhere.
	errClosed = fmt.Errorf("esdb: store is closed: %w", eventstore.ErrUnavailable)
	// errClientPanic marks a panic recovered from the client library.
	errClientPanic = errors.New("esdb: client library panicked")
)

// esdbError finds the client's own error type in err's chain. The client
// wraps it with fmt.Errorf("...%w") on some paths, so esdb.FromError, a bare
// type assertion, would miss it.
func esdbError(err error) (*esdbclient.Error, bool) {
	var e *esdbclient.Error
	ok := errors.As(err, &e)
	return e, ok
}

func hasCode(err error, code esdbclient.ErrorCode) bool {
	e, ok := esdbError(err)
	return ok && e.IsErrorCode(code)
}

// connectionClosed: the client refused the call before sending anything.
func connectionClosed(err error) bool { return hasCode(err, esdbclient.ErrorCodeConnectionClosed) }

// clientDead reports an error after which the client can never serve again:
// it was closed, or its node discovery gave up (which closes it; the error
// carries only the last attempt's code, hence the message test).
func clientDead(err error) bool {
	e, ok := esdbError(err)
	return ok && (e.IsErrorCode(esdbclient.ErrorCodeConnectionClosed) ||
		strings.Contains(e.Error(), "maximum discovery attempt count reached"))
}

// unavailable reports an error that says the server could not be reached or
// could not serve now, so that the operation may be retried later.
func unavailable(err error) bool {
	if errors.Is(err, eventstore.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errClientPanic) {
		return true
	}
	// A broken stream makes gRPC's SendMsg answer a bare io.EOF (the
	// status is only for RecvMsg to find), which the client reports as
	// ErrorCodeUnknown. An append failing so was not committed: the server
	// commits only once it has the whole client stream. On a subscription,
	// io.EOF is a server that ended it without saying why.
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	if e, ok := esdbError(err); ok {
		switch e.Code() {
		case esdbclient.ErrorUnavailable, esdbclient.ErrorCodeDeadlineExceeded,
			esdbclient.ErrorCodeConnectionClosed, esdbclient.ErrorAborted, esdbclient.ErrorCodeNotLeader:
			return true
		}
	}
	// Raw gRPC statuses come from the paths that skip the client's error
	// mapping (opening a read, subscription drops). Aborted is how
	// EventStoreDB reports its own commit timeouts.
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}

// wrap turns a client error into the port's: a conflict, a deleted or
// missing stream, unavailability, or the error as it is. parent is the
// caller's context, to tell its cancellation from a failing server.
func wrap(parent context.Context, op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(parent.Err(), context.Canceled):
		return fmt.Errorf("esdb: %s: %w", op, parent.Err())
	case hasCode(err, esdbclient.ErrorCodeStreamDeleted):
		return fmt.Errorf("esdb: %s: %w", op, eventstore.ErrStreamDeleted)
	case unavailable(err),
		// The connection went away under the call without the caller
		// asking: the server is as good as unreachable.
		status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled):
		if errors.Is(err, eventstore.ErrUnavailable) {
			return err
		}
		return fmt.Errorf("esdb: %s: %w: %w", op, eventstore.ErrUnavailable, err)
	}
	return fmt.Errorf("esdb: %s: %w", op, err)
}

var (
	// The client renders an append's wrong expected version only as text:
	// "wrong expected version: expecting '%s' but got '%s'" (client.go).
	appendActualRE = regexp.MustCompile(`but got '(\d+|no_stream)'`)
	// Deletes (and appends on servers before 20.6.1) fail with
	// FailedPrecondition "... WrongExpectedVersion. Stream: s, Expected
	// version: n, Actual version: m" (RpcExceptions.cs), -1 for no stream.
	rpcActualRE = regexp.MustCompile(`WrongExpectedVersion.*Actual version: (-?\d+)`)
)

// asConflict recognizes a wrong expected version in either form and
// returns it as the port's *ConflictError, with Actual when the server said.
func asConflict(err error, stream string, expected eventstore.ExpectedRevision) (*eventstore.ConflictError, bool) {
	c := &eventstore.ConflictError{Stream: stream, Expected: expected}
	if e, ok := esdbError(err); ok && e.IsErrorCode(esdbclient.ErrorCodeWrongExpectedVersion) {
		if m := appendActualRE.FindStringSubmatch(e.Error()); m != nil && m[1] != "no_stream" {
			c.Actual = parseRevision(m[1])
		}
		return c, true
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.FailedPrecondition && strings.Contains(s.Message(), "WrongExpectedVersion") {
		if m := rpcActualRE.FindStringSubmatch(s.Message()); m != nil {
			c.Actual = parseRevision(m[1])
		}
		return c, true
	}
	return nil, false
}

// parseRevision reads a revision; negative numbers (EventStoreDB's "no
// stream") and garbage give nil.
func parseRevision(s string) *uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil
	}
	return &n
}
