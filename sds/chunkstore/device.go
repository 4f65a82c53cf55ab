package chunkstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"pflex/internal/nowait"
)

// device is one backing file or block device.
type device struct {
	path  string
	f     *os.File
	size  int64
	block bool // a block (or character) device: no hole punching, zeros are written
	char  bool // a character device (/dev/null in tests): nothing to sync
	sp    space

	dev, ino uint64 // the file's identity, for a local reader (locate.go)

	nowaitRead, nowaitWrite *nowait.Op // page-cache fast paths (nowait.go)
	rawWrite                *rawWrite  // raw pwrite unless writes have been sleeping (rawwrite.go)
	resident                *resident  // whether a range is in the page cache (cachestat.go)
}

// openDevice opens path read-write. A missing file is created sparse with size bytes, and an
// existing regular file smaller than size is extended (sparsely); a block device keeps its own
// size.
func openDevice(path string, size int64) (*device, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("device %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("device %s: %w", path, err)
	}
	d := &device{path: path, f: f}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		d.dev, d.ino = sys.Dev, sys.Ino
	}
	switch {
	case st.Mode()&os.ModeDevice != 0:
		d.block = true
		d.char = st.Mode()&os.ModeCharDevice != 0
		if d.size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("device %s: size: %w", path, err)
		}
	case st.Mode().IsRegular():
		d.size = st.Size()
		if d.size < size {
			if err := f.Truncate(size); err != nil {
				f.Close()
				return nil, fmt.Errorf("device %s: extend to %d bytes: %w", path, size, err)
			}
			d.size = size
		}
	default:
		f.Close()
		return nil, fmt.Errorf("device %s: %v is neither a regular file nor a block device", path, st.Mode().Type())
	}
	d.sp.size = d.size
	rc, _ := f.SyscallConn()
	d.nowaitRead = nowait.New(unix.SYS_PREADV2, rc)
	d.nowaitWrite = nowait.New(unix.SYS_PWRITEV2, rc)
	d.rawWrite = newRawWrite(rc)
	d.resident = newResident(rc)
	return d, nil
}

// sync makes the device's written data durable.
func (d *device) sync() error {
	if d.char {
		return nil
	}
	if err := unix.Fdatasync(int(d.f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", d.path, err)
	}
	return nil
}

// zero makes [off, off+n) read as zeros. On a file it punches a hole (the space returns to
// the filesystem) and, with reserve, allocates it again as zeroed blocks (thick volumes keep
// their space); on a block device, or a filesystem without hole punching, it writes zeros.
func (d *device) zero(off, n int64, reserve bool) error {
	if !d.block {
		err := unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			if reserve {
				if err := unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
					return ioErr(fmt.Errorf("fallocate %s: %w", d.path, err))
				}
			}
			return nil
		}
		if !errors.Is(err, syscall.EOPNOTSUPP) && !errors.Is(err, syscall.ENOSYS) {
			return ioErr(fmt.Errorf("punch hole %s: %w", d.path, err))
		}
	}
	buf := zeroBuf[:]
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := d.f.WriteAt(buf[:k], off); err != nil {
			return ioErr(fmt.Errorf("write zeros %s: %w", d.path, err))
		}
		off += k
		n -= k
	}
	return nil
}

var zeroBuf [256 << 10]byte

// ioErr marks an out-of-space failure as ErrNoSpace.
func ioErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}
