// Package rawconn wraps a socket so that its reads and writes are raw non-blocking system calls
// that wait in Go's network poller only when the socket is not ready.
//
// Why: net.Conn's Read and Write go through the scheduler's syscall entry and exit. When a
// process has nothing else to run (a data path at queue depth 1 between requests), the runtime's
// monitor thread (sysmon) is asleep, and every syscall entry wakes it: one futex wake per read
// or write, plus the monitor's own sleeps and wake-ups on the other core. A read or write of a
// non-blocking socket never blocks, so it does not need that bookkeeping; skipping it removes
// those wake-ups from every IO. File IO can block on the disk, so it is not done here (the SDS's
// chunk store makes its own raw file calls only where they cannot block for long,
// sds/chunkstore/nowait.go and rawwrite.go).
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
	r, w direction
}

// NetConn is the wrapped connection, for what Conn does not pass on (SetLinger).
func (c *Conn) NetConn() net.Conn { return c.Conn }

// direction is one half of the connection: one Read (or one Write) at a time.
type direction struct {
	mu   sync.Mutex
	op   string                            // "read" or "write", for errors
	wait func(func(fd uintptr) bool) error // the RawConn's Read or Write
	once func(fd uintptr) bool             // readOnce or writeSome, bound once (no allocation per call)
	buf  []byte
	n    int
	err  error // from the system call
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
	c := &Conn{Conn: nc}
	c.r = direction{op: "read", wait: rc.Read}
	c.w = direction{op: "write", wait: rc.Write}
	c.r.once, c.w.once = c.r.readOnce, c.w.writeSome
	return c
}

// Read reads up to len(p) bytes, waiting for the socket to become readable if it is not.
func (c *Conn) Read(p []byte) (int, error) { return c.transfer(&c.r, p) }

// Write writes all of p, waiting for the socket to become writable as often as needed.
func (c *Conn) Write(p []byte) (int, error) { return c.transfer(&c.w, p) }

func (c *Conn) transfer(d *direction, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buf, d.n, d.err = p, 0, nil
	err := d.wait(d.once)
	n, serr := d.n, d.err
	d.buf, d.err = nil, nil
	switch {
	case err != nil: // closed or deadline: already a *net.OpError
		return n, err
	case serr != nil && serr != io.EOF:
		// Wrapped as net.Conn's methods do, so errors.Is(err, syscall.ECONNRESET) still works.
		return n, &net.OpError{Op: d.op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: serr}
	}
	return n, serr
}

// readOnce is called by the poller with the descriptor; false means "not ready, wait".
func (d *direction) readOnce(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&d.buf[0])), uintptr(len(d.buf)))
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false
		case e != 0:
			d.err = os.NewSyscallError("read", e)
		case n == 0:
			d.err = io.EOF
		default:
			d.n = int(n)
		}
		return true
	}
}

// writeSome writes until the buffer is done or the socket is full; false means "full, wait".
func (d *direction) writeSome(fd uintptr) bool {
	for d.n < len(d.buf) {
		rest := d.buf[d.n:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false
		case e != 0:
			d.err = os.NewSyscallError("write", e)
			return true
		}
		d.n += int(n)
	}
	return true
}
