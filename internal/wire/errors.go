package wire

import (
	"errors"
)

// Errors. Connection failures wrap ErrClosed (and the cause); frames that break the protocol
// wrap ErrProtocol.
var (
	ErrClosed   = errors.New("wire: connection closed")
	ErrProtocol = errors.New("wire: protocol violation")
	ErrTooLarge = errors.New("wire: request exceeds max payload")
	ErrBadOp    = errors.New("wire: unknown opcode")
)

// StatusOf returns the Status in err's chain: StatusOK for nil, and ok false when err is not a
// server status (a transport or context error).
func StatusOf(err error) (s Status, ok bool) {
	if err == nil {
		return StatusOK, true
	}
	ok = errors.As(err, &s)
	return s, ok
}
