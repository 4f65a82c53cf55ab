package nbd

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

func fdatasync(f *os.File) error {
	return fdo(f, unix.Fdatasync)
}

func punchHole(f *os.File, off, length int64) error {
	return fallocate(f, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

func zeroRange(f *os.File, off, length int64) error {
	return fallocate(f, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

func fallocate(f *os.File, mode uint32, off, length int64) error {
	err := fdo(f, func(fd int) error { return unix.Fallocate(fd, mode, off, length) })
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENODEV) {
		return errUnsupported
	}
	return err
}

// fdo runs fn on f's descriptor, retrying on EINTR.
func fdo(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if opErr = fn(int(fd)); !errors.Is(opErr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	return opErr
}
