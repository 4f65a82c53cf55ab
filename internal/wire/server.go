package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Handler serves the requests of connections. S is the per-connection state (for the SDS: the
// connection's verified tokens).
type Handler[S any] interface {
	// Open is called once when Serve starts on conn, before any request.
	Open(conn net.Conn) S
	// Handle serves one request and returns its reply. It is called concurrently (up to
	// ServerOptions.MaxInflight at once per connection) and replies may complete in any order.
	// req and req.Data are valid only until Handle returns. ctx ends when the connection closes.
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
	req Request
	hdr [ReplyHeaderSize]byte
}

var serverRequests = sync.Pool{New: func() any { return new(serverRequest) }}

func (sr *serverRequest) release() {
	if sr.req.payload != nil {
		buffers.put(sr.req.payload)
	}
	if sr.req.reply != nil {
		buffers.put(sr.req.reply)
	}
	sr.req = Request{}
	serverRequests.Put(sr)
}

// Serve runs the server protocol on conn until it closes or the peer breaks the protocol, then
// closes conn, waits for the handlers in flight and calls h.Close. Requests are read in order and
// dispatched concurrently; replies are written as they complete, batched into few syscalls.
//
// A request is passed to the handler only once its header is valid and its payload complete: a
// bad magic, version or opcode, an oversized length, or a truncated frame closes the connection
// (logged at Warn) and the partial request is dropped. Serve returns nil when the peer closed
// the connection cleanly, an error wrapping ErrProtocol for a protocol violation, or the read or
// write error that ended the connection.
func Serve[S any](conn net.Conn, h Handler[S], opts ServerOptions) error {
	opts, err := opts.withDefaults()
	if err != nil {
		conn.Close()
		return err
	}
	s := &server[S]{
		conn:  conn,
		h:     h,
		opts:  opts,
		w:     batchWriter{bw: bufio.NewWriterSize(conn, ioBufferSize)},
		slots: make(chan struct{}, opts.MaxInflight),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.state = h.Open(conn)
	err = s.readLoop()
	s.cancel()
	conn.Close()
	s.inflight.Wait()
	h.Close(s.state)

	remote := conn.RemoteAddr().String()
	if werr := s.writeErr(); err == nil && werr != nil {
		err = werr
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
	w        batchWriter
	slots    chan struct{} // one per request in flight
	inflight sync.WaitGroup
}

func (s *server[S]) readLoop() error {
	br := bufio.NewReaderSize(s.conn, ioBufferSize)
	var hdr [RequestHeaderSize]byte
	for {
		select {
		case s.slots <- struct{}{}:
		case <-s.ctx.Done():
			return nil // a reply write failed; writeErr reports it
		}
		sr := serverRequests.Get().(*serverRequest)
		if err := readRequest(br, &hdr, &sr.req, s.opts.MaxPayload); err != nil {
			sr.release()
			<-s.slots
			if err == io.EOF {
				return nil // clean close between requests
			}
			if errors.Is(err, net.ErrClosed) {
				return nil // closed here (a reply write failed) or by Serve's caller
			}
			return err
		}
		s.inflight.Add(1)
		go s.serve(sr)
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
	err := s.w.write(sr.hdr[:], resp.Data)
	sr.release()
	<-s.slots
	if err != nil {
		s.cancel()
		s.conn.Close() // unblocks the reader
	}
}

func (s *server[S]) writeErr() error {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if s.w.err != nil {
		return fmt.Errorf("write: %w", s.w.err)
	}
	return nil
}
