package sds

import (
	"context"
	"net"
	"slices"
	"sync"
	"time"

	"pflex/gossip"
)

// Peer probes. A broken link between two SDSs that both still heartbeat the MDMs would stall
// the writes of every chunk they share for as long as it lasts: each forward times out and is
// answered Retry, and nothing tells the MDMs. So every probeInterval an SDS opens a TCP
// connection to the data address of every other SDS gossip knows (alive or suspect) and closes
// it again, and its heartbeats name the peers it failed to reach probeFails times in a row. The
// MDM leader takes one SDS of a pair that cannot reach each other out (mdm/DESIGN.md "Peer
// cuts"). A peer gossip no longer lists is forgotten: its down is the MDMs' own business.
const (
	probeInterval = time.Second
	probeTimeout  = time.Second
	probeFails    = 2
)

type peerProbe struct {
	self    string
	members func() []gossip.Member // nil until the agent runs
	dial    func(ctx context.Context, addr string) error

	mu    sync.Mutex
	fails map[string]int // consecutive failed probes, per peer SDS id
}

func newPeerProbe(self string) *peerProbe {
	return &peerProbe{self: self, fails: map[string]int{}, dial: func(ctx context.Context, addr string) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}}
}

// run probes every probeInterval until ctx ends.
func (p *peerProbe) run(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.round(ctx)
	}
}

// round probes every peer once, all at once, and waits for the answers.
func (p *peerProbe) round(ctx context.Context) {
	if p.members == nil {
		return
	}
	peers := map[string]string{} // id -> data address
	for _, m := range p.members() {
		if m.Name != p.self && m.IsAlive() && m.Meta.Data != "" && slices.Contains(m.Meta.Caps, gossip.CapSDS) {
			peers[m.Name] = m.Meta.Data
		}
	}
	ok := make(map[string]bool, len(peers))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, addr := range peers {
		wg.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			err := p.dial(dctx, addr)
			mu.Lock()
			ok[id] = err == nil
			mu.Unlock()
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.fails {
		if _, known := peers[id]; !known {
			delete(p.fails, id)
		}
	}
	for id, reached := range ok {
		if reached {
			delete(p.fails, id)
		} else {
			p.fails[id]++
		}
	}
}

// unreachable lists, sorted, the peers the last probeFails probes failed to reach.
func (p *peerProbe) unreachable() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for id, n := range p.fails {
		if n >= probeFails {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}
