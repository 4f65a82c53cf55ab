package fsm

import (
	"errors"
	"fmt"
)

// Kind classifies a rejected command. The HTTP layer maps each kind to one status code, and every
// replica rejects a given command with the same kind, because validation is deterministic.
type Kind string

const (
	KindInvalid      Kind = "invalid"             // 400: the request itself is wrong
	KindNotFound     Kind = "not_found"           // 404: a referenced object does not exist
	KindConflict     Kind = "conflict"            // 409: the state forbids it (duplicate, not empty, mapped)
	KindPrecondition Kind = "precondition_failed" // 412: compare-and-set mismatch
)

// Error is a typed, deterministic rejection of a command.
type Error struct {
	Kind    Kind   `json:"code"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Message }

func newErr(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *Error  { return newErr(KindInvalid, format, args...) }
func notFound(format string, args ...any) *Error { return newErr(KindNotFound, format, args...) }
func conflict(format string, args ...any) *Error { return newErr(KindConflict, format, args...) }

// Sentinel errors of the store itself (not command rejections).
var (
	ErrUndecodable  = errors.New("fsm: log entry does not decode")
	ErrNotPflexDB   = errors.New("fsm: not a pflex state database")
	ErrSchemaTooNew = errors.New("fsm: state database schema is newer than this binary")
)

// AsError returns the command rejection inside err, if there is one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
