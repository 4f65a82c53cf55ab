package nbd

import (
	"context"
	"errors"
	"syscall"
)

// Errors an Export may return; the server maps them (with errors.Is) to NBD
// error values. Any other error is reported to the client as EIO.
var (
	ErrIO           = errors.New("nbd: input/output error")      // EIO
	ErrNoSpace      = errors.New("nbd: no space left on device") // ENOSPC
	ErrPerm         = errors.New("nbd: operation not permitted") // EPERM
	ErrInvalid      = errors.New("nbd: invalid argument")        // EINVAL
	ErrNoMem        = errors.New("nbd: cannot allocate memory")  // ENOMEM
	ErrOverflow     = errors.New("nbd: value too large")         // EOVERFLOW
	ErrNotSup       = errors.New("nbd: operation not supported") // ENOTSUP
	ErrShutdown     = errors.New("nbd: export is shutting down") // ESHUTDOWN
	ErrServerClosed = errors.New("nbd: server closed")           // returned by Serve after Close
)

// errnoOf maps an Export error to the NBD error value sent to the client.
// Syscall errors from file-backed exports are mapped too, following the
// spec's advice (EDQUOT and EFBIG become ENOSPC).
func errnoOf(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrNoSpace), errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errnoNoSpc
	case errors.Is(err, ErrPerm), errors.Is(err, syscall.EPERM),
		errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EROFS):
		return errnoPerm
	case errors.Is(err, ErrInvalid), errors.Is(err, syscall.EINVAL):
		return errnoInval
	case errors.Is(err, ErrNoMem), errors.Is(err, syscall.ENOMEM):
		return errnoNoMem
	case errors.Is(err, ErrOverflow):
		return errnoOverflow
	case errors.Is(err, ErrNotSup):
		return errnoNotSup
	case errors.Is(err, ErrShutdown), errors.Is(err, context.Canceled):
		return errnoShutdown
	}
	return errnoIO
}
