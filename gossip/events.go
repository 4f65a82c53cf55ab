package gossip

import (
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberEvents is memberlist's EventDelegate: it keeps the member table (which, unlike
// memberlist's own, never forgets dead nodes) and fans events out to subscribers.
// memberlist calls it with its node lock held, so it must not call back into memberlist.
type memberEvents struct{ p *Pool }

func (e memberEvents) NotifyJoin(n *memberlist.Node)   { e.p.observe(EventJoin, n, StateAlive) }
func (e memberEvents) NotifyUpdate(n *memberlist.Node) { e.p.observe(EventUpdate, n, "") }

// NotifyLeave covers failures and graceful leaves alike; n.State is never filled in by
// memberlist v0.7.0, so a leave is recognised by the Meta.Leaving flag the node
// announced just before (see Pool.Leave).
func (e memberEvents) NotifyLeave(n *memberlist.Node) {
	st := StateDead
	if m, err := decodeMeta(n.Meta); err == nil && m.Leaving {
		st = StateLeft
	}
	e.p.observe(EventLeave, n, st)
}

// observe records one memberlist event in the table and tells subscribers.
// state "" keeps the current state (an update of a live node).
func (p *Pool) observe(t EventType, n *memberlist.Node, state string) {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		p.log.Warn("member meta does not decode; keeping it with empty meta (not a pflex node?)",
			"name", n.Name, "addr", n.Address(), "bytes", len(n.Meta), "error", err)
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	m, known := p.members[n.Name]
	if !known {
		m = &Member{Name: n.Name, State: StateAlive, LastChange: now}
		p.members[n.Name] = m
	}
	m.Addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	if err == nil || t != EventLeave { // a leave keeps the last good meta
		m.Meta = meta
	}
	if state == "" && m.State != StateSuspect {
		state = StateAlive
	}
	if state != "" && state != m.State {
		m.State, m.LastChange = state, now
	}
	switch {
	case n.Name == p.name:
		p.log.Debug("local member "+t.String(), "state", m.State)
	case t == EventUpdate:
		p.log.Debug("member updated", "name", n.Name, "leader", m.Meta.Leader, "term", m.Meta.Term)
	default:
		p.log.Info("member "+t.String(), "name", n.Name, "addr", m.Addr, "state", m.State, "caps", m.Meta.Caps)
	}
	ev := Event{Type: t, Member: *m}
	ev.Member.Meta = m.Meta.clone()
	for s := range p.subs {
		if !s.send(ev) {
			p.dropped.Add(1)
		}
	}
}

// subscriber is one Subscribe channel.
type subscriber struct {
	ch   chan Event
	once sync.Once
}

// send delivers ev without blocking; false means the buffer was full and ev is lost.
func (s *subscriber) send(ev Event) bool {
	select {
	case s.ch <- ev:
		return true
	default:
		return false
	}
}

func (s *subscriber) close() { s.once.Do(func() { close(s.ch) }) }

// Subscribe returns a buffered channel of membership events (256 deep) and a function
// that unsubscribes and closes it. A subscriber that falls behind loses events rather than
// stall gossip (see DroppedEvents); Members is always the full picture. Shutdown closes
// every channel. Events describe this node too.
func (p *Pool) Subscribe() (<-chan Event, func()) {
	s := &subscriber{ch: make(chan Event, subscriberBuffer)}
	p.mu.Lock()
	if p.closed.Load() {
		p.mu.Unlock()
		s.close()
		return s.ch, func() {}
	}
	p.subs[s] = struct{}{}
	p.mu.Unlock()
	return s.ch, func() {
		p.mu.Lock()
		delete(p.subs, s)
		s.close()
		p.mu.Unlock()
	}
}

// nodeDelegate is memberlist's Delegate: it serves our meta. The pool carries no user
// messages or state of its own.
type nodeDelegate struct{ p *Pool }

func (d nodeDelegate) NodeMeta(limit int) []byte {
	d.p.localMu.RLock()
	defer d.p.localMu.RUnlock()
	if len(d.p.metaBytes) > limit { // cannot happen: sizes are checked before storing
		return nil
	}
	return append([]byte(nil), d.p.metaBytes...)
}
func (nodeDelegate) NotifyMsg([]byte)                           {}
func (nodeDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (nodeDelegate) LocalState(join bool) []byte                { return nil }
func (nodeDelegate) MergeRemoteState(buf []byte, join bool)     {}

// conflictLogger reports two nodes claiming one name, which memberlist resolves by
// ignoring the newcomer.
type conflictLogger struct{ p *Pool }

func (c conflictLogger) NotifyConflict(existing, other *memberlist.Node) {
	c.p.log.Error("two nodes claim the same id; the second is ignored — every component needs a unique id",
		"id", existing.Name, "existing", existing.Address(), "other", other.Address())
}
