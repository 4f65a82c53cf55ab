package wire

import "fmt"

// Status is the outcome of a request, carried in the reply header. A Status other than StatusOK
// is an error: Conn.Do returns it (with the Response) so callers can use errors.As or StatusOf.
type Status uint32

// Statuses. Numbers are never reused.
const (
	StatusOK         Status = 0
	StatusAuth       Status = 1  // no token for the volume, or the token is invalid
	StatusExpired    Status = 2  // token expired: renew it and retry
	StatusRevoked    Status = 3  // token's map generation is stale: the volume was unmapped
	StatusReadOnly   Status = 4  // write with a read-only token
	StatusStaleEpoch Status = 5  // request epoch is older than the server's: refresh the layout, retry
	StatusNotPrimary Status = 6  // this SDS is not the chunk's primary: refresh the layout, retry
	StatusRange      Status = 7  // offset/length outside the volume or chunk
	StatusIO         Status = 8  // local IO error
	StatusRetry      Status = 9  // transient (e.g. replica unreachable): retry as is
	StatusProto      Status = 10 // request not understood (e.g. reserved opcode, bad length)
	StatusNoSpace    Status = 11 // no backing space left
)

var statusNames = [...]string{
	StatusOK: "ok", StatusAuth: "not authorized", StatusExpired: "token expired",
	StatusRevoked: "token revoked", StatusReadOnly: "read-only", StatusStaleEpoch: "stale epoch",
	StatusNotPrimary: "not primary", StatusRange: "out of range", StatusIO: "io error",
	StatusRetry: "transient failure, retry", StatusProto: "protocol error", StatusNoSpace: "no space",
}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", uint32(s))
}

// Error makes Status an error.
func (s Status) Error() string { return "wire: " + s.String() }

// Retryable reports whether the same request may succeed if sent again: at once (StatusRetry),
// after refreshing the layout (StatusStaleEpoch, StatusNotPrimary) or after renewing the token
// (StatusExpired).
func (s Status) Retryable() bool {
	switch s {
	case StatusRetry, StatusStaleEpoch, StatusNotPrimary, StatusExpired:
		return true
	}
	return false
}
