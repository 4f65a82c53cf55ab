package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name  string `hcl:"name"`
	Delay string `hcl:"delay,optional"`
}

func TestLoadHCLNamesUnknownField(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.hcl")
	os.WriteFile(path, []byte("name = \"a\"\nbogus = 1\n"), 0o600)
	var s sample
	err := LoadHCL(path, &s)
	if err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("want an error naming bogus, got %v", err)
	}
}

func TestDurationAndHostPort(t *testing.T) {
	if d, err := Duration("x", "", time.Second); err != nil || d != time.Second {
		t.Fatalf("default: %v %v", d, err)
	}
	if _, err := Duration("raft.heartbeat_timeout", "fast", 0); err == nil || !strings.Contains(err.Error(), "raft.heartbeat_timeout") {
		t.Fatalf("want error naming field, got %v", err)
	}
	if err := HostPort("api_addr", "127.0.0.1"); err == nil || !strings.Contains(err.Error(), "api_addr") {
		t.Fatalf("want error naming field, got %v", err)
	}
	if err := HostPort("api_addr", "127.0.0.1:8001"); err != nil {
		t.Fatal(err)
	}
}
