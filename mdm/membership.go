package mdm

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/hashicorp/raft"

	"pflex/fsm"
	"pflex/gossip"
	"pflex/internal/api"
)

// MDM membership over gossip: the pool, leader announcements, bootstrap_expect and the leader's
// reconciliation of gossip with the raft configuration.

// joinGossip starts this MDM's gossip member.
func (n *Node) joinGossip() error {
	g := n.cfg.Gossip
	if g == nil {
		return nil
	}
	pc, err := g.PoolConfig()
	if err != nil {
		return fmt.Errorf("mdm: %w", err)
	}
	pc.Logger = n.log.Named("gossip")
	pc.Meta = gossip.Meta{
		ID:      n.cfg.NodeID,
		Caps:    []string{gossip.CapMDM},
		Version: Version,
		API:     n.cfg.apiAdvertise(),
		Raft:    n.cfg.raftAdvertise(),
		Fresh:   n.fresh(),
		Expect:  n.cfg.BootstrapExpect,
	}
	pool, err := gossip.Start(*pc)
	if err != nil {
		return fmt.Errorf("mdm: gossip: %w", err)
	}
	n.pool = pool
	return nil
}

// fresh reports whether this node has no raft state at all: no log, no configuration.
func (n *Node) fresh() bool {
	if n.raft == nil {
		existing, err := raft.HasExistingState(n.logs, n.logs, n.snaps)
		return err == nil && !existing
	}
	if n.raft.LastIndex() > 0 {
		return false
	}
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) == 0
}

// announce publishes this node's raft role in its gossip meta: every component learns the
// leader's API address within a gossip round of a change.
func (n *Node) announce() {
	if n.pool == nil {
		return
	}
	leader := n.raft.State() == raft.Leader
	term := n.raft.CurrentTerm()
	fresh := n.fresh()
	m := n.pool.LocalMeta()
	if m.Leader == leader && m.Term == term && m.Fresh == fresh {
		return
	}
	if err := n.pool.UpdateMeta(func(m *gossip.Meta) {
		m.Leader, m.Term, m.Fresh = leader, term, fresh
	}); err != nil {
		n.log.Warn("could not update gossip meta", "error", err)
	}
}

// membershipLoop keeps the gossip meta current, bootstraps over gossip when asked to, and, on
// the leader, reconciles gossip with the raft configuration.
func (n *Node) membershipLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var events <-chan gossip.Event
	if n.pool != nil {
		ch, cancel := n.pool.Subscribe()
		defer cancel()
		events = ch
	}
	bootstrapped := false
	lastReconcile := time.Time{}
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		case <-events:
		}
		n.announce()
		if !bootstrapped && n.cfg.BootstrapExpect > 0 {
			bootstrapped = n.tryBootstrap()
		}
		if n.raft.State() == raft.Leader && time.Since(lastReconcile) >= 500*time.Millisecond {
			lastReconcile = time.Now()
			n.reconcileMDMs()
		}
	}
}

// tryBootstrap applies Consul's rule: once bootstrap_expect MDMs with empty logs (and the same
// expectation) see each other, the expect MDMs with the lowest ids bootstrap with exactly that
// set. Every one of them computes the same set, so they bootstrap one cluster, whatever their
// start order. If any MDM in the pool already has state, a cluster exists: wait to be joined.
// It returns true when there is nothing more to do.
func (n *Node) tryBootstrap() bool {
	if n.pool == nil || !n.fresh() {
		return true
	}
	var fresh []gossip.Member
	for _, m := range n.pool.Alive(gossip.CapMDM) {
		if !m.Meta.Fresh {
			n.log.Info("an MDM with raft state is in the pool; waiting to be added to its cluster", "seen", m.Name)
			return true
		}
		if m.Meta.Expect == n.cfg.BootstrapExpect && m.Meta.Raft != "" {
			fresh = append(fresh, m)
		}
	}
	if len(fresh) < n.cfg.BootstrapExpect {
		return false
	}
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].Name < fresh[j].Name })
	chosen := fresh[:n.cfg.BootstrapExpect]
	var servers []raft.Server
	self := false
	for _, m := range chosen {
		self = self || m.Name == n.cfg.NodeID
		servers = append(servers, raft.Server{ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.Meta.Raft), Suffrage: raft.Voter})
	}
	if !self {
		n.log.Info("bootstrap set is complete without this node; waiting to be added", "expect", n.cfg.BootstrapExpect)
		return true
	}
	n.log.Info("bootstrapping a new cluster over gossip", "expect", n.cfg.BootstrapExpect, "servers", fmt.Sprint(servers))
	if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		n.log.Warn("bootstrap failed", "error", err)
		return false
	}
	return true
}

// reconcileMDMs runs on the leader: an MDM alive in gossip but not in the configuration is
// added as a non-voter (and its address recorded); a non-voter that has caught up is promoted;
// a dead one is removed only after dead_server_cleanup, and never below three voters.
func (n *Node) reconcileMDMs() {
	if n.pool == nil {
		return
	}
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	inConfig := map[string]raft.Server{}
	voters := 0
	for _, s := range f.Configuration().Servers {
		inConfig[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	live, _ := n.liveness()
	gossipState := map[string]gossip.Member{}
	for _, m := range n.pool.Members() {
		gossipState[m.Name] = m
	}
	for _, m := range n.pool.Alive(gossip.CapMDM) {
		if m.Meta.Raft == "" || m.Name == n.cfg.NodeID {
			continue
		}
		s, ok := inConfig[m.Name]
		if !ok {
			n.log.Info("adding MDM seen in gossip as a non-voter", "node", m.Name, "raft", m.Meta.Raft)
			rec := fsm.UpsertMDM{ID: m.Name, RaftAddr: m.Meta.Raft, APIAddr: m.Meta.API}
			if _, err := n.Propose(ctx, "", &rec); err != nil {
				n.log.Warn("record MDM", "node", m.Name, "error", err)
				continue
			}
			if err := n.raft.AddNonvoter(raft.ServerID(m.Name), raft.ServerAddress(m.Meta.Raft), 0, 5*time.Second).Error(); err != nil {
				n.log.Warn("add non-voter", "node", m.Name, "error", err)
			}
			continue
		}
		if s.Suffrage == raft.Nonvoter && n.caughtUp(ctx, m.Meta.API) {
			n.log.Info("promoting caught-up MDM to voter", "node", m.Name)
			if err := n.raft.AddVoter(s.ID, s.Address, 0, 5*time.Second).Error(); err != nil {
				n.log.Warn("promote", "node", m.Name, "error", err)
			}
		}
	}
	if live.DeadServerCleanup <= 0 {
		return
	}
	for id, s := range inConfig {
		m, seen := gossipState[id]
		if !seen || (m.State != "dead" && m.State != "left") || time.Since(m.LastChange) < live.DeadServerCleanup {
			continue
		}
		if s.Suffrage == raft.Voter && voters <= 3 {
			continue
		}
		n.log.Warn("removing MDM dead longer than dead_server_cleanup", "node", id, "dead_for", time.Since(m.LastChange).Round(time.Second))
		if _, err := n.Propose(ctx, "", &fsm.RemoveMDM{ID: id}); err == nil {
			if err := n.raft.RemoveServer(s.ID, 0, 5*time.Second).Error(); err == nil && s.Suffrage == raft.Voter {
				voters--
			}
		}
	}
}

// caughtUp asks a non-voter for its applied index: within a few entries of the leader's commit
// index means it can vote without slowing commits.
func (n *Node) caughtUp(ctx context.Context, apiAddr string) bool {
	if apiAddr == "" {
		return false
	}
	var st api.ClusterStatus
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+apiAddr+"/cluster/status?stale=1", nil)
	if n.cfg.ClusterKey != "" {
		req.Header.Set("Authorization", "Bearer "+n.cfg.ClusterKey)
	} else if n.cfg.AdminToken != "" {
		req.Header.Set("Authorization", "Bearer "+n.cfg.AdminToken)
	}
	resp, err := n.httpClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || decodeJSON(resp.Body, &st) != nil {
		return false
	}
	return st.AppliedIndex+64 >= n.raft.CommitIndex()
}
