package wire

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// recLogger records log lines for assertions.
type recLogger struct {
	mu    sync.Mutex
	lines []string
}

func (l *recLogger) Debug(msg string, args ...any) { l.add("DEBUG", msg, args) }
func (l *recLogger) Warn(msg string, args ...any)  { l.add("WARN", msg, args) }
func (l *recLogger) add(lvl, msg string, args []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprint(lvl, " ", msg, " ", args))
}
func (l *recLogger) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// testServer serves every connection accepted on a loopback listener with h.
type testServer struct {
	addr   string
	ln     net.Listener
	log    *recLogger
	errs   chan error // Serve's return, one per connection
	mu     sync.Mutex
	conns  []net.Conn
	closed sync.WaitGroup
}

func startServer[S any](t testing.TB, h Handler[S], opts ServerOptions) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: ln.Addr().String(), ln: ln, log: &recLogger{}, errs: make(chan error, 100)}
	if opts.Logger == nil {
		opts.Logger = ts.log
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.mu.Lock()
			ts.conns = append(ts.conns, c)
			ts.mu.Unlock()
			ts.closed.Add(1)
			go func() {
				defer ts.closed.Done()
				ts.errs <- Serve(c, h, opts)
			}()
		}
	}()
	t.Cleanup(ts.kill)
	return ts
}

// kill closes the listener and every server-side connection, as if the server died.
func (ts *testServer) kill() {
	ts.ln.Close()
	ts.mu.Lock()
	for _, c := range ts.conns {
		c.Close()
	}
	ts.mu.Unlock()
	ts.closed.Wait()
}

func (ts *testServer) serveErr(t testing.TB) error {
	t.Helper()
	select {
	case err := <-ts.errs:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

func dial(t testing.TB, addr string, opts ClientOptions) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
