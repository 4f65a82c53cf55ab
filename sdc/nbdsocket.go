package sdc

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// maxSocketPath is the longest Unix socket path the kernel takes (sun_path is 108 bytes, with
// the terminating NUL).
const maxSocketPath = 107

// listenNBDSocket binds the NBD Unix socket at path (sdc/DESIGN.md "NBD over a Unix socket").
// A socket file left behind by an SDC that is gone (nothing answers on it) is replaced; one
// that answers belongs to a running process, and anything else at path is left alone.
func listenNBDSocket(path string) (net.Listener, error) {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode()&fs.ModeSocket == 0:
		return nil, fmt.Errorf("nbd_socket %s: exists and is not a socket; not replacing it", path)
	case err == nil:
		if c, derr := net.DialTimeout("unix", path, time.Second); derr == nil {
			c.Close()
			return nil, fmt.Errorf("nbd_socket %s: in use by another process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("nbd_socket %s: removing the stale socket: %w", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("nbd_socket %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("nbd_socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("nbd_socket %s: %w", path, err)
	}
	// Whoever can connect can read and write every export, as on nbd_addr: owner and group only.
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("nbd_socket %s: %w", path, err)
	}
	return ln, nil
}
