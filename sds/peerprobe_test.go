package sds

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"

	"pflex/gossip"
)

// A peer is named after probeFails failed probes in a row, no longer once one gets through,
// and forgotten when gossip stops listing it; MDMs, SDCs and the SDS itself are not probed.
func TestPeerProbe(t *testing.T) {
	members := []gossip.Member{
		{Name: "sds-1", State: gossip.StateAlive, Meta: gossip.Meta{Caps: []string{gossip.CapSDS}, Data: "a1"}},
		{Name: "sds-2", State: gossip.StateAlive, Meta: gossip.Meta{Caps: []string{gossip.CapSDS}, Data: "a2"}},
		{Name: "sds-3", State: gossip.StateSuspect, Meta: gossip.Meta{Caps: []string{gossip.CapSDS}, Data: "a3"}},
		{Name: "mdm-1", State: gossip.StateAlive, Meta: gossip.Meta{Caps: []string{"MDM"}, Data: "m1"}},
	}
	var mu sync.Mutex
	down := map[string]bool{"a2": true, "a3": true}
	var dialed []string
	p := newPeerProbe("sds-1")
	p.members = func() []gossip.Member { return members }
	p.dial = func(_ context.Context, addr string) error {
		mu.Lock()
		defer mu.Unlock()
		dialed = append(dialed, addr)
		if down[addr] {
			return errors.New("timeout")
		}
		return nil
	}
	ctx := context.Background()
	p.round(ctx)
	if got := p.unreachable(); len(got) != 0 {
		t.Fatalf("named after one failed probe: %v", got)
	}
	p.round(ctx)
	if got := p.unreachable(); !slices.Equal(got, []string{"sds-2", "sds-3"}) {
		t.Fatalf("after two failed probes: %v", got)
	}
	slices.Sort(dialed)
	if !slices.Equal(dialed, []string{"a2", "a2", "a3", "a3"}) {
		t.Fatalf("probed %v: only the other SDSs", dialed)
	}
	down["a2"] = false
	members = members[:2] // sds-3 left gossip
	p.round(ctx)
	if got := p.unreachable(); len(got) != 0 {
		t.Fatalf("after sds-2 answered and sds-3 left: %v", got)
	}
}

// The real dial: a listening peer is reachable, a closed port is not.
func TestPeerProbeDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := newPeerProbe("sds-1")
	if err := p.dial(context.Background(), ln.Addr().String()); err != nil {
		t.Fatalf("dial a listening peer: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := p.dial(context.Background(), addr); err == nil {
		t.Fatal("dial a closed port succeeded")
	}
}
