package sdc

import (
	"errors"
	"fmt"

	"pflex/sdc/nbd"
)

// Errors of the IO engine. Each wraps the nbd error the NBD server maps to the client's errno:
// a timeout or an unmapped volume is EIO, a write to a read-only mapping EPERM, a closed volume
// ESHUTDOWN (the client should disconnect).
var (
	// ErrTimeout: the IO did not succeed within io_timeout, retries included.
	ErrTimeout = fmt.Errorf("sdc: io timed out: %w", nbd.ErrIO)
	// ErrUnmapped: the volume is no longer mapped to this SDC.
	ErrUnmapped = fmt.Errorf("sdc: volume not mapped to this SDC: %w", nbd.ErrIO)
	// ErrReadOnly: a write to a volume mapped readOnly.
	ErrReadOnly = fmt.Errorf("sdc: volume is mapped read-only: %w", nbd.ErrPerm)
	// ErrClosed: the volume's export was removed or the SDC is stopping.
	ErrClosed = fmt.Errorf("sdc: volume closed: %w", nbd.ErrShutdown)
	// ErrNoLayout: no layout could be had for the volume.
	ErrNoLayout = errors.New("sdc: no layout for the volume")
)
