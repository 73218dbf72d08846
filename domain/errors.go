package domain

import (
	"errors"
	"fmt"
)

// Kind classifies an error by what the caller can do about it. The HTTP
// layer maps each kind to a status code in one table; kinds are never
// renumbered so that logs and metrics stay comparable.
type Kind uint8

const (
	Other              Kind = iota // an unexpected failure
	Invalid                        // the input is wrong; Field names what
	NotFound                       // no such thing, or the caller may not know it exists
	Forbidden                      // the caller may see it but may not do this
	Conflict                       // the state does not allow it right now
	PreconditionFailed             // an If-Match revision no longer holds
	Unavailable                    // a dependency is down; retry later
	Unauthenticated                // no valid identity
	TooLarge                       // the request body is too big
	TooManyRequests                // the caller is over a rate limit; retry later
)

var kindNames = [...]string{"other", "invalid", "not found", "forbidden", "conflict",
	"precondition failed", "unavailable", "unauthenticated", "too large", "too many requests"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Error is the one error type of mysafe. Its message never holds a secret
// value: it is shown to callers and written to logs.
type Error struct {
	Op    string // the operation, e.g. "ShareSecret"
	Kind  Kind
	Field string // for Invalid: the JSON name of the offending field
	Msg   string // what was wrong and what would have been right
	Err   error  // the cause, if any
}

func (e *Error) Error() string {
	msg := e.Msg
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	} else if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Op != "" {
		return e.Op + ": " + msg
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf makes an error of the given kind.
func Errorf(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// InvalidField makes an Invalid error naming the offending field.
func InvalidField(field, format string, args ...any) *Error {
	return &Error{Kind: Invalid, Field: field, Msg: field + ": " + fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of the first *Error in err's chain, Other if none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Other
}

// WithOp names the operation on a domain error, keeping its kind.
func WithOp(op string, err error) error {
	var e *Error
	if errors.As(err, &e) && e.Op == "" {
		c := *e
		c.Op = op
		return &c
	}
	return err
}
