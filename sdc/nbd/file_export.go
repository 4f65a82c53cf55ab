package nbd

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// FileExport is an Export backed by a regular file or block device. Flush
// and FUA are fdatasync; Trim punches a hole where the filesystem can
// (writing zeroes otherwise); WriteZeroes punches a hole when allowed, else
// zeroes the range in place. All connections share the one file, so a
// Flush covers writes made through any of them.
type FileExport struct {
	f        *os.File
	size     int64
	readOnly bool
}

// OpenFileExport opens path (read-only if readOnly) and exports it at its
// current size.
func OpenFileExport(path string, readOnly bool) (*FileExport, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	e, err := NewFileExport(f, readOnly)
	if err != nil {
		f.Close()
		return nil, err
	}
	return e, nil
}

// NewFileExport exports f at its current size. The export owns f; Close
// closes it.
func NewFileExport(f *os.File, readOnly bool) (*FileExport, error) {
	size, err := f.Seek(0, 2)
	if err != nil {
		return nil, fmt.Errorf("sizing %s: %w", f.Name(), err)
	}
	return &FileExport{f: f, size: size, readOnly: readOnly}, nil
}

// Close closes the file.
func (e *FileExport) Close() error { return e.f.Close() }

// Size implements Export.
func (e *FileExport) Size() int64 { return e.size }

// ReadOnly implements Export.
func (e *FileExport) ReadOnly() bool { return e.readOnly }

// ReadAt implements Export.
func (e *FileExport) ReadAt(_ context.Context, p []byte, off int64) error {
	if _, err := e.f.ReadAt(p, off); err != nil {
		return fmt.Errorf("%w: read %d bytes at %d: %w", ErrIO, len(p), off, err)
	}
	return nil
}

// WriteAt implements Export.
func (e *FileExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if e.readOnly {
		return ErrPerm
	}
	if _, err := e.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("write %d bytes at %d: %w", len(p), off, err)
	}
	if fua {
		return e.Flush(ctx)
	}
	return nil
}

// Flush implements Export with fdatasync.
func (e *FileExport) Flush(context.Context) error {
	if err := fdatasync(e.f); err != nil {
		return fmt.Errorf("%w: fdatasync: %w", ErrIO, err)
	}
	return nil
}

// Trim implements Export.
func (e *FileExport) Trim(ctx context.Context, off, length int64) error {
	return e.WriteZeroes(ctx, off, length, false, true)
}

// WriteZeroes implements Export.
func (e *FileExport) WriteZeroes(ctx context.Context, off, length int64, fua, mayTrim bool) error {
	if e.readOnly {
		return ErrPerm
	}
	err := errUnsupported
	if mayTrim {
		err = punchHole(e.f, off, length)
	}
	if errors.Is(err, errUnsupported) {
		err = zeroRange(e.f, off, length)
	}
	if errors.Is(err, errUnsupported) {
		err = e.writeZeroes(off, length)
	}
	if err != nil {
		return fmt.Errorf("zero %d bytes at %d: %w", length, off, err)
	}
	if fua {
		return e.Flush(ctx)
	}
	return nil
}

func (e *FileExport) writeZeroes(off, length int64) error {
	zero := make([]byte, min(length, 1<<20))
	for length > 0 {
		n := min(length, int64(len(zero)))
		if _, err := e.f.WriteAt(zero[:n], off); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// errUnsupported: the filesystem cannot do this in place; fall back.
var errUnsupported = errors.New("not supported by the filesystem")
