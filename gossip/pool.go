// Package gossip is the one LAN membership pool (hashicorp/memberlist) every pflex component joins:
// discovery, failure detection and MDM leader announcements.
package gossip

import (
	"cmp"
	"context"
	"fmt"
	"log"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// Member states as reported in Member.State.
//
// StateSuspect is part of the vocabulary but not produced: memberlist v0.7.0 raises no
// event for suspicion and never fills Node.State (its internal nodeState shadows it), so a
// suspected node reads "alive" until it is declared dead, about 1.5 s later with the
// default timings. Callers should still treat "suspect" as alive (Member.IsAlive does).
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
)

// Member is one node of the pool as this node sees it.
type Member struct {
	Name       string    // memberlist node name (== Meta.ID)
	Addr       string    // gossip address host:port
	State      string    // "alive", "suspect", "dead", "left"
	Meta       Meta      // last meta seen; empty if the node's meta did not decode
	LastChange time.Time // when State last changed, as observed locally
}

// IsAlive reports whether the member is alive or merely suspected.
func (m Member) IsAlive() bool { return m.State == StateAlive || m.State == StateSuspect }

// EventType says what happened to a member.
type EventType int

// Event types. EventLeave covers both dead and left (see Member.State).
const (
	EventJoin EventType = iota
	EventLeave
	EventUpdate
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventUpdate:
		return "update"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is one membership change, delivered to subscribers.
type Event struct {
	Type   EventType
	Member Member
}

// Pool is this node's membership in the gossip pool.
type Pool struct {
	cfg  Config
	name string
	addr string // advertised gossip address, fixed after Start
	log  hclog.Logger
	ml   *memberlist.Memberlist

	updateMu  sync.Mutex   // serializes UpdateMeta
	localMu   sync.RWMutex // guards meta, metaBytes (read by memberlist via NodeMeta)
	meta      Meta
	metaBytes []byte

	mu      sync.Mutex // guards members, subs
	members map[string]*Member
	subs    map[*subscriber]struct{}
	dropped atomic.Uint64

	left      atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// Start creates this node's memberlist and starts joining cfg.Join in the background.
// It returns an error naming the field for a bad config, or if the address cannot be bound.
func Start(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Meta = cfg.Meta.clone()
	cfg.Join = slices.Clone(cfg.Join)
	metaBytes, err := encodeMeta(cfg.Meta)
	if err != nil {
		return nil, err
	}
	p := &Pool{
		cfg:       cfg,
		name:      cfg.Meta.ID,
		log:       cfg.Logger.Named("gossip"),
		meta:      cfg.Meta,
		metaBytes: metaBytes,
		members:   make(map[string]*Member),
		subs:      make(map[*subscriber]struct{}),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	mlc, err := p.memberlistConfig()
	if err != nil {
		return nil, err
	}
	ml, err := memberlist.Create(mlc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start memberlist on %s: %w", cfg.BindAddr, err)
	}
	p.ml = ml
	// Our own address, as memberlist announced it in our join event. (Reading
	// ml.LocalNode() later races with UpdateNode, which rewrites that node in place.)
	p.mu.Lock()
	if self, ok := p.members[p.name]; ok {
		p.addr = self.Addr
	}
	p.mu.Unlock()
	if p.addr == "" {
		n := ml.LocalNode()
		p.addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	}
	if len(cfg.Key) == 0 {
		p.log.Warn("gossip encryption is off: no key configured; any process that can reach this port can join the pool")
	}
	p.log.Info("gossip started", "name", p.name, "addr", p.Addr(), "caps", cfg.Meta.Caps,
		"encrypted", len(cfg.Key) > 0, "join", cfg.Join)
	go p.joinLoop()
	return p, nil
}

// memberlistConfig maps Config onto memberlist's LAN defaults.
func (p *Pool) memberlistConfig() (*memberlist.Config, error) {
	cfg := p.cfg
	c := memberlist.DefaultLANConfig()
	c.Name = p.name
	host, port, _ := splitHostPort(cfg.BindAddr)
	if host == "" {
		host = "0.0.0.0"
	}
	c.BindAddr, c.BindPort = host, port
	c.AdvertisePort = port
	if cfg.AdvertiseAddr != "" {
		ah, ap, _ := splitHostPort(cfg.AdvertiseAddr)
		c.AdvertiseAddr = ah
		if ap != 0 {
			c.AdvertisePort = ap
		}
	}
	c.ProbeInterval = cfg.ProbeInterval
	c.ProbeTimeout = cfg.ProbeTimeout
	c.GossipInterval = cfg.GossipInterval
	c.SuspicionMult = cfg.SuspicionMult
	c.SuspicionMaxTimeoutMult = suspicionMaxTimeoutMult
	c.PushPullInterval = pushPullInterval
	c.TCPTimeout = tcpTimeout
	c.Delegate = nodeDelegate{p}
	c.Events = memberEvents{p}
	c.Conflict = conflictLogger{p}
	c.Logger = log.New(&logBridge{p: p, next: p.log.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true})}, "", 0)
	if len(cfg.Key) > 0 {
		kr, err := memberlist.NewKeyring(nil, cfg.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: Key: %v", ErrInvalidConfig, err)
		}
		c.Keyring = kr
		c.GossipVerifyIncoming = true
		c.GossipVerifyOutgoing = true
	}
	return c, nil
}

// LocalName is this node's name (its Meta.ID).
func (p *Pool) LocalName() string { return p.name }

// Addr is the gossip address other nodes reach this one at (the real port when BindAddr used port 0).
func (p *Pool) Addr() string { return p.addr }

// LocalMeta returns a copy of this node's current metadata.
func (p *Pool) LocalMeta() Meta {
	p.localMu.RLock()
	defer p.localMu.RUnlock()
	return p.meta.clone()
}

// UpdateMeta changes this node's metadata and gossips it to the pool (memberlist node-meta
// broadcast, normally seen everywhere within one or two gossip rounds). fn gets a copy;
// if the result does not encode within 512 bytes or changes the ID, nothing changes and an
// error is returned. It waits briefly for the broadcast to be sent; a slow broadcast is
// logged, not returned, because the new meta is already in force locally and the periodic
// state sync carries it anyway.
func (p *Pool) UpdateMeta(fn func(*Meta)) error {
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	if p.closed.Load() || p.left.Load() {
		return ErrClosed
	}
	m := p.LocalMeta()
	fn(&m)
	if m.ID != p.name {
		return fmt.Errorf("gossip: UpdateMeta may not change the node id (%q -> %q)", p.name, m.ID)
	}
	b, err := encodeMeta(m)
	if err != nil {
		return err
	}
	p.localMu.Lock()
	p.meta, p.metaBytes = m.clone(), b
	p.localMu.Unlock()
	if err := p.ml.UpdateNode(updateTimeout); err != nil {
		p.log.Warn("meta update broadcast not yet sent; it will spread with the next state sync", "error", err)
	}
	p.log.Debug("local meta updated", "leader", m.Leader, "term", m.Term)
	return nil
}

// Members returns every node ever seen, including dead and left ones and this node,
// sorted by name.
func (p *Pool) Members() []Member {
	p.mu.Lock()
	out := make([]Member, 0, len(p.members))
	for _, m := range p.members {
		c := *m
		c.Meta = c.Meta.clone()
		out = append(out, c)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Alive returns the alive (or suspect) members advertising capability c ("" = any), sorted by name.
func (p *Pool) Alive(c string) []Member {
	var out []Member
	for _, m := range p.Members() {
		if m.IsAlive() && (c == "" || m.Meta.Has(c)) {
			out = append(out, m)
		}
	}
	return out
}

// Leader returns, among alive MDM members announcing Leader, the one with the highest Term
// (ties: lowest name). ok is false when no alive MDM announces leadership.
func (p *Pool) Leader() (Member, bool) {
	var best Member
	found := false
	for _, m := range p.Alive(CapMDM) { // sorted by name: a tie keeps the lowest
		if !m.Meta.Leader {
			continue
		}
		if !found || m.Meta.Term > best.Meta.Term {
			best, found = m, true
		}
	}
	return best, found
}

// NumAlive counts alive and suspect members, this node included.
func (p *Pool) NumAlive() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, m := range p.members {
		if m.IsAlive() {
			n++
		}
	}
	return n
}

// WaitForPeers blocks until at least n members (this node included) are alive, or ctx ends.
func (p *Pool) WaitForPeers(ctx context.Context, n int) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for p.NumAlive() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("gossip: waiting for %d alive members (have %d): %w", n, p.NumAlive(), ctx.Err())
		case <-p.stop:
			return ErrClosed
		case <-t.C:
		}
	}
	return nil
}

// Forget drops a dead or left member from the table Members reports. It returns false
// if the member is unknown or still alive.
func (p *Pool) Forget(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.members[name]
	if !ok || m.IsAlive() {
		return false
	}
	delete(p.members, name)
	return true
}

// DroppedEvents counts events not delivered because a subscriber's buffer was full.
func (p *Pool) DroppedEvents() uint64 { return p.dropped.Load() }

// Leave announces that this node is leaving, so others list it as "left" rather than
// "dead", and waits up to timeout in all for the announcement to go out. It stops the
// join retry; call Shutdown afterwards.
//
// memberlist's NotifyLeave does not say whether a node left or died, so the leave is
// announced twice: first Meta.Leaving=true (a meta update, like a leader announcement),
// then memberlist's own leave. Peers that saw the flag record "left".
func (p *Pool) Leave(timeout time.Duration) error {
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	if p.closed.Load() {
		return ErrClosed
	}
	if p.left.Swap(true) {
		return nil
	}
	p.localMu.Lock()
	m := p.meta.clone()
	m.Leaving = true
	b, err := encodeMeta(m)
	if err == nil {
		p.meta, p.metaBytes = m, b
	}
	p.localMu.Unlock()
	deadline := time.Now().Add(timeout)
	if err == nil {
		if err := p.ml.UpdateNode(timeout / 2); err != nil {
			p.log.Debug("leave intent broadcast not confirmed", "error", err)
		}
	}
	if err := p.ml.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	p.log.Info("left gossip pool")
	return nil
}

// Shutdown stops gossip without announcing a leave (others detect this node as dead),
// stops the join retry and closes every subscriber channel. It is idempotent.
func (p *Pool) Shutdown() error {
	var err error
	p.closeOnce.Do(func() {
		p.updateMu.Lock()
		p.closed.Store(true)
		p.updateMu.Unlock()
		close(p.stop)
		if e := p.ml.Shutdown(); e != nil {
			err = fmt.Errorf("gossip: shutdown: %w", e)
		}
		<-p.done
		p.mu.Lock()
		for s := range p.subs {
			s.close()
		}
		clear(p.subs)
		p.mu.Unlock()
		p.log.Info("gossip stopped")
	})
	return err
}
