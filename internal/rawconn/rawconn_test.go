package rawconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// pair returns a wrapped client and the plain server side of a loopback TCP connection.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	c, ok := Wrap(nc).(*Conn)
	if !ok {
		t.Fatal("a TCP connection was not wrapped")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

func TestLargeTransfersBothWays(t *testing.T) {
	c, peer := pair(t)
	// Larger than the socket buffers, so both sides must wait for the other in the middle.
	out := bytes.Repeat([]byte("0123456789abcdef"), 1<<20)
	errc := make(chan error, 1)
	go func() {
		got := make([]byte, len(out))
		if _, err := io.ReadFull(peer, got); err != nil {
			errc <- err
			return
		}
		if !bytes.Equal(got, out) {
			errc <- errors.New("peer received different bytes")
			return
		}
		_, err := peer.Write(got)
		errc <- err
	}()
	if n, err := c.Write(out); err != nil || n != len(out) {
		t.Fatalf("Write = %d, %v; want %d", n, err, len(out))
	}
	back := make([]byte, len(out))
	if _, err := io.ReadFull(c, back); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, out) {
		t.Fatal("echo differs")
	}
}

func TestEOFAndReset(t *testing.T) {
	c, peer := pair(t)
	peer.Write([]byte("x"))
	peer.(*net.TCPConn).CloseWrite()
	buf := make([]byte, 8)
	if n, err := c.Read(buf); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v; want 1 byte", n, err)
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after peer's close = %d, %v; want io.EOF", n, err)
	}
	// A reset shows as ECONNRESET (or EPIPE) wrapped in a *net.OpError, like net.Conn's.
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	var err error
	for range 100 {
		if _, err = c.Write(make([]byte, 64<<10)); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var op *net.OpError
	if !errors.As(err, &op) || !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		t.Fatalf("Write to a reset connection: %v; want a *net.OpError with ECONNRESET or EPIPE", err)
	}
}

func TestDeadlineAndClose(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	buf := make([]byte, 8)
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v; want os.ErrDeadlineExceeded", err)
	}
	c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(buf)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read on a closed connection: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting Read")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed connection: %v; want net.ErrClosed", err)
	}
}

func TestPipeIsNotWrapped(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("net.Pipe has no descriptor and must be returned as is")
	}
}
