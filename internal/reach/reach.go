// Package reach tells which data addresses this process can still connect to. A broken link
// to a process that still heartbeats the MDMs is invisible to them: an SDS cut from a peer, or
// an SDC cut from an SDS, would see its requests time out for as long as the cut lasts. So a
// Prober opens a TCP connection to every target once per interval and closes it again; a target
// it failed to reach Fails times in a row is unreachable until a probe reaches it again. The SDS
// names its unreachable peers to the MDM (sds/DESIGN.md "Peer probes"); the SDC sends the IO of
// an unreachable primary through the chunk's secondary (sdc/DESIGN.md "Relayed IO").
package reach

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults: a target is unreachable after two failed probes a second apart, each allowed a
// second to connect, so 2-3 s into a cut.
const (
	DefaultInterval = time.Second
	DefaultTimeout  = time.Second
	DefaultFails    = 2
)

// Prober probes targets, named by a key (an SDS id, an address), every Interval.
type Prober struct {
	// Targets lists what to probe, key -> address; called once per round. A key it no longer
	// lists is forgotten.
	Targets  func() map[string]string
	Interval time.Duration
	Timeout  time.Duration
	Fails    int
	// Dial connects to addr and closes the connection (tests replace it).
	Dial func(ctx context.Context, addr string) error
	// OnLost, if set, is called with each key that has just become unreachable, after the
	// round that found it (so Unreachable already lists it).
	OnLost func(key string)

	down atomic.Int64 // how many keys are unreachable: IsUnreachable's lock-free answer when none

	mu    sync.Mutex
	fails map[string]int // consecutive failed probes, per key
}

// New returns a Prober of targets with the defaults.
func New(targets func() map[string]string) *Prober {
	return &Prober{Targets: targets, Interval: DefaultInterval, Timeout: DefaultTimeout, Fails: DefaultFails, Dial: tcpDial}
}

func tcpDial(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

// Run probes every Interval until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.Round(ctx)
	}
}

// Round probes every target once, all at once, and waits for the answers.
func (p *Prober) Round(ctx context.Context) {
	targets := p.Targets()
	ok := make(map[string]bool, len(targets))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for key, addr := range targets {
		wg.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, p.Timeout)
			defer cancel()
			err := p.Dial(dctx, addr)
			mu.Lock()
			ok[key] = err == nil
			mu.Unlock()
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	var lost []string
	defer func() {
		for _, key := range lost {
			p.OnLost(key)
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fails == nil {
		p.fails = map[string]int{}
	}
	for key := range p.fails {
		if _, known := targets[key]; !known {
			delete(p.fails, key)
		}
	}
	for key, reached := range ok {
		if reached {
			delete(p.fails, key)
			continue
		}
		p.fails[key]++
		if p.fails[key] == p.Fails && p.OnLost != nil {
			lost = append(lost, key)
		}
	}
	var down int64
	for _, n := range p.fails {
		if n >= p.Fails {
			down++
		}
	}
	p.down.Store(down)
}

// Unreachable lists, sorted, the targets the last Fails probes failed to reach.
func (p *Prober) Unreachable() []string {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for key, n := range p.fails {
		if n >= p.Fails {
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out
}

// IsUnreachable tells whether key is unreachable now. It takes no lock while every target is
// reachable, so the data path may ask it on every request.
func (p *Prober) IsUnreachable(key string) bool {
	if p == nil || p.down.Load() == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fails[key] >= p.Fails
}
