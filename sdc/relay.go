package sdc

import (
	"context"
	"slices"
	"time"

	"pflex/gossip"
	"pflex/internal/layout"
	"pflex/internal/reach"
)

// Relayed IO (DESIGN.md "Relayed IO"). The SDC probes every SDS address it talks to
// (internal/reach). When a chunk's primary has become unreachable, the chunk's IO goes to
// another SDS flagged wire.FlagRelay (the secondary when it is reachable), which passes it on to
// the primary: a link cut between this SDC and SDSs that the MDMs and the other SDSs still reach
// costs a detour instead of a stall. Requests in flight to an SDS that becomes
// unreachable are not left to wait out io_timeout: its connection is aborted, they fail and
// are retried, by the detour.

// sdsProbeEvery is how often (and how long) the SDC probes each SDS: twice as often as SDSs
// probe their peers, so that IO stalls 1-1.5 s into a cut instead of 2-3 s (a client's IO is
// what waits here; an SDS's peer probes only feed a decision the MDMs take in seconds).
const sdsProbeEvery = 500 * time.Millisecond

// StartProbes probes the SDSs this pool connects to until Close. Call it before any IO.
func (p *SDSConns) StartProbes() {
	pr := reach.New(p.probeTargets)
	pr.Interval, pr.Timeout = sdsProbeEvery, sdsProbeEvery
	p.startProbes(pr)
}

func (p *SDSConns) startProbes(pr *reach.Prober) {
	var ctx context.Context
	ctx, p.stopProbes = context.WithCancel(context.Background())
	pr.OnLost = func(addr string) { go p.drop(addr) }
	p.reach = pr
	go pr.Run(ctx)
}

// probeTargets lists the SDS addresses the pool has connected to or tried to.
func (p *SDSConns) probeTargets() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.addrs))
	for addr := range p.addrs {
		out[addr] = addr
	}
	return out
}

// drop aborts the connection to addr: what waits on it fails and is retried. Aborted, not
// closed: the kernel must not deliver the requests still in its send queue once the link is
// back, after their retries went through the detour and newer writes followed (the write tags
// would catch them only while the primary remembers them).
func (p *SDSConns) drop(addr string) {
	p.mu.Lock()
	ep := p.addrs[addr]
	p.mu.Unlock()
	if ep == nil {
		return
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.conn != nil {
		ep.conn.c.Abort()
	}
	if p.opts.Logger != nil {
		p.opts.Logger.Warn("SDS unreachable: its IO goes through the secondaries", "addr", addr)
	}
}

// unreachableSDS names the SDSs the probes have lost, for the SDC's heartbeats (the MDMs
// show them in the members list). One gossip lists alive or suspect goes by its name: a link
// cut. One gossip lists as dead is left out: its down is the MDMs' own business. One gossip
// does not list (members nil: no gossip yet) goes by its address.
func (p *SDSConns) unreachableSDS(members func() []gossip.Member) []string {
	lost := p.reach.Unreachable()
	if len(lost) == 0 || members == nil {
		return lost
	}
	names := map[string]string{} // data address -> name; "" for a dead SDS
	for _, m := range members() {
		if m.Meta.Data != "" && slices.Contains(m.Meta.Caps, gossip.CapSDS) {
			if m.IsAlive() {
				names[m.Meta.Data] = m.Name
			} else if _, seen := names[m.Meta.Data]; !seen {
				names[m.Meta.Data] = ""
			}
		}
	}
	var out []string
	for _, addr := range lost {
		switch n, listed := names[addr]; {
		case !listed:
			out = append(out, addr)
		case n != "":
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// unreachable tells whether the probes have lost addr.
func (p *SDSConns) unreachable(addr string) bool { return p.reach.IsUnreachable(addr) }

// route picks where a chunk's IO goes under l: to its primary, or, when the primary is
// unreachable, for relaying to its secondary, or when that is unreachable too (or the chunk
// has one copy in service) to another SDS of the layout that is in service and reachable.
func (v *Volume) route(l *layout.Layout, reps []int64) (id int64, addr string, relay bool) {
	m, _ := l.Member(reps[0])
	if !v.conns.unreachable(m.Addr) {
		return reps[0], m.Addr, false
	}
	if len(reps) > 1 {
		if s, ok := l.Member(reps[1]); ok && s.Addr != "" && !v.conns.unreachable(s.Addr) {
			return reps[1], s.Addr, true
		}
	}
	if o, ok := v.relayVia(l, reps[0]); ok {
		return o.SDSID, o.Addr, true
	}
	return reps[0], m.Addr, false
}

// flushVia picks the SDS that takes a FLUSH of SDS id under l: id itself, or, when it is
// unreachable, another member of the layout for relaying.
func (v *Volume) flushVia(l *layout.Layout, id int64) (addr string, relay bool) {
	m, _ := l.Member(id)
	if !v.conns.unreachable(m.Addr) {
		return m.Addr, false
	}
	if o, ok := v.relayVia(l, id); ok {
		return o.Addr, true
	}
	return m.Addr, false
}

// relayVia finds a member of l other than id, in service and reachable, to relay through.
func (v *Volume) relayVia(l *layout.Layout, id int64) (layout.Member, bool) {
	for _, o := range l.Members {
		if o.SDSID != id && o.Addr != "" && !l.IsExcluded(o.SDSID) && !v.conns.unreachable(o.Addr) {
			return o, true
		}
	}
	return layout.Member{}, false
}
