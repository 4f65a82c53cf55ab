package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"pflex/internal/rawconn"
)

const ioBufferSize = 64 << 10

// Conn is the client side of one connection. Do is safe for concurrent use: requests are
// pipelined and replies are matched to callers by request id, in whatever order they come.
type Conn struct {
	nc   net.Conn
	opts ClientOptions
	w    batchWriter

	nextID atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]*call
	err     error         // why the connection failed; set once
	done    chan struct{} // closed when err is set
}

// call is one request waiting for its reply. Pooled; owned by Do except between the reader
// taking it out of pending and signalling done.
type call struct {
	hdr      [RequestHeaderSize]byte
	readInto []byte
	resp     Response
	err      error
	done     chan struct{} // buffered 1
}

var calls = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// Dial connects to addr over TCP and returns a Conn.
func Dial(ctx context.Context, addr string, opts ClientOptions) (*Conn, error) {
	if _, err := opts.withDefaults(); err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("wire: dial %s: %w", addr, err)
	}
	c, err := NewConn(nc, opts)
	if err != nil {
		nc.Close()
	}
	return c, err
}

// NewConn runs the client protocol over an established connection, which the Conn then owns.
func NewConn(nc net.Conn, opts ClientOptions) (*Conn, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	nc = rawconn.Wrap(nc)
	c := &Conn{
		nc:      nc,
		opts:    opts,
		w:       batchWriter{bw: bufio.NewWriterSize(nc, ioBufferSize)},
		pending: make(map[uint64]*call),
		done:    make(chan struct{}),
	}
	go c.readLoop()
	return c, nil
}

// Do sends req and waits for its reply.
//
// The error is nil for StatusOK; a Status for any other status (the Response, including the
// server's Epoch, is returned too); ErrTooLarge or ErrBadOp for a request that cannot be sent;
// an error wrapping ErrClosed when the connection failed before the reply (the request may or
// may not have been executed); or ctx.Err() when ctx ended first, in which case the reply, if it
// comes, is dropped. If the reply is already being received when ctx ends, Do returns it.
func (c *Conn) Do(ctx context.Context, req Request) (Response, error) {
	if !req.Op.Valid() {
		return Response{}, fmt.Errorf("%w %d", ErrBadOp, req.Op)
	}
	switch {
	case req.Op.HasPayload():
		if len(req.Data) > c.opts.MaxPayload {
			return Response{}, fmt.Errorf("%v of %d bytes: %w", req.Op, len(req.Data), ErrTooLarge)
		}
		req.Length = uint32(len(req.Data))
	case req.Op.readsData():
		if req.Length == 0 && req.Op == OpRead {
			if len(req.ReadInto) > c.opts.MaxPayload {
				return Response{}, fmt.Errorf("%v of %d bytes: %w", req.Op, len(req.ReadInto), ErrTooLarge)
			}
			req.Length = uint32(len(req.ReadInto))
		}
		if uint64(req.Length) > uint64(c.opts.MaxPayload) {
			return Response{}, fmt.Errorf("%v of %d bytes: %w", req.Op, req.Length, ErrTooLarge)
		}
		req.Data = nil
	default:
		req.Data = nil
	}
	if err := ctx.Err(); err != nil {
		return Response{}, err
	}

	cl := calls.Get().(*call)
	if c.opts.IDs != nil {
		req.ID = c.opts.IDs.Add(1)
	} else {
		req.ID = c.nextID.Add(1)
	}
	putRequestHeader(&cl.hdr, &req)
	cl.readInto = req.ReadInto

	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		c.release(cl)
		return Response{}, err
	}
	c.pending[req.ID] = cl
	c.mu.Unlock()

	if err := c.w.write(cl.hdr[:], req.Data); err != nil {
		// Fails every pending call, this one included; the wait below collects it.
		c.fail(fmt.Errorf("write: %w", err))
	}

	select {
	case <-cl.done:
	case <-ctx.Done():
		c.mu.Lock()
		_, waiting := c.pending[req.ID]
		delete(c.pending, req.ID)
		c.mu.Unlock()
		if waiting {
			c.release(cl)
			return Response{}, ctx.Err()
		}
		<-cl.done // the reader holds the call: it finishes soon
	}
	resp, err := cl.resp, cl.err
	c.release(cl)
	if err == nil && resp.Status != StatusOK {
		err = resp.Status
	}
	return resp, err
}

func (c *Conn) release(cl *call) {
	cl.readInto, cl.resp, cl.err = nil, Response{}, nil
	calls.Put(cl)
}

// Close closes the connection; pending calls fail with ErrClosed.
func (c *Conn) Close() error {
	c.fail(nil)
	return nil
}

// Abort closes the connection like Close, and also has the kernel discard what it still holds
// to send (a reset instead of a FIN). After a plain close the kernel goes on retransmitting the
// unsent requests, and if the link comes back they may reach the server long after the caller
// gave up on them and went on without them.
func (c *Conn) Abort() error {
	nc := c.nc
	if u, ok := nc.(interface{ NetConn() net.Conn }); ok {
		nc = u.NetConn()
	}
	if l, ok := nc.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	c.fail(nil)
	return nil
}

// Done is closed when the connection has failed or been closed; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is usable, then an error wrapping ErrClosed.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// RemoteAddr returns the server's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// fail marks the connection failed with cause (nil for a local Close), closes it and fails
// every pending call. Only the first call has an effect.
func (c *Conn) fail(cause error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if cause == nil {
		c.err = ErrClosed
	} else {
		c.err = fmt.Errorf("%w: %s: %w", ErrClosed, c.nc.RemoteAddr(), cause)
		c.opts.Logger.Warn("wire: connection failed", "remote", c.nc.RemoteAddr().String(), "error", cause)
	}
	pending := c.pending
	c.pending = make(map[uint64]*call)
	close(c.done)
	c.mu.Unlock()

	c.nc.Close()
	for _, cl := range pending {
		cl.err = c.err
		cl.done <- struct{}{}
	}
}

func (c *Conn) readLoop() {
	br := bufio.NewReaderSize(c.nc, ioBufferSize)
	var hdr [ReplyHeaderSize]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, net.ErrClosed) {
				err = nil // closed locally: fail is already done or running
			}
			c.fail(err)
			return
		}
		h, err := decodeReplyHeader(&hdr, c.opts.MaxPayload)
		if err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		cl := c.pending[h.id]
		delete(c.pending, h.id)
		c.mu.Unlock()
		if cl == nil { // abandoned by its caller
			if _, err := br.Discard(int(h.length)); err != nil {
				c.fail(fmt.Errorf("reply %d: %w", h.id, err))
				return
			}
			continue
		}
		var data []byte
		if h.length > 0 {
			if int(h.length) <= len(cl.readInto) {
				data = cl.readInto[:h.length]
			} else {
				data = make([]byte, h.length)
			}
			if _, err := io.ReadFull(br, data); err != nil {
				cl.err = fmt.Errorf("%w: reply %d payload: %w", ErrClosed, h.id, err)
				cl.done <- struct{}{}
				c.fail(fmt.Errorf("reply %d payload: %w", h.id, err))
				return
			}
		}
		cl.resp = Response{Status: h.status, Flags: h.flags, Epoch: h.epoch, Data: data}
		cl.done <- struct{}{}
	}
}
