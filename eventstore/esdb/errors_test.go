package esdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mysafe/mysafe/eventstore"
)

func TestUnavailable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "connection refused"), true},
		{fmt.Errorf("wrapped: %w", status.Error(codes.Unavailable, "x")), true},
		{status.Error(codes.Aborted, "Operation timed out"), true},
		{fmt.Errorf("could not send append request: %w", io.EOF), true},
		{context.DeadlineExceeded, true},
		{errClosed, true},
		{status.Error(codes.PermissionDenied, "Access Denied"), false},
		{status.Error(codes.InvalidArgument, "bad"), false},
		{status.Error(codes.FailedPrecondition, "Event stream 'x' is deleted."), false},
		{context.Canceled, false},
		{errors.New("something else"), false},
	} {
		if got := unavailable(tc.err); got != tc.want {
			t.Errorf("unavailable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestConflictFromStatus: deletes report a wrong expected version as a
// FailedPrecondition status, in EventStoreDB's words (RpcExceptions.cs).
func TestConflictFromStatus(t *testing.T) {
	msg := "Delete failed due to WrongExpectedVersion. Stream: key-1, Expected version: %d, Actual version: %d"
	for _, tc := range []struct {
		actual int64
		want   *uint64
	}{
		{-1, nil},
		{7, ptr(uint64(7))},
	} {
		err := fmt.Errorf("failed to perform delete, details: %w", status.Errorf(codes.FailedPrecondition, msg, 3, tc.actual))
		c, ok := asConflict(err, "key-1", eventstore.Exact(3))
		switch {
		case !ok:
			t.Errorf("%v: not recognized as a conflict", err)
		case (c.Actual == nil) != (tc.want == nil) || (c.Actual != nil && *c.Actual != *tc.want):
			t.Errorf("%v: Actual = %v, want %v", err, c.Actual, tc.want)
		case c.Stream != "key-1" || c.Expected != eventstore.Exact(3):
			t.Errorf("conflict %+v, want stream key-1 expecting 3", c)
		}
	}
	if _, ok := asConflict(status.Error(codes.FailedPrecondition, "Event stream 'x' is deleted."), "x", eventstore.Any); ok {
		t.Error("a deleted stream was taken for a conflict")
	}
}

func ptr[T any](v T) *T { return &v }

func TestWrapKeepsCallerCancellationApart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := wrap(ctx, "append", status.Error(codes.Canceled, "context canceled"))
	if errors.Is(err, eventstore.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("wrap after the caller cancelled = %v, want context.Canceled, not unavailable", err)
	}
	err = wrap(context.Background(), "append", status.Error(codes.Canceled, "grpc: the client connection is closing"))
	if !errors.Is(err, eventstore.ErrUnavailable) {
		t.Errorf("wrap of a connection closed under the call = %v, want ErrUnavailable", err)
	}
}
