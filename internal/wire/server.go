package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"

	"pflex/internal/rawconn"
)

// Handler serves the requests of connections. S is the per-connection state (for the SDS: the
// connection's verified tokens).
type Handler[S any] interface {
	// Open is called once when Serve starts on conn, before any request.
	Open(conn net.Conn) S
	// Handle serves one request and returns its reply. It is called concurrently (up to
	// ServerOptions.MaxInflight at once per connection) and replies may complete in any order.
	// req and req.Data are valid only until Handle returns. ctx ends when the connection fails
	// (not when the peer merely closes its side: replies in flight are still delivered).
	Handle(ctx context.Context, s S, req *Request) Response
	// Close is called once after the connection has closed and every Handle has returned.
	Close(s S)
}

// HandlerFunc adapts a function to a Handler without per-connection state.
type HandlerFunc func(ctx context.Context, req *Request) Response

// Open implements Handler.
func (HandlerFunc) Open(net.Conn) struct{} { return struct{}{} }

// Handle implements Handler.
func (f HandlerFunc) Handle(ctx context.Context, _ struct{}, req *Request) Response {
	return f(ctx, req)
}

// Close implements Handler.
func (HandlerFunc) Close(struct{}) {}

// serverRequest is a pooled request plus the scratch its reply is encoded in.
type serverRequest struct {
	req  Request
	hdr  [ReplyHeaderSize]byte
	resp []byte // reply payload, until written
}

var serverRequests = sync.Pool{New: func() any { return new(serverRequest) }}

func (sr *serverRequest) release() {
	if sr.req.payload != nil {
		buffers.put(sr.req.payload)
	}
	if sr.req.reply != nil {
		buffers.put(sr.req.reply)
	}
	sr.req, sr.resp = Request{}, nil
	serverRequests.Put(sr)
}

// Serve runs the server protocol on conn until the peer closes it, the peer breaks the protocol
// or conn is closed by the caller; then it waits for the handlers in flight, closes conn and calls
// h.Close. Requests are read in order and dispatched concurrently; replies are written as they
// complete, batched into few syscalls. When the peer closes cleanly between requests, the
// replies in flight are still written; on any error they are dropped.
//
// A request is passed to the handler only once its header is valid and its payload complete: a
// bad magic, version or opcode, an oversized length, or a truncated frame closes the connection
// (logged at Warn) and the partial request is dropped. Serve returns nil when the peer or the
// caller closed the connection, an error wrapping ErrProtocol for a protocol violation, or the
// read or write error that ended the connection.
func Serve[S any](conn net.Conn, h Handler[S], opts ServerOptions) error {
	opts, err := opts.withDefaults()
	if err != nil {
		conn.Close()
		return err
	}
	conn = rawconn.Wrap(conn)
	s := &server[S]{
		conn:    conn,
		h:       h,
		opts:    opts,
		bw:      bufio.NewWriterSize(conn, ioBufferSize),
		slots:   make(chan struct{}, opts.MaxInflight),
		replies: make(chan *serverRequest, opts.MaxInflight),
		work:    make(chan *serverRequest),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.state = h.Open(conn)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.writeLoop()
	}()
	err = s.readLoop()
	if err != io.EOF {
		// Protocol violation or failed connection: stop now; replies in flight are dropped.
		s.cancel()
		conn.Close()
	} else {
		err = nil // the peer closed between requests: still deliver the replies in flight
	}
	s.inflight.Wait()
	close(s.work)
	close(s.replies)
	<-writerDone
	s.cancel()
	conn.Close()
	h.Close(s.state)

	remote := conn.RemoteAddr().String()
	if err == nil && s.writeErr != nil {
		err = fmt.Errorf("write: %w", s.writeErr)
	}
	switch {
	case err == nil:
		opts.Logger.Debug("wire: connection closed by peer", "remote", remote)
	case errors.Is(err, ErrProtocol):
		opts.Logger.Warn("wire: closing connection: protocol violation", "remote", remote, "error", err)
	default:
		opts.Logger.Warn("wire: connection failed", "remote", remote, "error", err)
	}
	return err
}

type server[S any] struct {
	conn     net.Conn
	h        Handler[S]
	opts     ServerOptions
	state    S
	ctx      context.Context
	cancel   context.CancelFunc
	bw       *bufio.Writer       // owned by writeLoop
	writeErr error               // set by writeLoop; read after it exits
	slots    chan struct{}       // one per request in flight
	replies  chan *serverRequest // handled requests, for writeLoop
	work     chan *serverRequest // requests for idle workers (unbuffered)
	inflight sync.WaitGroup
}

func (s *server[S]) readLoop() error {
	br := bufio.NewReaderSize(s.conn, ioBufferSize)
	var hdr [RequestHeaderSize]byte
	for {
		select {
		case s.slots <- struct{}{}:
		case <-s.ctx.Done():
			return nil // a reply write failed; s.writeErr reports it
		}
		sr := serverRequests.Get().(*serverRequest)
		if err := readRequest(br, &hdr, &sr.req, s.opts.MaxPayload); err != nil {
			sr.release()
			<-s.slots
			if errors.Is(err, net.ErrClosed) {
				return nil // closed here (a reply write failed) or by Serve's caller
			}
			return err // io.EOF: clean close between requests
		}
		s.inflight.Add(1)
		select {
		case s.work <- sr: // an idle worker takes it
		default:
			go s.worker(sr)
		}
	}
}

// worker serves sr, then further requests handed to it while it is idle, until Serve ends.
// Workers are reused rather than started per request: a fresh goroutine's stack grows (copied)
// on every request through the SDS's data path, a reused one keeps its grown stack. There are
// never more workers than MaxInflight (one per slot at most).
func (s *server[S]) worker(sr *serverRequest) {
	for {
		s.serve(sr)
		var ok bool
		if sr, ok = <-s.work; !ok {
			return
		}
	}
}

func (s *server[S]) serve(sr *serverRequest) {
	defer s.inflight.Done()
	resp := s.h.Handle(s.ctx, s.state, &sr.req)
	if uint64(len(resp.Data)) > uint64(s.opts.MaxPayload) {
		s.opts.Logger.Warn("wire: handler reply exceeds max payload; sending protocol error",
			"op", sr.req.Op.String(), "id", sr.req.ID, "bytes", len(resp.Data))
		resp = Response{Status: StatusProto, Epoch: resp.Epoch}
	}
	putReplyHeader(&sr.hdr, sr.req.Op, sr.req.ID, &resp)
	sr.resp = resp.Data
	s.replies <- sr
}

// writeLoop writes replies as handlers produce them and flushes when none is queued, so replies
// completed together leave in one syscall. After a write error it keeps draining (and releasing)
// until Serve closes the channel.
func (s *server[S]) writeLoop() {
	bw := s.bw
	var err error
	for sr := range s.replies {
		if err == nil {
			_, err = bw.Write(sr.hdr[:])
			if err == nil && len(sr.resp) > 0 {
				_, err = bw.Write(sr.resp)
			}
			if err == nil && len(s.replies) == 0 {
				// Yield once before flushing: handlers already runnable (requests that
				// arrived in the same read) add their replies to this syscall.
				runtime.Gosched()
				if len(s.replies) == 0 {
					err = bw.Flush()
				}
			}
			if err != nil {
				s.writeErr = err
				s.cancel()
				s.conn.Close() // unblocks the reader
			}
		}
		sr.release()
		<-s.slots
	}
}
