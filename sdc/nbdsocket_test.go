package sdc

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The NBD Unix socket replaces a socket file nobody answers on, and refuses one that answers
// or a path that is no socket; it is readable and writable by owner and group only.
func TestNBDSocketReplacesOnlyAStaleSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "nbd.sock")
	ln, err := listenNBDSocket(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v (%v), want 0660", fi.Mode(), err)
	}
	if _, err := listenNBDSocket(path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second listener on a live socket: %v", err)
	}
	// A process that died leaves its socket file behind (a closed listener would remove it).
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the stale socket file is gone already: %v", err)
	}
	ln, err = listenNBDSocket(path)
	if err != nil {
		t.Fatalf("a stale socket file was not replaced: %v", err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dialing the new socket: %v", err)
	}
	c.Close()
	ln.Close()

	file := filepath.Join(dir, "data.img")
	os.WriteFile(file, []byte("keep me"), 0o600)
	if _, err := listenNBDSocket(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("a regular file as the socket path: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Fatal("the regular file was touched")
	}

	cfg := DefaultConfig()
	cfg.ClusterKey = "k"
	cfg.NBDSocket = "/" + strings.Repeat("s", maxSocketPath)
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "nbd_socket") {
		t.Fatalf("a socket path of %d bytes: %v", len(cfg.NBDSocket), err)
	}
}
