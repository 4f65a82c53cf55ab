package reach

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
)

// A target is unreachable after Fails failed probes in a row, no longer once one gets through,
// and forgotten when Targets stops listing it; OnLost is called on the way down.
func TestProber(t *testing.T) {
	targets := map[string]string{"sds-2": "a2", "sds-3": "a3", "sds-4": "a4"}
	var mu sync.Mutex
	down := map[string]bool{"a2": true, "a3": true}
	var dialed []string
	p := New(func() map[string]string { return targets })
	p.Dial = func(_ context.Context, addr string) error {
		mu.Lock()
		defer mu.Unlock()
		dialed = append(dialed, addr)
		if down[addr] {
			return errors.New("timeout")
		}
		return nil
	}
	var called []string
	p.OnLost = func(key string) {
		if !p.IsUnreachable(key) {
			t.Errorf("OnLost(%s) before the key is unreachable", key)
		}
		called = append(called, key)
	}
	ctx := context.Background()
	p.Round(ctx)
	if got := p.Unreachable(); len(got) != 0 || p.IsUnreachable("sds-2") {
		t.Fatalf("unreachable after one failed probe: %v", got)
	}
	p.Round(ctx)
	if got := p.Unreachable(); !slices.Equal(got, []string{"sds-2", "sds-3"}) || !p.IsUnreachable("sds-3") {
		t.Fatalf("after two failed probes: %v", got)
	}
	slices.Sort(called)
	if !slices.Equal(called, []string{"sds-2", "sds-3"}) {
		t.Fatalf("OnLost called for %v", called)
	}
	p.Round(ctx) // still down: no second call
	if len(called) != 2 {
		t.Fatalf("OnLost called again for a target still down: %v", called)
	}
	dialed = dialed[:6]
	slices.Sort(dialed)
	if !slices.Equal(dialed, []string{"a2", "a2", "a3", "a3", "a4", "a4"}) {
		t.Fatalf("probed %v", dialed)
	}
	down["a2"] = false
	delete(targets, "sds-3")
	p.Round(ctx)
	if got := p.Unreachable(); len(got) != 0 {
		t.Fatalf("after sds-2 answered and sds-3 was dropped: %v", got)
	}
}

// The real dial: a listening address is reachable, a closed port is not.
func TestDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := tcpDial(context.Background(), ln.Addr().String()); err != nil {
		t.Fatalf("dial a listening address: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := tcpDial(context.Background(), addr); err == nil {
		t.Fatal("dial a closed port succeeded")
	}
}
