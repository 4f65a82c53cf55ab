package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/internal/rawconn"
)

var (
	errProtocol = errors.New("protocol violation")
	errNoExport = errors.New("no such export")
)

// An oversized WRITE (length > MaxPayload) gets EINVAL after its payload is
// read and discarded through a small scratch buffer, which keeps the stream
// in step at no memory cost. Past maxWriteDiscard the client is treated as
// broken and the connection is dropped.
const maxWriteDiscard = 256 << 20

// conn is one client connection: handshake, then transmission.
type conn struct {
	srv      *Server
	nc       net.Conn
	br       *bufio.Reader
	log      hclog.Logger
	noZeroes bool

	mu       sync.Mutex
	name     string // resolved export name, set when entering transmission
	stopping bool   // stop reading requests (Close or ExportRemoved)
	stopWhy  string

	// Set once by attach before transmission starts; read-only after.
	export   Export
	size     uint64
	readOnly bool

	wmu      sync.Mutex    // serialises replies
	bw       *bufio.Writer // replies, flushed in batches (see reply)
	wpending bool          // a reply's writer will flush bw
	werr     error         // first reply write error; later replies are dropped

	work chan job // requests for idle workers (unbuffered)

	lim      limiter
	inflight sync.WaitGroup

	// ctx is what the connection's requests run under: the server's, also cancelled when the
	// client goes away without NBD_CMD_DISC (see serve).
	ctx    context.Context
	cancel context.CancelFunc
}

// job is a validated request with its payload (WRITE) and the limiter credit it holds.
type job struct {
	req  request
	buf  []byte
	held int64
}

type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	off    uint64
	length uint32
}

func newConn(s *Server, nc net.Conn) *conn {
	nc = rawconn.Wrap(nc)
	c := &conn{
		srv:  s,
		nc:   nc,
		br:   bufio.NewReaderSize(nc, 64<<10),
		bw:   bufio.NewWriterSize(nc, 64<<10),
		work: make(chan job),
		log:  s.log.With("remote", nc.RemoteAddr().String()),
	}
	c.ctx, c.cancel = context.WithCancel(s.ctx)
	c.lim.init(s.cfg.MaxInflight, s.cfg.MaxInflightBytes)
	return c
}

// serve runs the connection to its end and closes it.
func (c *conn) serve() {
	defer c.nc.Close()
	defer c.cancel()
	c.log.Debug("connection opened")
	_ = c.nc.SetDeadline(time.Now().Add(c.srv.cfg.HandshakeTimeout))
	if err := c.handshake(); err != nil {
		switch {
		case errors.Is(err, errHandshakeEnd):
			c.log.Debug("client aborted the handshake")
		case errors.Is(err, errProtocol):
			c.srv.stats.protocolErrors.Add(1)
			c.log.Warn("handshake refused", "reason", err)
		case errors.Is(err, errNoExport):
			c.log.Warn("handshake refused", "reason", err)
		default:
			c.log.Debug("handshake ended", "reason", err)
		}
		return
	}
	_ = c.nc.SetDeadline(time.Time{})
	if stopped, why := c.stopped(); stopped {
		c.log.Debug("connection stopped before transmission", "reason", why)
		return
	}
	c.log.Debug("transmission started", "export", c.exportName(), "size", c.size, "read_only", c.readOnly)
	reason, gone := c.readRequests()
	if gone {
		// The client went away without NBD_CMD_DISC (closed, reset, broke the protocol): no one
		// reads the replies, and a write it gave up on must not go on being retried for the
		// rest of the export's IO timeout, to land long after the client moved on. Requests
		// already with the backend may still complete; none is retried. After DISC (and
		// when the export or the server stops) the requests in flight finish normally.
		c.cancel()
	}
	c.inflight.Wait()
	close(c.work)
	c.log.Debug("connection closed", "reason", reason)
}

// attach binds the connection to its export; called before the final
// handshake reply, so a client that has that reply sees it counted.
func (c *conn) attach(e Export, name string) {
	c.srv.stats.handshakes.Add(1)
	c.export = e
	c.size = uint64(max(e.Size(), 0))
	c.readOnly = e.ReadOnly()
	c.setExportName(name)
}

func (c *conn) setExportName(name string) {
	c.mu.Lock()
	c.name = name
	c.mu.Unlock()
}

func (c *conn) exportName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.name
}

// stop makes the connection stop reading requests: the pending read fails
// at once, in-flight requests finish, then the connection closes.
func (c *conn) stop(why string) {
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return
	}
	c.stopping, c.stopWhy = true, why
	c.mu.Unlock()
	_ = c.nc.SetReadDeadline(time.Now())
}

func (c *conn) stopped() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping, c.stopWhy
}

// readRequests reads requests until the connection ends and returns why, and whether the
// client went away (anything but DISC or a stop of the export or server). Requests are read
// strictly in order (a WRITE's payload before the next header) and executed concurrently.
func (c *conn) readRequests() (why string, gone bool) {
	var hdr [requestHeaderSize]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return c.readEnded(err)
		}
		if m := binary.BigEndian.Uint32(hdr[0:]); m != magicRequest {
			c.srv.stats.protocolErrors.Add(1)
			c.log.Warn("bad request magic; dropping connection", "magic", fmt.Sprintf("%#x", m))
			c.nc.Close()
			return "bad request magic", true
		}
		req := request{
			flags:  binary.BigEndian.Uint16(hdr[4:]),
			typ:    binary.BigEndian.Uint16(hdr[6:]),
			handle: binary.BigEndian.Uint64(hdr[8:]),
			off:    binary.BigEndian.Uint64(hdr[16:]),
			length: binary.BigEndian.Uint32(hdr[24:]),
		}
		if req.typ == cmdDisc {
			return "client sent DISC", false
		}
		if err := c.dispatch(req); err != nil {
			if errors.Is(err, errProtocol) {
				c.srv.stats.protocolErrors.Add(1)
				c.log.Warn("dropping connection", "reason", err)
				c.nc.Close()
				return err.Error(), true
			}
			return c.readEnded(err)
		}
	}
}

func (c *conn) readEnded(err error) (why string, gone bool) {
	if stopped, why := c.stopped(); stopped {
		return why, false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "client closed the connection", true
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
		return "connection closed", true
	}
	return "read error: " + err.Error(), true
}

// dispatch validates req, reads a WRITE's payload, and starts execution.
func (c *conn) dispatch(req request) error {
	errno := c.check(req)
	if req.typ == cmdWrite && errno != 0 {
		if req.length > maxWriteDiscard {
			return fmt.Errorf("%w: WRITE of %d bytes", errProtocol, req.length)
		}
		if _, err := io.CopyN(io.Discard, c.br, int64(req.length)); err != nil {
			return err
		}
	}
	if errno != 0 {
		c.srv.stats.count(req.typ, req.length, errno)
		c.log.Debug("request refused", "command", cmdName(req.typ), "offset", req.off,
			"length", req.length, "flags", req.flags, "errno", errno)
		c.reply(req.handle, errno, nil)
		return nil
	}
	var held int64
	var buf []byte
	switch req.typ {
	case cmdWrite:
		held = c.lim.acquire(int64(req.length))
		buf = c.writeBuffer(int(req.length))
		if _, err := io.ReadFull(c.br, buf); err != nil {
			c.releaseBuffer(buf)
			c.lim.release(held)
			return err
		}
	case cmdRead:
		held = c.lim.acquire(int64(req.length))
	default:
		held = c.lim.acquire(0)
	}
	c.inflight.Add(1)
	select {
	case c.work <- job{req, buf, held}: // an idle worker takes it
	default:
		go c.worker(job{req, buf, held})
	}
	return nil
}

// worker executes j, then further requests handed to it while it is idle, until the
// connection ends. Reusing workers (at most one per request in flight) spares a goroutine start
// and its stack growth per request.
func (c *conn) worker(j job) {
	for ok := true; ok; j, ok = <-c.work {
		c.execute(j.req, j.buf, j.held)
	}
}

// writeBuffer returns a buffer for an n-byte WRITE payload: the export's own when it keeps
// them (WriteBuffers), else one of the server's pool.
func (c *conn) writeBuffer(n int) []byte {
	if wb, ok := c.export.(WriteBuffers); ok {
		if b := wb.WriteBuffer(n); b != nil {
			return b
		}
	}
	return c.srv.bufs.get(n)
}

// releaseBuffer returns b to whoever gave it out.
func (c *conn) releaseBuffer(b []byte) {
	if wb, ok := c.export.(WriteBuffers); ok && wb.ReleaseWriteBuffer(b) {
		return
	}
	c.srv.bufs.put(b)
}

// check returns the error value for a request that must not reach the
// export, or 0.
func (c *conn) check(req request) uint32 {
	end, overflow := req.off+uint64(req.length), req.off+uint64(req.length) < req.off
	inRange := !overflow && end <= c.size
	switch req.typ {
	case cmdRead:
		switch {
		case req.flags&^cmdFlagFUA != 0, req.length > uint32(c.srv.cfg.MaxPayload), !inRange:
			return errnoInval
		}
	case cmdWrite, cmdWriteZeroes:
		allowed := cmdFlagFUA
		if req.typ == cmdWriteZeroes {
			allowed |= cmdFlagNoHole
		}
		switch {
		case req.flags&^allowed != 0:
			return errnoInval
		case c.readOnly:
			return errnoPerm
		case req.typ == cmdWrite && req.length > uint32(c.srv.cfg.MaxPayload):
			return errnoInval
		case !inRange:
			// The spec asks for ENOSPC on writes past the end (as qemu does).
			return errnoNoSpc
		}
	case cmdFlush:
		if req.flags&^cmdFlagFUA != 0 {
			return errnoInval
		}
	case cmdTrim:
		switch {
		case req.flags&^cmdFlagFUA != 0:
			return errnoInval
		case c.readOnly:
			return errnoPerm
		case !inRange:
			return errnoInval
		}
	default: // CACHE, BLOCK_STATUS and unknown commands
		return errnoInval
	}
	return 0
}

// execute runs one validated request against the export and replies.
func (c *conn) execute(req request, buf []byte, held int64) {
	defer c.inflight.Done()
	ctx := c.ctx
	e := c.export
	off, n := int64(req.off), int64(req.length)
	fua := req.flags&cmdFlagFUA != 0
	var err error
	var data, own []byte // own: the export's read buffer (ReadBuffers)
	switch req.typ {
	case cmdRead:
		if n == 0 {
			break
		}
		if rb, ok := e.(ReadBuffers); ok {
			own, err = rb.ReadBuffered(ctx, int(n), off)
			data = own
		}
		if own == nil && err == nil {
			buf = c.srv.bufs.get(int(n))
			if err = e.ReadAt(ctx, buf, off); err == nil {
				data = buf
			}
		}
	case cmdWrite:
		if n > 0 {
			err = e.WriteAt(ctx, buf, off, fua)
		} else if fua {
			err = e.Flush(ctx)
		}
	case cmdFlush:
		err = e.Flush(ctx)
	case cmdTrim:
		if n > 0 {
			if err = e.Trim(ctx, off, n); err == nil && fua {
				err = e.Flush(ctx)
			}
		}
	case cmdWriteZeroes:
		if n > 0 {
			err = e.WriteZeroes(ctx, off, n, fua, req.flags&cmdFlagNoHole == 0)
		}
	}
	errno := errnoOf(err)
	if err != nil {
		c.log.Debug("export error", "command", cmdName(req.typ), "offset", req.off,
			"length", req.length, "errno", errno, "error", err)
	}
	c.srv.stats.count(req.typ, req.length, errno) // before the reply: a client that has it sees it counted
	c.reply(req.handle, errno, data)
	if own != nil {
		e.(ReadBuffers).ReleaseReadBuffer(own)
	}
	c.releaseBuffer(buf)
	c.lim.release(held)
}

// reply sends a simple reply; data follows only for a successful READ.
// Replies go out in completion order under wmu, into a buffered writer. The
// first reply to find no flush pending flushes, after yielding the processor
// once (runtime.Gosched) so that the requests completed in the same burst —
// their goroutines are already runnable — add their replies to the same
// syscall; the others only buffer theirs. data is copied (or written) before
// reply returns. A failed write drops the connection, which also ends the
// request reader.
func (c *conn) reply(handle uint64, errno uint32, data []byte) {
	var hdr [replyHeaderSize]byte
	binary.BigEndian.PutUint32(hdr[0:], magicSimpleReply)
	binary.BigEndian.PutUint32(hdr[4:], errno)
	binary.BigEndian.PutUint64(hdr[8:], handle)
	c.wmu.Lock()
	if c.werr != nil {
		c.wmu.Unlock()
		return
	}
	_, err := c.bw.Write(hdr[:])
	if err == nil && len(data) > 0 {
		_, err = c.bw.Write(data)
	}
	if err != nil || c.wpending {
		c.replyFailed(err)
		c.wmu.Unlock()
		return
	}
	c.wpending = true
	c.wmu.Unlock()

	runtime.Gosched()

	c.wmu.Lock()
	c.wpending = false
	if c.werr == nil {
		c.replyFailed(c.bw.Flush())
	}
	c.wmu.Unlock()
}

// replyFailed records a reply write error (nil: none) and drops the connection. Under wmu.
func (c *conn) replyFailed(err error) {
	if err == nil || c.werr != nil {
		return
	}
	c.werr = err
	c.log.Debug("reply failed; dropping connection", "error", err)
	c.nc.Close()
}
