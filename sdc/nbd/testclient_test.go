package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// testServer runs a Server on a loopback port for one test.
type testServer struct {
	srv     *Server
	exports *ExportMap
	addr    string
	done    chan error
}

func startServer(t testing.TB, tune func(*Config)) *testServer {
	t.Helper()
	exports := NewExportMap()
	cfg := Config{Exports: exports, Logger: testLogger(t)}
	if tune != nil {
		tune(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: NewServer(cfg), exports: exports, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { ts.done <- ts.srv.Serve(ln) }()
	t.Cleanup(func() {
		ts.srv.Close()
		if err := <-ts.done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ts
}

func (ts *testServer) uri(name string) string { return "nbd://" + ts.addr + "/" + name }

// testClient speaks the protocol by hand, to test what real clients never send.
type testClient struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

func dial(t testing.TB, addr string) *testClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return &testClient{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *testClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *testClient) read(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		c.t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// hello reads the server greeting and sends client flags.
func (c *testClient) hello(clientFlags uint32) uint16 {
	c.t.Helper()
	b := c.read(18)
	if binary.BigEndian.Uint64(b) != magicNBD || binary.BigEndian.Uint64(b[8:]) != magicOpt {
		c.t.Fatalf("bad greeting % x", b)
	}
	c.write(binary.BigEndian.AppendUint32(nil, clientFlags))
	return binary.BigEndian.Uint16(b[16:])
}

func (c *testClient) sendOpt(opt uint32, data []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *testClient) readOptReply() optReply {
	c.t.Helper()
	h := c.read(20)
	if m := binary.BigEndian.Uint64(h); m != magicOptReply {
		c.t.Fatalf("bad option reply magic %#x", m)
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	r.data = c.read(int(binary.BigEndian.Uint32(h[16:])))
	return r
}

// readOptReplies reads replies up to and including the final one.
func (c *testClient) readOptReplies() []optReply {
	c.t.Helper()
	var out []optReply
	for {
		r := c.readOptReply()
		out = append(out, r)
		if r.typ != repInfo && r.typ != repServer {
			return out
		}
	}
}

func infoGoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// connect does a full fixed newstyle handshake with GO and returns the
// export size and transmission flags.
func connect(t testing.TB, addr, name string) (*testClient, uint64, uint16) {
	t.Helper()
	c := dial(t, addr)
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)
	c.sendOpt(optGo, infoGoData(name))
	var size uint64
	var flags uint16
	for _, r := range c.readOptReplies() {
		switch {
		case r.typ == repInfo && binary.BigEndian.Uint16(r.data) == infoExport:
			size, flags = binary.BigEndian.Uint64(r.data[2:]), binary.BigEndian.Uint16(r.data[10:])
		case r.typ == repAck:
		case r.typ == repInfo:
		default:
			t.Fatalf("GO %q: reply type %#x %q", name, r.typ, r.data)
		}
	}
	return c, size, flags
}

func (c *testClient) send(cmd, flags uint16, handle, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	b := make([]byte, requestHeaderSize, requestHeaderSize+len(payload))
	binary.BigEndian.PutUint32(b, magicRequest)
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], cmd)
	binary.BigEndian.PutUint64(b[8:], handle)
	binary.BigEndian.PutUint64(b[16:], off)
	binary.BigEndian.PutUint32(b[24:], length)
	c.write(append(b, payload...))
}

// readReply reads one simple reply; readLen says how much data follows a
// successful reply for each handle (READs).
func (c *testClient) readReply(readLen map[uint64]int) (handle uint64, errno uint32, data []byte) {
	c.t.Helper()
	h := c.read(replyHeaderSize)
	if m := binary.BigEndian.Uint32(h); m != magicSimpleReply {
		c.t.Fatalf("bad reply magic %#x", m)
	}
	errno, handle = binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint64(h[8:])
	if errno == 0 && readLen[handle] > 0 {
		data = c.read(readLen[handle])
	}
	return handle, errno, data
}

// do sends one request and waits for its reply (nothing else in flight).
func (c *testClient) do(cmd, flags uint16, off uint64, length uint32, payload []byte) (uint32, []byte) {
	c.t.Helper()
	c.send(cmd, flags, 7, off, length, payload)
	readLen := map[uint64]int{}
	if cmd == cmdRead {
		readLen[7] = int(length)
	}
	h, errno, data := c.readReply(readLen)
	if h != 7 {
		c.t.Fatalf("reply for handle %d, want 7", h)
	}
	return errno, data
}

// expectEOF asserts that the server closes the connection.
func (c *testClient) expectEOF() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c.r)
	if err != nil && !isConnReset(err) {
		c.t.Fatalf("want EOF, got %v after %d bytes", err, len(b))
	}
	if len(b) != 0 {
		c.t.Fatalf("want EOF, got %d more bytes", len(b))
	}
}

func isConnReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// delayExport delays reads at delayOff, to force out-of-order completion.
type delayExport struct {
	*MemExport
	delayOff int64
	delay    time.Duration
}

func (d delayExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	if off == d.delayOff {
		select {
		case <-time.After(d.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return d.MemExport.ReadAt(ctx, p, off)
}
