package wire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echoHandler replies to every request with a description of what it received, plus data:
// READ-like ops get Length bytes of a pattern, data-carrying ops get their payload back.
func echoHandler(ctx context.Context, req *Request) Response {
	resp := Response{Status: StatusOK, Flags: req.Flags, Epoch: req.Epoch + 1}
	switch {
	case req.Op.readsData():
		resp.Data = req.ReplyBuffer(int(req.Length))
		for i := range resp.Data {
			resp.Data[i] = byte(req.Offset) + byte(i)
		}
	case req.Op.HasPayload():
		resp.Data = append([]byte(nil), req.Data...)
	default:
		resp.Data = fmt.Appendf(nil, "%v %d %d %d", req.Op, req.VolumeID, req.Offset, req.Length)
	}
	return resp
}

func TestRoundTripEveryOpcode(t *testing.T) {
	var got sync.Map // op -> Request seen by the handler
	ts := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) Response {
		r := *req
		r.Data = append([]byte(nil), req.Data...)
		r.payload, r.reply = nil, nil
		got.Store(req.Op, r)
		return echoHandler(ctx, req)
	}), ServerOptions{})
	c := dial(t, ts.addr, ClientOptions{})
	ctx := testCtx(t)

	for op := OpAuth; op <= opMax; op++ {
		req := Request{Op: op, Flags: FlagFUA, VolumeID: -7, Offset: 1 << 40, Length: 100, Epoch: 12, Tag: 1<<63 | 5}
		if op.HasPayload() {
			req.Data = []byte(strings.Repeat(op.String(), 50))
		}
		resp, err := c.Do(ctx, req)
		if err != nil {
			t.Fatalf("%v: %v", op, err)
		}
		v, _ := got.Load(op)
		seen := v.(Request)
		want := req
		if op.HasPayload() {
			want.Length = uint32(len(req.Data))
		}
		want.ID = seen.ID
		if !reqEqual(seen, want) {
			t.Fatalf("%v: handler saw %+v, want %+v", op, seen, want)
		}
		if resp.Status != StatusOK || resp.Flags != FlagFUA || resp.Epoch != 13 {
			t.Fatalf("%v: response %+v", op, resp)
		}
		switch {
		case op.readsData():
			if len(resp.Data) != 100 || resp.Data[99] != 99 {
				t.Fatalf("%v: read data %v", op, resp.Data)
			}
		case op.HasPayload():
			if !bytes.Equal(resp.Data, req.Data) {
				t.Fatalf("%v: echo %q", op, resp.Data)
			}
		default:
			if w := fmt.Sprintf("%v -7 %d 100", op, int64(1<<40)); string(resp.Data) != w {
				t.Fatalf("%v: reply %q, want %q", op, resp.Data, w)
			}
		}
	}
}

func reqEqual(a, b Request) bool {
	return a.Op == b.Op && a.Flags == b.Flags && a.ID == b.ID && a.VolumeID == b.VolumeID &&
		a.Offset == b.Offset && a.Length == b.Length && a.Epoch == b.Epoch && a.Tag == b.Tag && bytes.Equal(a.Data, b.Data)
}

func TestStatusReply(t *testing.T) {
	ts := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) Response {
		return Response{Status: Status(req.Offset), Epoch: 99, Data: []byte("detail")}
	}), ServerOptions{})
	c := dial(t, ts.addr, ClientOptions{})
	resp, err := c.Do(testCtx(t), Request{Op: OpWrite, Offset: int64(StatusStaleEpoch), Data: []byte("x")})
	if !errors.Is(err, StatusStaleEpoch) || resp.Epoch != 99 || string(resp.Data) != "detail" {
		t.Fatalf("Do = %+v, %v", resp, err)
	}
	if s, ok := StatusOf(err); !ok || s != StatusStaleEpoch || !s.Retryable() {
		t.Fatalf("StatusOf = %v, %v", s, ok)
	}
	if _, ok := StatusOf(ErrClosed); ok {
		t.Fatal("StatusOf(ErrClosed) ok")
	}
	if StatusAuth.Retryable() || StatusRevoked.Retryable() || !StatusRetry.Retryable() {
		t.Fatal("Retryable wrong")
	}
	if StatusNoSpace.Error() != "wire: no space" || Status(200).String() != "status(200)" {
		t.Fatal("status text", StatusNoSpace.Error(), Status(200))
	}
}

// TestOutOfOrder: a slow request does not hold back later ones on the same connection.
func TestOutOfOrder(t *testing.T) {
	release := make(chan struct{})
	ts := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) Response {
		if req.Offset == 0 {
			<-release
		}
		return echoHandler(ctx, req)
	}), ServerOptions{})
	c := dial(t, ts.addr, ClientOptions{})
	ctx := testCtx(t)

	slow := make(chan error, 1)
	go func() {
		_, err := c.Do(ctx, Request{Op: OpRead, Offset: 0, Length: 10})
		slow <- err
	}()
	for i := 1; i <= 20; i++ {
		resp, err := c.Do(ctx, Request{Op: OpRead, Offset: int64(i), Length: 10})
		if err != nil || resp.Data[0] != byte(i) {
			t.Fatalf("fast %d: %v %v", i, resp.Data, err)
		}
	}
	select {
	case err := <-slow:
		t.Fatalf("slow request finished before release: %v", err)
	default:
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
}

// TestManyConcurrent: replies delayed at random come back out of order, each to its caller.
func TestManyConcurrent(t *testing.T) {
	var active, peak atomic.Int32
	ts := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) Response {
		n := active.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		defer active.Add(-1)
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		return echoHandler(ctx, req)
	}), ServerOptions{MaxInflight: 16})
	c := dial(t, ts.addr, ClientOptions{})
	ctx := testCtx(t)

	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			buf := make([]byte, 4096)
			for i := range 20 {
				off := int64(g*1000 + i)
				if i%2 == 0 {
					resp, err := c.Do(ctx, Request{Op: OpRead, Offset: off, ReadInto: buf})
					if err != nil || len(resp.Data) != 4096 || resp.Data[5] != byte(off)+5 || &resp.Data[0] != &buf[0] {
						t.Errorf("read %d: %v", off, err)
						return
					}
					continue
				}
				data := bytes.Repeat([]byte{byte(g)}, 1+rand.IntN(9000))
				resp, err := c.Do(ctx, Request{Op: OpWrite, Offset: off, Data: data})
				if err != nil || !bytes.Equal(resp.Data, data) {
					t.Errorf("write %d: %v", off, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 16 || p < 2 {
		t.Fatalf("peak concurrency %d, want 2..16", p)
	}
}

func TestReadIntoTooSmall(t *testing.T) {
	ts := startServer(t, HandlerFunc(echoHandler), ServerOptions{})
	c := dial(t, ts.addr, ClientOptions{})
	buf := make([]byte, 10)
	resp, err := c.Do(testCtx(t), Request{Op: OpRead, Length: 20, ReadInto: buf})
	if err != nil || len(resp.Data) != 20 || &resp.Data[0] == &buf[0] {
		t.Fatalf("Do = %v, %v", resp.Data, err)
	}
}

func TestClientRefusesOversized(t *testing.T) {
	ts := startServer(t, HandlerFunc(echoHandler), ServerOptions{})
	c := dial(t, ts.addr, ClientOptions{MaxPayload: 100})
	ctx := testCtx(t)
	for _, req := range []Request{
		{Op: OpWrite, Data: make([]byte, 101)},
		{Op: OpRead, Length: 101},
		{Op: OpRead, ReadInto: make([]byte, 101)},
	} {
		if _, err := c.Do(ctx, req); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%v: err = %v, want ErrTooLarge", req.Op, err)
		}
	}
	if _, err := c.Do(ctx, Request{Op: 99}); !errors.Is(err, ErrBadOp) {
		t.Fatalf("bad op: %v", err)
	}
	// The connection is still fine; TRIM lengths are not payloads.
	if _, err := c.Do(ctx, Request{Op: OpTrim, Length: 1 << 30}); err != nil {
		t.Fatal(err)
	}
}

func TestServerDiesPendingCallsFail(t *testing.T) {
	entered := make(chan struct{}, 10)
	ts := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) Response {
		entered <- struct{}{}
		<-ctx.Done()
		return Response{}
	}), ServerOptions{})
	c := dial(t, ts.addr, ClientOptions{})
	ctx := testCtx(t)
	errs := make(chan error, 5)
	for range 5 {
		go func() {
			_, err := c.Do(ctx, Request{Op: OpFlush})
			errs <- err
		}()
	}
	for range 5 {
		<-entered
	}
	ts.kill()
	for range 5 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("pending call: %v, want ErrClosed", err)
		}
	}
	<-c.Done()
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatal(c.Err())
	}
	if _, err := c.Do(ctx, Request{Op: OpPing}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after failure: %v", err)
	}
}

func TestContextCancel(t *testing.T) {
	release := make(chan struct{})
	ts := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) Response {
		if req.Offset == 1 {
			<-release
		}
		return echoHandler(ctx, req)
	}), ServerOptions{})
	c := dial(t, ts.addr, ClientOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	buf := make([]byte, 1000)
	if _, err := c.Do(ctx, Request{Op: OpRead, Offset: 1, ReadInto: buf}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do = %v, want DeadlineExceeded", err)
	}
	close(release) // the abandoned reply arrives and is discarded, not written into buf
	resp, err := c.Do(testCtx(t), Request{Op: OpRead, Offset: 2, Length: 5})
	if err != nil || !bytes.Equal(resp.Data, []byte{2, 3, 4, 5, 6}) {
		t.Fatalf("after cancel: %v %v", resp.Data, err)
	}
	if buf[0] != 0 {
		t.Fatal("abandoned reply written into ReadInto")
	}
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := c.Do(done, Request{Op: OpPing}); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// rawFrame builds a request frame by hand.
func rawFrame(op Opcode, length uint32, payload []byte) []byte {
	var h [RequestHeaderSize]byte
	putRequestHeader(&h, &Request{Op: op, ID: 1, Length: length})
	return append(h[:], payload...)
}

// TestMalformedClosesConnection: the server closes the connection, logs why, and never calls the
// handler with a partial or invalid request.
func TestMalformedClosesConnection(t *testing.T) {
	badMagic := rawFrame(OpPing, 0, nil)
	copy(badMagic, "XFLP")
	badVersion := rawFrame(OpPing, 0, nil)
	badVersion[4] = 9
	badOp := rawFrame(OpPing, 0, nil)
	badOp[5] = 0
	for _, tc := range []struct {
		name  string
		frame []byte
		proto bool // Serve's error wraps ErrProtocol
		log   string
	}{
		{"bad magic", badMagic, true, "magic"},
		{"bad version", badVersion, true, "version 9"},
		{"bad opcode", badOp, true, "opcode 0"},
		{"oversized write", rawFrame(OpWrite, 1025, make([]byte, 1025)), true, "exceeds max payload"},
		{"oversized read", rawFrame(OpRead, 1025, nil), true, "exceeds max payload"},
		{"truncated header", rawFrame(OpPing, 0, nil)[:20], false, "unexpected EOF"},
		{"truncated payload", rawFrame(OpWrite, 100, make([]byte, 50)), false, "payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			ts := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) Response {
				calls.Add(1)
				return Response{}
			}), ServerOptions{MaxPayload: 1024})
			nc, err := net.Dial("tcp", ts.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			// A good request first, to show it is served; then the bad frame.
			if _, err := nc.Write(append(rawFrame(OpPing, 0, nil), tc.frame...)); err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(tc.name, "truncated") {
				nc.(*net.TCPConn).CloseWrite()
			}
			err = ts.serveErr(t)
			if errors.Is(err, ErrProtocol) != tc.proto || err == nil {
				t.Fatalf("Serve = %v, want protocol error %v", err, tc.proto)
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("handler called %d times, want 1 (the good ping)", n)
			}
			// The ping's reply, then EOF: the server closed the connection.
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			rest, err := io.ReadAll(nc)
			if err != nil && !errors.Is(err, syscallReset) {
				t.Fatalf("read after bad frame: %v", err)
			}
			if len(rest) > ReplyHeaderSize {
				t.Fatalf("got %d bytes after the ping reply", len(rest)-ReplyHeaderSize)
			}
			logs := strings.Join(ts.log.all(), "\n")
			if !strings.Contains(logs, "WARN") || !strings.Contains(logs, tc.log) {
				t.Fatalf("log does not give the reason %q:\n%s", tc.log, logs)
			}
		})
	}
}

func TestClientRejectsBadReply(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		var h [RequestHeaderSize]byte
		io.ReadFull(nc, h[:])
		var r [ReplyHeaderSize]byte
		putReplyHeader(&r, OpRead, binary.BigEndian.Uint64(h[8:]), &Response{})
		binary.BigEndian.PutUint32(r[20:], 1<<30) // absurd length
		nc.Write(r[:])
		io.Copy(io.Discard, nc)
	}()
	c := dial(t, ln.Addr().String(), ClientOptions{MaxPayload: 1 << 20})
	if _, err := c.Do(testCtx(t), Request{Op: OpRead, Length: 10}); !errors.Is(err, ErrClosed) || !errors.Is(err, ErrProtocol) {
		t.Fatalf("Do = %v, want ErrClosed wrapping ErrProtocol", err)
	}
}

// TestPerConnectionState: Open and Close bracket a connection; Handle sees that connection's state.
func TestPerConnectionState(t *testing.T) {
	h := &countingHandler{closed: make(chan *connCount, 2)}
	ts := startServer(t, h, ServerOptions{})
	ctx := testCtx(t)
	for range 2 {
		c := dial(t, ts.addr, ClientOptions{})
		for range 3 {
			if _, err := c.Do(ctx, Request{Op: OpPing}); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
		if st := <-h.closed; st.n.Load() != 3 {
			t.Fatalf("connection state saw %d requests, want 3", st.n.Load())
		}
	}
}

type connCount struct{ n atomic.Int32 }

type countingHandler struct{ closed chan *connCount }

func (h *countingHandler) Open(net.Conn) *connCount { return new(connCount) }
func (h *countingHandler) Handle(ctx context.Context, s *connCount, req *Request) Response {
	s.n.Add(1)
	return Response{}
}
func (h *countingHandler) Close(s *connCount) { h.closed <- s }

func TestOptionsValidation(t *testing.T) {
	if _, err := NewConn(nil, ClientOptions{MaxPayload: -1}); err == nil {
		t.Fatal("negative MaxPayload accepted")
	}
	a, b := net.Pipe()
	defer b.Close()
	if err := Serve(a, HandlerFunc(echoHandler), ServerOptions{MaxInflight: -1}); err == nil || !strings.Contains(err.Error(), "MaxInflight") {
		t.Fatalf("negative MaxInflight: %v", err)
	}
}

func TestOverPipe(t *testing.T) {
	a, b := net.Pipe()
	go Serve(a, HandlerFunc(echoHandler), ServerOptions{})
	c, err := NewConn(b, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Do(testCtx(t), Request{Op: OpWrite, Data: []byte("hello")})
	if err != nil || string(resp.Data) != "hello" {
		t.Fatal(resp, err)
	}
}

// TestHalfCloseStillReplies: a peer that sends requests then closes its writing side still gets
// every reply.
func TestHalfCloseStillReplies(t *testing.T) {
	ts := startServer(t, HandlerFunc(func(ctx context.Context, req *Request) Response {
		time.Sleep(20 * time.Millisecond)
		return Response{}
	}), ServerOptions{})
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var frames []byte
	for range 5 {
		frames = append(frames, rawFrame(OpFlush, 0, nil)...)
	}
	nc.Write(frames)
	nc.(*net.TCPConn).CloseWrite()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(nc)
	if err != nil || len(got) != 5*ReplyHeaderSize {
		t.Fatalf("read %d bytes, %v; want %d", len(got), err, 5*ReplyHeaderSize)
	}
	if err := ts.serveErr(t); err != nil {
		t.Fatalf("Serve = %v", err)
	}
}

// Abort resets the connection: the server reads ECONNRESET, not the EOF of a close, so the
// kernel held nothing back to send later, and the calls in flight fail at once.
func TestAbortResets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := Dial(context.Background(), ln.Addr().String(), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	defer srv.Close()
	pending := make(chan error, 1)
	go func() {
		_, err := c.Do(context.Background(), Request{Op: OpPing})
		pending <- err
	}()
	hdr := make([]byte, RequestHeaderSize)
	if _, err := io.ReadFull(srv, hdr); err != nil {
		t.Fatalf("the request did not arrive: %v", err)
	}
	c.Abort()
	if err := <-pending; !errors.Is(err, ErrClosed) {
		t.Fatalf("a call in flight ended with %v, want ErrClosed", err)
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := srv.Read(make([]byte, 1)); !errors.Is(err, syscallReset) {
		t.Fatalf("the server read %v, want a connection reset", err)
	}
}
