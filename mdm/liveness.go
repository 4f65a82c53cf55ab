package mdm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"pflex/fsm"
	"pflex/gossip"
	"pflex/internal/api"
)

// Failure detection of components (SDS, SDC, MGMT). Only the leader judges: it keeps the time
// of each node's last heartbeat in memory and watches gossip. A node that is unreachable (dead
// in gossip, or no heartbeat for heartbeat_timeout) for sds_down_grace is committed down; one
// that is reachable again for upStable is committed up. Windows must hold without a break, so a
// flapping node does not flood the log. A new leader starts every clock afresh rather than
// trusting the old leader's timers, which it never saw.
//
// Leases: every heartbeat answer to an SDS grants sds_lease, which the SDS counts from when it
// sent the heartbeat. Committing an SDS down moves its chunks to their other copies (fsm
// excludeSDS), so the leader first makes sure the last lease it granted has expired: at least
// sds_lease + LeaseMargin since that heartbeat arrived (or since this leadership began, for a
// node not heard from yet), and no lease is granted to a node while its down is being
// committed (fencing). A heartbeat arriving after the down is answered from the new state, so
// the lease it grants comes with the new layout epochs.

const (
	upStable      = time.Second
	minTransition = time.Second // at most one committed state change per node per this
	livenessTick  = 100 * time.Millisecond
)

type liveTracker struct {
	mu      sync.Mutex
	term    uint64
	since   time.Time            // start of this leadership
	lastHB  map[string]time.Time // last heartbeat per node
	suspect map[string]time.Time // unreachable since
	alive   map[string]time.Time // reachable since
	changed map[string]time.Time // last committed transition
	fencing map[string]bool      // a down is being committed: grant no lease

	// Peer cuts (see peerCutVictim).
	reports  map[string][]string  // SDS -> the peers it could not reach, as of its last heartbeat
	cutSince map[string]time.Time // the current victim -> since when it has been the victim
	fencedAt map[string]time.Time // victim -> when its leases stopped
}

func newLiveTracker() *liveTracker {
	t := &liveTracker{}
	t.reset(0)
	return t
}

func (t *liveTracker) reset(term uint64) {
	t.term, t.since = term, time.Now()
	t.lastHB = map[string]time.Time{}
	t.suspect = map[string]time.Time{}
	t.alive = map[string]time.Time{}
	t.changed = map[string]time.Time{}
	t.fencing = map[string]bool{}
	t.reports = map[string][]string{}
	t.cutSince = map[string]time.Time{}
	t.fencedAt = map[string]time.Time{}
}

// heartbeat records a heartbeat from id, with the peers it could not reach, and reports
// whether a lease may be granted with it.
func (t *liveTracker) heartbeat(id string, unreachable []string) (grant bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastHB[id] = time.Now()
	if len(unreachable) > 0 {
		t.reports[id] = slices.Clone(unreachable)
	} else {
		delete(t.reports, id)
	}
	return !t.fencing[id]
}

// fence stops granting leases to id, unless a heartbeat arrived after heardAt (the node is
// alive after all: the down decision is void).
func (t *liveTracker) fence(id string, heardAt time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lastHB[id].Equal(heardAt) {
		return false
	}
	t.fencing[id] = true
	return true
}

func (t *liveTracker) unfence(id string) {
	t.mu.Lock()
	delete(t.fencing, id)
	delete(t.fencedAt, id)
	t.mu.Unlock()
}

// Peer cuts. Two SDSs that both heartbeat but cannot reach each other (a broken link between
// them) stall the writes of every chunk they share: each forward times out. Each SDS names in
// its heartbeats the peers its probes cannot reach (sds/peerprobe.go). The leader takes one SDS
// of such a pair out the way it takes out a silent one, except that this one still heartbeats:
// once it has been the victim for sds_down_grace, its heartbeats get no lease (fencing), and
// when the last lease granted has surely run out (sds_lease + LeaseMargin later) it is
// committed down. It comes back up only once no live SDS names it and it names none. At most
// one SDS is out at a time this way, and none while any SDS is down: a second down could leave
// chunks with no copy in service, which is worse than writes that wait for the link.

// peerCutVictim picks the SDS to take out among the SDSs in live (up, heartbeating): the one in
// the most broken links between live SDSs, counting both directions (it names a peer, a peer
// names it), so that an SDS that can reach no one, though everyone reaches it, is the one
// picked; on a tie the greatest id. "" when no live SDS names another.
func peerCutVictim(reports map[string][]string, live map[string]bool) string {
	score := map[string]int{}
	for r, peers := range reports {
		if !live[r] {
			continue
		}
		for _, p := range peers {
			if live[p] && p != r {
				score[p]++
				score[r]++
			}
		}
	}
	victim, most := "", 0
	for id, n := range score {
		if n > most || n == most && id > victim {
			victim, most = id, n
		}
	}
	return victim
}

// peerCutHeld reports whether id still cannot reach, or be reached by, a live SDS: a node
// taken out for a peer cut stays down until then.
func peerCutHeld(id string, reports map[string][]string, live map[string]bool) bool {
	for r, peers := range reports {
		if r == id {
			for _, p := range peers {
				if live[p] {
					return true
				}
			}
		} else if live[r] && slices.Contains(peers, id) {
			return true
		}
	}
	return false
}

// peerCut advances the peer-cut decision (t.mu held): it returns the victim to commit down
// now, or "".
func (t *liveTracker) peerCut(now time.Time, live map[string]bool, grace, leaseEnd time.Duration, log func(msg string, args ...any)) string {
	v := peerCutVictim(t.reports, live)
	for id := range t.fencedAt {
		if id != v {
			// Reachable again, or another is the victim now: it may have its leases back.
			delete(t.fencedAt, id)
			delete(t.fencing, id)
			log("peer cut over: leases granted again", "node", id)
		}
	}
	for id := range t.cutSince {
		if id != v {
			delete(t.cutSince, id)
		}
	}
	if v == "" {
		return ""
	}
	if _, ok := t.cutSince[v]; !ok {
		t.cutSince[v] = now
	}
	f, fenced := t.fencedAt[v]
	switch {
	case !fenced && now.Sub(t.cutSince[v]) >= grace && now.Sub(t.changed[v]) >= minTransition:
		t.fencing[v], t.fencedAt[v] = true, now
		log("SDS cut off from its peers: no more leases, down once the last one has run out", "node", v)
	case fenced && now.Sub(f) >= leaseEnd:
		return v
	}
	return ""
}

// unreachableFrom is what id's last heartbeat named unreachable.
func (t *liveTracker) unreachableFrom(id string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.reports[id])
}

// lastHeartbeat is when the leader last heard from id (zero: never, in this leadership).
func (t *liveTracker) lastHeartbeat(id string) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastHB[id]
}

func (n *Node) liveness() (Liveness, error) { return n.cfg.Liveness() }

// gossipMember returns what gossip knows of id.
func (n *Node) gossipMember(id string) (gossip.Member, bool) {
	if n.pool == nil {
		return gossip.Member{}, false
	}
	for _, m := range n.pool.Members() {
		if m.Name == id {
			return m, true
		}
	}
	return gossip.Member{}, false
}

// livenessLoop runs the leader's failure detector.
func (n *Node) livenessLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(livenessTick)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if n.raft.State() != raft.Leader {
			continue
		}
		n.checkLiveness()
	}
}

func (n *Node) checkLiveness() {
	live, _ := n.liveness()
	t := n.live
	term := n.raft.CurrentTerm()
	t.mu.Lock()
	if t.term != term {
		t.reset(term)
	}
	t.mu.Unlock()

	var nodes []fsm.Node
	if err := n.store.Read(func(r *fsm.Reader) (err error) { nodes, err = r.Nodes(); return }); err != nil {
		return
	}
	now := time.Now()
	type change struct {
		id, state string
		heardAt   time.Time // lastHB when decided
		peerCut   bool      // a down for a peer cut: already fenced
	}
	var changes []change
	t.mu.Lock()
	// SDSs that are up and heartbeat: the peer-cut decision looks only at them.
	liveSDS := map[string]bool{}
	for _, node := range nodes {
		if hb := t.lastHB[node.ID]; node.State == fsm.NodeUp && node.Has(fsm.CapSDS) && !hb.IsZero() && now.Sub(hb) < live.HeartbeatTimeout {
			liveSDS[node.ID] = true
		}
	}
	for _, node := range nodes {
		heardAt := t.lastHB[node.ID]
		hb := heardAt
		if hb.IsZero() {
			hb = t.since // nothing heard yet in this leadership: give it the timeout from now
		}
		// The last lease granted (by this leader, or by the previous one before this
		// leadership began) has surely run out.
		leaseExpired := now.Sub(hb) >= live.Lease+LeaseMargin
		reachable := now.Sub(hb) < live.HeartbeatTimeout
		if m, ok := n.gossipMember(node.ID); ok && (m.State == "dead" || m.State == "left") {
			reachable = false
		}
		if reachable {
			delete(t.suspect, node.ID)
			if _, ok := t.alive[node.ID]; !ok {
				t.alive[node.ID] = now
			}
		} else {
			delete(t.alive, node.ID)
			if _, ok := t.suspect[node.ID]; !ok {
				t.suspect[node.ID] = now
			}
		}
		if now.Sub(t.changed[node.ID]) < minTransition {
			continue
		}
		switch {
		case node.State == fsm.NodeUp && !reachable && leaseExpired && now.Sub(t.suspect[node.ID]) >= live.DownGrace:
			changes = append(changes, change{id: node.ID, state: fsm.NodeDown, heardAt: heardAt})
		case node.State == fsm.NodeDown && reachable && now.Sub(t.alive[node.ID]) >= upStable &&
			!peerCutHeld(node.ID, t.reports, liveSDS):
			changes = append(changes, change{id: node.ID, state: fsm.NodeUp, heardAt: heardAt})
		}
	}
	candidates := liveSDS
	for _, node := range nodes {
		if node.Has(fsm.CapSDS) && node.State == fsm.NodeDown {
			candidates = nil // one SDS out at a time (see peerCutVictim)
			break
		}
	}
	if v := t.peerCut(now, candidates, live.DownGrace, live.Lease+LeaseMargin, n.log.Warn); v != "" {
		changes = append(changes, change{id: v, state: fsm.NodeDown, peerCut: true})
	}
	t.mu.Unlock()

	for _, c := range changes {
		if c.state == fsm.NodeDown && !c.peerCut && !t.fence(c.id, c.heardAt) {
			continue // it heartbeated since: alive
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := n.Propose(ctx, "", &fsm.SetNodeState{ID: c.id, State: c.state})
		cancel()
		if c.state == fsm.NodeDown {
			t.unfence(c.id)
		}
		if err != nil {
			n.log.Warn("could not commit node state", "node", c.id, "state", c.state, "error", err)
			continue
		}
		n.log.Info("node state committed", "node", c.id, "state", c.state)
		t.mu.Lock()
		t.changed[c.id] = time.Now()
		t.mu.Unlock()
	}
}

// Heartbeat records a component's heartbeat on the leader. An SDS whose IO state (keys,
// revocations) is older than the leader's gets the current one in the answer.
func (n *Node) Heartbeat(req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	if !n.IsLeader() {
		return api.HeartbeatResponse{}, ErrNotLeader
	}
	// Recorded before the state is read: a lease granted here comes with state at least as new
	// as any down committed for this node (see fence).
	grant := n.live.heartbeat(req.ID, req.UnreachablePeers)
	var node fsm.Node
	var version int64
	if err := n.store.Read(func(r *fsm.Reader) (err error) {
		if node, err = r.Node(req.ID); err != nil {
			return err
		}
		version, err = r.IOVersion()
		return err
	}); err != nil {
		return api.HeartbeatResponse{}, err
	}
	lid, lapi := n.Leader()
	resp := api.HeartbeatResponse{LeaderID: lid, LeaderAPI: lapi, Term: n.raft.CurrentTerm(), State: node.State}
	if live, err := n.liveness(); err == nil && grant && node.Has(fsm.CapSDS) {
		resp.LeaseMs = live.Lease.Milliseconds()
	}
	if node.Has(fsm.CapSDS) && req.IOVersion != version {
		io, err := n.IOState()
		if err != nil {
			return resp, err
		}
		resp.IO = io
	}
	return resp, nil
}

// Members is the cluster as gossip, the FSM and raft see it, one row per node.
func (n *Node) Members() ([]api.Member, error) {
	byID := map[string]*api.Member{}
	get := func(id string) *api.Member {
		m, ok := byID[id]
		if !ok {
			m = &api.Member{ID: id, LastHeartbeatMs: -1, Capabilities: []string{}}
			byID[id] = m
		}
		return m
	}
	if n.pool != nil {
		for _, g := range n.pool.Members() {
			m := get(g.Name)
			m.GossipAddr, m.GossipState, m.Version = g.Addr, g.State, g.Meta.Version
			m.Capabilities = append([]string(nil), g.Meta.Caps...)
			m.APIAddr = g.Meta.API
			m.Leader = g.Meta.Leader
			if g.State != "alive" && g.State != "suspect" && !g.LastChange.IsZero() {
				m.LastContact = time.Since(g.LastChange).Round(time.Millisecond).String()
			}
		}
	}
	var nodes []fsm.Node
	if err := n.store.Read(func(r *fsm.Reader) (err error) { nodes, err = r.Nodes(); return }); err != nil {
		return nil, err
	}
	for _, node := range nodes {
		m := get(node.ID)
		m.Registered, m.State = true, node.State
		if len(m.Capabilities) == 0 {
			m.Capabilities = node.Capabilities
		}
		if m.APIAddr == "" {
			m.APIAddr = node.APIAddr
		}
		if m.Version == "" {
			m.Version = node.Version
		}
		if hb := n.live.lastHeartbeat(node.ID); !hb.IsZero() && n.IsLeader() {
			m.LastHeartbeatMs = time.Since(hb).Milliseconds()
			m.UnreachablePeers = n.live.unreachableFrom(node.ID)
		}
	}
	leaderID, _ := n.Leader()
	for _, p := range n.Peers() {
		m := get(p.ID)
		m.Raft = p.Suffrage
		if !contains(m.Capabilities, gossip.CapMDM) {
			m.Capabilities = append(m.Capabilities, gossip.CapMDM)
		}
		if m.APIAddr == "" {
			m.APIAddr = p.APIAddr
		}
		m.Leader = p.ID == leaderID
		if m.State == "" {
			m.State = "up"
			if m.GossipState == "dead" || m.GossipState == "left" {
				m.State = "down"
			}
		}
	}
	out := make([]api.Member, 0, len(byID))
	for _, m := range byID {
		sort.Strings(m.Capabilities)
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func decodeJSON(r io.Reader, v any) error {
	if err := json.NewDecoder(r).Decode(v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}
