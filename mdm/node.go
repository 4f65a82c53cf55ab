package mdm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"pflex/fsm"
	"pflex/gossip"
	"pflex/internal/api"
)

// Errors of the raft node, mapped to HTTP statuses by the API layer.
var (
	ErrNotLeader      = errors.New("this MDM is not the leader")
	ErrNoLeader       = errors.New("no MDM leader is elected")
	ErrOutcomeUnknown = errors.New("leadership changed while the write was in flight; its outcome is unknown, retry with the same request id")
	ErrShutdown       = errors.New("this MDM is shutting down")
)

// Node is one MDM replica: the raft instance, its log and snapshot stores, and the SQLite state.
type Node struct {
	cfg    *Config
	timing Timing
	log    hclog.Logger

	store *fsm.Store
	raft  *raft.Raft
	trans *raft.NetworkTransport
	logs  *raftboltdb.BoltStore
	snaps *raft.FileSnapshotStore

	// readyTerm is the term in which this node, as leader, committed a barrier: from then on its
	// commit index covers every entry of earlier terms, so ReadIndex reads are safe.
	readyTerm atomic.Uint64
	addrCache atomic.Pointer[cachedAddr]
	proposer  *proposer

	pool       *gossip.Pool // nil without a gossip block
	live       *liveTracker
	rebuild    *rebuildPlanner
	httpClient *http.Client
	notifyCh   chan bool
	stop       chan struct{}
	wg         sync.WaitGroup
}

// openNode opens the stores, brings state.db up to the latest snapshot if it is behind, and starts
// raft. A node with an empty log bootstraps from the static peers.
func openNode(cfg *Config, logger hclog.Logger) (*Node, error) {
	timing, err := cfg.Timing()
	if err != nil {
		return nil, err
	}
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("mdm: data dir: %w", err)
	}
	n := &Node{cfg: cfg, timing: timing, log: logger, notifyCh: make(chan bool, 16), stop: make(chan struct{}),
		live: newLiveTracker(), httpClient: &http.Client{Timeout: 3 * time.Second}}
	rebuild, err := cfg.Rebuild()
	if err != nil {
		return nil, err
	}
	n.rebuild = newRebuildPlanner(n, rebuild, logger.Named("rebuild"))
	ok := false
	defer func() {
		if !ok {
			n.closeStores()
		}
	}()

	if n.store, err = fsm.Open(filepath.Join(cfg.DataDir, "state.db")); err != nil {
		return nil, err
	}
	// No freelist sync: each log commit writes fewer pages (the freelist is rebuilt on open), as
	// Consul does for its raft log.
	if n.logs, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(raftDir, "raft.db"),
		NoSync:      timing.NoSync,
		BoltOptions: &bbolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
	}); err != nil {
		return nil, fmt.Errorf("mdm: open raft log: %w", err)
	}
	// Replication reads recent entries back; serve them from memory instead of bolt.
	cached, err := raft.NewLogCache(1024, n.logs)
	if err != nil {
		return nil, fmt.Errorf("mdm: raft log cache: %w", err)
	}
	if n.snaps, err = raft.NewFileSnapshotStoreWithLogger(raftDir, 2, logger.Named("snapshots")); err != nil {
		return nil, fmt.Errorf("mdm: open snapshot store: %w", err)
	}
	if err := n.catchUpFromSnapshot(); err != nil {
		return nil, err
	}
	advertise, err := net.ResolveTCPAddr("tcp", cfg.raftAdvertise())
	if err != nil {
		return nil, fmt.Errorf("mdm: raft_advertise %q: %w", cfg.raftAdvertise(), err)
	}
	if n.trans, err = newRaftTransport(cfg.RaftAddr, advertise, logger.Named("transport")); err != nil {
		return nil, fmt.Errorf("mdm: raft transport on %s: %w", cfg.RaftAddr, err)
	}
	if err := n.joinGossip(); err != nil {
		return nil, err
	}
	fsmAdapter, err := fsm.NewRaftFSM(n.store, fsm.StagingDir(cfg.DataDir))
	if err != nil {
		return nil, err
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = logger.Named("raft")
	rc.HeartbeatTimeout = timing.Heartbeat
	rc.ElectionTimeout = timing.Election
	rc.LeaderLeaseTimeout = timing.LeaderLease
	rc.CommitTimeout = timing.Commit
	rc.SnapshotInterval = timing.SnapshotInterval
	rc.SnapshotThreshold = uint64(timing.SnapshotThreshold)
	rc.TrailingLogs = uint64(timing.TrailingLogs)
	rc.MaxAppendEntries = timing.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.NotifyCh = n.notifyCh
	// state.db is durable and knows its applied index: raft must not wipe it with the snapshot
	// on start; catchUpFromSnapshot already restored it if it was behind.
	rc.NoSnapshotRestoreOnStart = true

	if n.raft, err = raft.NewRaft(rc, fsmAdapter, cached, n.logs, n.snaps, n.trans); err != nil {
		return nil, fmt.Errorf("mdm: start raft: %w", err)
	}
	if err := n.bootstrap(); err != nil {
		n.raft.Shutdown().Error()
		return nil, err
	}
	n.proposer = newProposer(n, n.stop)
	n.wg.Add(5)
	go n.membershipLoop()
	go n.livenessLoop()
	go n.rebuildLoop()
	go n.watchLeadership()
	go func() {
		defer n.wg.Done()
		n.proposer.run()
	}()
	ok = true
	return n, nil
}

// catchUpFromSnapshot restores state.db from the newest snapshot when the database is behind it
// (for example after the node was down while the leader compacted its log).
func (n *Node) catchUpFromSnapshot() error {
	list, err := n.snaps.List()
	if err != nil {
		return fmt.Errorf("mdm: list snapshots: %w", err)
	}
	if len(list) == 0 || list[0].Index <= n.store.AppliedIndex() {
		return nil
	}
	meta, rc, err := n.snaps.Open(list[0].ID)
	if err != nil {
		return fmt.Errorf("mdm: open snapshot %s: %w", list[0].ID, err)
	}
	defer rc.Close()
	n.log.Info("state database is behind the latest snapshot; restoring it",
		"db_index", n.store.AppliedIndex(), "snapshot", meta.ID, "snapshot_index", meta.Index)
	return n.store.Restore(rc)
}

func (n *Node) bootstrap() error {
	if len(n.cfg.Peers) == 0 {
		return nil
	}
	existing, err := raft.HasExistingState(n.logs, n.logs, n.snaps)
	if err != nil {
		return fmt.Errorf("mdm: check raft state: %w", err)
	}
	if existing {
		return nil
	}
	var servers []raft.Server
	for _, p := range n.cfg.Peers {
		servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr), Suffrage: raft.Voter})
	}
	n.log.Info("bootstrapping a new cluster from the static peer list", "peers", len(servers))
	if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("mdm: bootstrap: %w", err)
	}
	return nil
}

// watchLeadership establishes each new leadership: a barrier (so reads are safe) and the MDM
// address records (so followers can forward to this node).
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case leader := <-n.notifyCh:
			if leader {
				n.log.Info("became leader", "term", n.raft.CurrentTerm())
				n.wg.Add(1)
				go func() {
					defer n.wg.Done()
					n.establishLeadership()
				}()
			} else {
				n.log.Info("lost leadership")
			}
		}
	}
}

func (n *Node) establishLeadership() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.ensureReady(ctx); err != nil {
		n.log.Warn("leadership barrier failed", "error", err)
		return
	}
	if err := n.ensureTokenKey(ctx); err != nil {
		n.log.Warn("could not commit an IO token signing key", "error", err)
	}
	known := map[string]fsm.MDMNode{}
	n.store.Read(func(r *fsm.Reader) error {
		nodes, err := r.MDMNodes()
		for _, m := range nodes {
			known[m.ID] = m
		}
		return err
	})
	want := []fsm.MDMNode{{ID: n.cfg.NodeID, RaftAddr: n.cfg.raftAdvertise(), APIAddr: n.cfg.apiAdvertise()}}
	for _, p := range n.cfg.Peers {
		if p.ID != n.cfg.NodeID {
			if _, ok := known[p.ID]; !ok {
				want = append(want, fsm.MDMNode{ID: p.ID, RaftAddr: p.RaftAddr, APIAddr: p.APIAddr})
			}
		}
	}
	for _, m := range want {
		if known[m.ID] == m {
			continue
		}
		c := fsm.UpsertMDM(m)
		if _, err := n.Propose(ctx, "", &c); err != nil {
			n.log.Warn("could not record MDM address", "node", m.ID, "error", err)
		}
	}
}

// ensureReady commits a barrier once per leadership term.
func (n *Node) ensureReady(ctx context.Context) error {
	term := n.raft.CurrentTerm()
	if n.readyTerm.Load() == term {
		return nil
	}
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if err := n.raft.Barrier(timeoutOf(ctx, n.timing.Apply)).Error(); err != nil {
		return n.raftErr(err)
	}
	if n.raft.CurrentTerm() == term {
		n.readyTerm.Store(term)
	}
	return nil
}

func timeoutOf(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < def {
			return max(d, time.Millisecond)
		}
	}
	return def
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Propose commits a command through raft (leader only) and returns what the FSM answered.
// Small commands go through the group-commit proposer; a backup restore goes alone.
func (n *Node) Propose(ctx context.Context, requestID string, c fsm.Command) (any, error) {
	if !n.IsLeader() {
		return nil, ErrNotLeader
	}
	p := fsm.Proposal{Header: stamp(requestID), Command: c}
	if c.Type() != fsm.TypeRestoreState {
		return n.proposer.submit(ctx, p)
	}
	data, err := fsm.Encode(p.Header, c)
	if err != nil {
		return nil, err
	}
	f := n.raft.Apply(data, timeoutOf(ctx, n.timing.Apply))
	if err := f.Error(); err != nil {
		return nil, n.raftErr(err)
	}
	res, ok := f.Response().(fsm.Result)
	if !ok {
		return nil, fmt.Errorf("mdm: unexpected FSM response %T", f.Response())
	}
	return res.Value, res.Err
}

// raftErr turns raft's errors into the node's.
func (n *Node) raftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress),
		errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrAbortedByRestore):
		return fmt.Errorf("%w (%v)", ErrOutcomeUnknown, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	}
	return err
}

// ReadBarrier makes a following read linearizable (the ReadIndex protocol): note the commit
// index, confirm leadership with a heartbeat round, and wait until that index is applied.
func (n *Node) ReadBarrier(ctx context.Context) error {
	if err := n.ensureReady(ctx); err != nil {
		return err
	}
	idx := n.raft.CommitIndex()
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return n.raftErr(err)
	}
	for n.raft.AppliedIndex() < idx {
		select {
		case <-ctx.Done():
			return fmt.Errorf("mdm: waiting to apply index %d: %w", idx, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// Leader returns the leader's id and API address, if a leader is known.
func (n *Node) Leader() (id, apiAddr string) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	return string(lid), n.apiAddrOf(string(lid))
}

// apiAddrOf finds an MDM's API address: the FSM's record, else its gossip meta, else the static
// peer list. Every
// response names the leader, so the answer is cached for a second.
func (n *Node) apiAddrOf(id string) string {
	if id == n.cfg.NodeID {
		return n.cfg.apiAdvertise()
	}
	if c := n.addrCache.Load(); c != nil && c.id == id && time.Since(c.at) < time.Second {
		return c.addr
	}
	addr := n.lookupAPIAddr(id)
	n.addrCache.Store(&cachedAddr{id: id, addr: addr, at: time.Now()})
	return addr
}

type cachedAddr struct {
	id, addr string
	at       time.Time
}

func (n *Node) lookupAPIAddr(id string) string {
	var addr string
	n.store.Read(func(r *fsm.Reader) error {
		nodes, err := r.MDMNodes()
		for _, m := range nodes {
			if m.ID == id {
				addr = m.APIAddr
			}
		}
		return err
	})
	if addr != "" {
		return addr
	}
	if m, ok := n.gossipMember(id); ok && m.Meta.API != "" {
		return m.Meta.API
	}
	for _, p := range n.cfg.Peers {
		if p.ID == id {
			return p.APIAddr
		}
	}
	return ""
}

// Status is this replica's own view.
func (n *Node) Status() api.ClusterStatus {
	lid, lapi := n.Leader()
	st := api.ClusterStatus{
		NodeID:       n.cfg.NodeID,
		State:        stateName(n.raft.State()),
		Term:         n.raft.CurrentTerm(),
		LeaderID:     lid,
		LeaderAPI:    lapi,
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		LastLogIndex: n.raft.LastIndex(),
		Peers:        n.Peers(),
		Version:      Version,
	}
	if st.State != "leader" {
		if lc := n.raft.LastContact(); !lc.IsZero() {
			st.LastContact = time.Since(lc).Round(time.Millisecond).String()
		} else {
			st.LastContact = "never"
		}
	}
	if d, err := n.store.Digest(); err == nil {
		st.FSMIndex, st.Digest = d.Index, d.Digest
	}
	return st
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "shutdown"
}

// Peers lists the raft configuration with API addresses.
func (n *Node) Peers() []api.Peer {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return []api.Peer{}
	}
	peers := []api.Peer{}
	for _, s := range f.Configuration().Servers {
		suffrage := "voter"
		switch s.Suffrage {
		case raft.Nonvoter:
			suffrage = "nonvoter"
		case raft.Staging:
			suffrage = "staging"
		}
		peers = append(peers, api.Peer{ID: string(s.ID), RaftAddr: string(s.Address), APIAddr: n.apiAddrOf(string(s.ID)), Suffrage: suffrage})
	}
	return peers
}

// Join adds an MDM to the configuration and records its API address.
func (n *Node) Join(ctx context.Context, req api.JoinRequest) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	m := fsm.UpsertMDM{ID: req.NodeID, RaftAddr: req.RaftAddr, APIAddr: req.APIAddr}
	if _, err := n.Propose(ctx, "", &m); err != nil {
		return err
	}
	id, addr, timeout := raft.ServerID(req.NodeID), raft.ServerAddress(req.RaftAddr), timeoutOf(ctx, 10*time.Second)
	var f raft.IndexFuture
	if req.Voter == nil || *req.Voter {
		f = n.raft.AddVoter(id, addr, 0, timeout)
	} else {
		f = n.raft.AddNonvoter(id, addr, 0, timeout)
	}
	return n.raftErr(f.Error())
}

// Remove takes an MDM out of the configuration.
func (n *Node) Remove(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	found := false
	for _, p := range n.Peers() {
		found = found || p.ID == id
	}
	if !found {
		return &fsm.Error{Kind: fsm.KindNotFound, Message: fmt.Sprintf("MDM %q is not in the cluster", id)}
	}
	if _, err := n.Propose(ctx, "", &fsm.RemoveMDM{ID: id}); err != nil {
		return err
	}
	return n.raftErr(n.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx, 10*time.Second)).Error())
}

// TransferLeadership hands leadership to id (or to the most up-to-date follower).
func (n *Node) TransferLeadership(id string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	if id == "" {
		return n.raftErr(n.raft.LeadershipTransfer().Error())
	}
	for _, p := range n.Peers() {
		if p.ID == id {
			if id == n.cfg.NodeID {
				return nil // already leader
			}
			return n.raftErr(n.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(p.RaftAddr)).Error())
		}
	}
	return &fsm.Error{Kind: fsm.KindNotFound, Message: fmt.Sprintf("MDM %q is not in the cluster", id)}
}

// Close stops raft and closes the stores.
func (n *Node) Close() error {
	close(n.stop)
	err := n.raft.Shutdown().Error()
	n.wg.Wait()
	return errors.Join(err, n.closeStores())
}

func (n *Node) closeStores() error {
	var errs []error
	if n.pool != nil {
		n.pool.Leave(time.Second)
		errs = append(errs, n.pool.Shutdown())
	}
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
	}
	if n.logs != nil {
		errs = append(errs, n.logs.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}
