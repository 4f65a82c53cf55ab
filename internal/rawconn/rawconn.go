// Package rawconn wraps a socket so that its reads and writes are raw non-blocking system calls
// that wait in Go's network poller only when the socket is not ready.
//
// Why: net.Conn's Read and Write go through the scheduler's syscall entry and exit. When a
// process has nothing else to run (a data path at queue depth 1 between requests), the runtime's
// monitor thread (sysmon) is asleep, and every syscall entry wakes it: one futex wake per read
// or write, plus the monitor's own sleeps and wake-ups on the other core. A read or write of a
// non-blocking socket never blocks, so it does not need that bookkeeping; skipping it removes
// those wake-ups from every IO. File IO (which can block on the disk) keeps using the ordinary
// system calls.
package rawconn

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a net.Conn whose Read and Write use raw system calls. Everything else (Close,
// deadlines, addresses) is the wrapped connection's.
type Conn struct {
	net.Conn
	rc syscall.RawConn

	rmu    sync.Mutex // one Read at a time
	rbuf   []byte
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	wmu     sync.Mutex // one Write at a time
	wbuf    []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// Wrap returns nc with raw reads and writes when nc is a socket that exposes its file
// descriptor (TCP, Unix), and nc itself otherwise (net.Pipe in tests, TLS).
func Wrap(nc net.Conn) net.Conn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nc
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nc
	}
	c := &Conn{Conn: nc, rc: rc}
	c.readFn = c.readOnce
	c.writeFn = c.writeSome
	return c
}

// Read reads up to len(p) bytes, waiting for the socket to become readable if it is not.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.readFn)
	n, rerr := c.rn, c.rerr
	c.rbuf, c.rerr = nil, nil
	if err != nil { // closed or deadline: already a *net.OpError
		return 0, err
	}
	if rerr != nil && rerr != io.EOF {
		rerr = c.opError("read", rerr)
	}
	return n, rerr
}

// readOnce is called by the poller with the descriptor; false means "not ready, wait".
func (c *Conn) readOnce(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false
		case e != 0:
			c.rerr = os.NewSyscallError("read", e)
		case n == 0:
			c.rerr = io.EOF
		default:
			c.rn = int(n)
		}
		return true
	}
}

// Write writes all of p, waiting for the socket to become writable as often as needed.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.writeFn)
	n, werr := c.wn, c.werr
	c.wbuf, c.werr = nil, nil
	if err != nil { // closed or deadline: already a *net.OpError
		return n, err
	}
	if werr != nil {
		return n, c.opError("write", werr)
	}
	return n, nil
}

// writeSome writes until p is done or the socket is full; false means "full, wait".
func (c *Conn) writeSome(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		rest := c.wbuf[c.wn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false
		case e != 0:
			c.werr = os.NewSyscallError("write", e)
			return true
		}
		c.wn += int(n)
	}
	return true
}

// opError wraps a system call error as net.Conn's methods do, so callers' errors.Is checks
// (syscall.ECONNRESET, EPIPE) keep working. Errors from the poller (net.ErrClosed,
// os.ErrDeadlineExceeded) come wrapped already.
func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
