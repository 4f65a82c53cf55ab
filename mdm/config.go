package mdm

import (
	"errors"
	"fmt"
	"time"

	"pflex/gossip"
	"pflex/internal/config"
)

// Config is an MDM's configuration file (HCL). See configs/local/mdm1.hcl.
type Config struct {
	NodeID     string `hcl:"node_id"`
	DataDir    string `hcl:"data_dir"`
	APIAddr    string `hcl:"api_addr"`
	RaftAddr   string `hcl:"raft_addr"`
	AdminToken string `hcl:"admin_token,optional"`
	LogLevel   string `hcl:"log_level,optional"`
	// RaftAdvertise is the raft address peers dial, when it differs from the bind address.
	RaftAdvertise string `hcl:"raft_advertise,optional"`
	// APIAdvertise is the API address other nodes and clients use, when it differs.
	APIAdvertise string `hcl:"api_advertise,optional"`

	// ClusterKey authenticates components (SDS, SDC, MGMT) on the discovery routes
	// (register, heartbeat): they send "Authorization: Bearer <cluster_key>".
	ClusterKey string `hcl:"cluster_key,optional"`
	// BootstrapExpect bootstraps a new cluster over gossip once this many MDMs with empty logs
	// see each other (Consul's rule). 0 means: static peers, or wait to be joined.
	BootstrapExpect int `hcl:"bootstrap_expect,optional"`
	// SDSDownGrace is how long a component must stay unreachable (gossip dead or heartbeats
	// missed) before the leader commits it down.
	SDSDownGrace string `hcl:"sds_down_grace,optional"`
	// HeartbeatTimeout is how long without a heartbeat counts as "missed heartbeats".
	HeartbeatTimeout string `hcl:"heartbeat_timeout,optional"`
	// SDSLease is the lease a heartbeat answer grants an SDS (default 2s): it serves IO only
	// until that long after it sent the heartbeat. The leader never commits an SDS down before
	// sds_lease + 500ms have passed since its last heartbeat arrived.
	SDSLease string `hcl:"sds_lease,optional"`
	// DeadServerCleanup removes an MDM that gossip has reported dead for this long from the raft
	// configuration (never below three voters). Empty: dead MDMs are only reported, and removed
	// by `pflex cluster remove`.
	DeadServerCleanup string `hcl:"dead_server_cleanup,optional"`

	// TokenTTL is the lifetime of IO tokens (default 60s); SDCs renew them before expiry.
	TokenTTL string `hcl:"token_ttl,optional"`

	// RebuildInterval is how often the leader plans rebuilds (default 500ms); a report from
	// an SDS or `pflex rebuild start` also wakes it at once.
	RebuildInterval string `hcl:"rebuild_interval,optional"`
	// RebuildBatchChunks bounds a rebuild batch: chunks ordered at once per volume (default
	// 1024). Targets take the writes of ordered chunks while they are copied.
	RebuildBatchChunks int64 `hcl:"rebuild_batch_chunks,optional"`
	// Rebalance moves chunks onto SDSs that hold fewer than their share (an added SDS, or one
	// that came back) when a pool is fully protected (default true).
	Rebalance *bool `hcl:"rebalance,optional"`

	Gossip *GossipSettings `hcl:"gossip,block"`

	// Peers is the static initial quorum. A node whose data dir is empty bootstraps with it;
	// an empty list means "wait to be added by POST /cluster/join".
	Peers []PeerConfig  `hcl:"peer,block"`
	Raft  *RaftSettings `hcl:"raft,block"`
}

// GossipSettings joins the memberlist pool every component shares. A node with another key
// is not admitted.
type GossipSettings = gossip.Settings

// PeerConfig is one member of the static initial quorum.
type PeerConfig struct {
	ID       string `hcl:"id,label"`
	RaftAddr string `hcl:"raft_addr"`
	APIAddr  string `hcl:"api_addr"`
}

// RaftSettings tunes hashicorp/raft. Durations are strings such as "500ms".
type RaftSettings struct {
	HeartbeatTimeout   string `hcl:"heartbeat_timeout,optional"`
	ElectionTimeout    string `hcl:"election_timeout,optional"`
	LeaderLeaseTimeout string `hcl:"leader_lease_timeout,optional"`
	CommitTimeout      string `hcl:"commit_timeout,optional"`
	ApplyTimeout       string `hcl:"apply_timeout,optional"`
	SnapshotInterval   string `hcl:"snapshot_interval,optional"`
	SnapshotThreshold  int    `hcl:"snapshot_threshold,optional"`
	TrailingLogs       int    `hcl:"trailing_logs,optional"`
	MaxAppendEntries   int    `hcl:"max_append_entries,optional"`
	// NoSync turns off fsync of the raft log. Only for throwaway benchmarks of the code path.
	NoSync bool `hcl:"no_sync,optional"`
}

// Timing is the parsed raft settings.
type Timing struct {
	Heartbeat, Election, LeaderLease, Commit, Apply, SnapshotInterval time.Duration
	SnapshotThreshold, TrailingLogs, MaxAppendEntries                 int
	NoSync                                                            bool
}

// DefaultConfig is a single MDM on loopback with the port plan of DESIGN.md section 12.
func DefaultConfig() *Config {
	return &Config{
		NodeID:   "mdm-1",
		DataDir:  "./data/mdm1",
		APIAddr:  "127.0.0.1:8001",
		RaftAddr: "127.0.0.1:8101",
		LogLevel: "info",
		Raft:     &RaftSettings{},
	}
}

// DefaultTiming are LAN defaults: a dead leader is replaced in about a second.
func DefaultTiming() Timing {
	return Timing{
		Heartbeat:         500 * time.Millisecond,
		Election:          500 * time.Millisecond,
		LeaderLease:       250 * time.Millisecond,
		Commit:            5 * time.Millisecond,
		Apply:             5 * time.Second,
		SnapshotInterval:  30 * time.Second,
		SnapshotThreshold: 8192,
		TrailingLogs:      10240,
		MaxAppendEntries:  256,
	}
}

// LoadConfig reads an HCL file over the defaults and validates it.
func LoadConfig(path string) (*Config, error) {
	cfg := DefaultConfig()
	cfg.Peers = nil
	if err := config.LoadHCL(path, cfg); err != nil {
		return nil, err
	}
	if cfg.Raft == nil {
		cfg.Raft = &RaftSettings{}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks every field and names the first bad one.
func (c *Config) Validate() error {
	if c.NodeID == "" {
		return errors.New("node_id is required")
	}
	if c.DataDir == "" {
		return errors.New("data_dir is required")
	}
	if err := config.HostPort("api_addr", c.APIAddr); err != nil {
		return err
	}
	if err := config.HostPort("raft_addr", c.RaftAddr); err != nil {
		return err
	}
	if c.RaftAdvertise != "" {
		if err := config.HostPort("raft_advertise", c.RaftAdvertise); err != nil {
			return err
		}
	}
	if c.APIAdvertise != "" {
		if err := config.HostPort("api_advertise", c.APIAdvertise); err != nil {
			return err
		}
	}
	switch c.LogLevel {
	case "", "trace", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not one of trace, debug, info, warn, error", c.LogLevel)
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 9 {
		return fmt.Errorf("bootstrap_expect: %d must be between 0 and 9", c.BootstrapExpect)
	}
	if c.BootstrapExpect > 0 && len(c.Peers) > 0 {
		return errors.New("bootstrap_expect and peer blocks are two ways to bootstrap: use one")
	}
	if c.BootstrapExpect > 0 && c.Gossip == nil {
		return errors.New("bootstrap_expect needs a gossip block (the MDMs find each other over gossip)")
	}
	if c.Gossip != nil {
		if err := c.Gossip.Validate(); err != nil {
			return err
		}
	}
	if _, err := c.Liveness(); err != nil {
		return err
	}
	if _, err := config.Duration("token_ttl", c.TokenTTL, DefaultTokenTTL); err != nil {
		return err
	}
	if _, err := c.Rebuild(); err != nil {
		return err
	}
	seen := map[string]bool{}
	self := false
	for i, p := range c.Peers {
		field := fmt.Sprintf("peer[%d]", i)
		if p.ID == "" {
			return fmt.Errorf("%s: id label is required", field)
		}
		if seen[p.ID] {
			return fmt.Errorf("peer %q: listed twice", p.ID)
		}
		seen[p.ID] = true
		if err := config.HostPort(fmt.Sprintf("peer %q raft_addr", p.ID), p.RaftAddr); err != nil {
			return err
		}
		if err := config.HostPort(fmt.Sprintf("peer %q api_addr", p.ID), p.APIAddr); err != nil {
			return err
		}
		if p.ID == c.NodeID {
			self = true
			if p.RaftAddr != c.raftAdvertise() {
				return fmt.Errorf("peer %q raft_addr %q differs from this node's raft address %q", p.ID, p.RaftAddr, c.raftAdvertise())
			}
		}
	}
	if len(c.Peers) > 0 && !self {
		return fmt.Errorf("peer: the static peer list must include this node (%q)", c.NodeID)
	}
	_, err := c.Timing()
	return err
}

func (c *Config) raftAdvertise() string {
	if c.RaftAdvertise != "" {
		return c.RaftAdvertise
	}
	return c.RaftAddr
}

func (c *Config) apiAdvertise() string {
	if c.APIAdvertise != "" {
		return c.APIAdvertise
	}
	return c.APIAddr
}

// Timing parses the raft block over DefaultTiming.
func (c *Config) Timing() (Timing, error) {
	t := DefaultTiming()
	r := c.Raft
	if r == nil {
		return t, nil
	}
	var err error
	for _, d := range []struct {
		field string
		value string
		dst   *time.Duration
	}{
		{"raft.heartbeat_timeout", r.HeartbeatTimeout, &t.Heartbeat},
		{"raft.election_timeout", r.ElectionTimeout, &t.Election},
		{"raft.leader_lease_timeout", r.LeaderLeaseTimeout, &t.LeaderLease},
		{"raft.commit_timeout", r.CommitTimeout, &t.Commit},
		{"raft.apply_timeout", r.ApplyTimeout, &t.Apply},
		{"raft.snapshot_interval", r.SnapshotInterval, &t.SnapshotInterval},
	} {
		if *d.dst, err = config.Duration(d.field, d.value, *d.dst); err != nil {
			return t, err
		}
	}
	for _, n := range []struct {
		field string
		value int
		dst   *int
	}{
		{"raft.snapshot_threshold", r.SnapshotThreshold, &t.SnapshotThreshold},
		{"raft.trailing_logs", r.TrailingLogs, &t.TrailingLogs},
		{"raft.max_append_entries", r.MaxAppendEntries, &t.MaxAppendEntries},
	} {
		if n.value < 0 {
			return t, fmt.Errorf("%s: %d must not be negative", n.field, n.value)
		}
		if n.value > 0 {
			*n.dst = n.value
		}
	}
	if t.LeaderLease > t.Heartbeat {
		return t, fmt.Errorf("raft.leader_lease_timeout (%s) must not exceed raft.heartbeat_timeout (%s)", t.LeaderLease, t.Heartbeat)
	}
	t.NoSync = r.NoSync
	return t, nil
}

// Liveness is the parsed failure-detection settings.
type Liveness struct {
	DownGrace, HeartbeatTimeout, Lease, DeadServerCleanup time.Duration
}

// Failure-detection defaults. An SDS killed just after a heartbeat is committed down about
// DefaultHeartbeatTimeout + DefaultDownGrace (+ a 100 ms tick) later: 3.1 s, which is the IO stall
// an NBD client sees, plus the SDC's next layout fetch. The lease (2 s, four heartbeats of 500 ms)
// is shorter than that window by more than LeaseMargin, so a cut-off SDS has stopped serving
// before its chunks move; the leader also checks this explicitly (leaseExpired).
const (
	DefaultDownGrace        = 1500 * time.Millisecond
	DefaultHeartbeatTimeout = 1500 * time.Millisecond
	DefaultSDSLease         = 2 * time.Second
	// LeaseMargin covers what separates the SDS's clock from the leader's: the heartbeat's
	// transit (the lease runs from when the SDS sent it, before the leader saw it), clock rate
	// drift, and a deposed leader that granted leases for up to raft's leader lease after the
	// new leader started its clocks.
	LeaseMargin = 500 * time.Millisecond
)

// Liveness parses sds_down_grace, heartbeat_timeout and dead_server_cleanup.
func (c *Config) Liveness() (Liveness, error) {
	var l Liveness
	var err error
	if l.DownGrace, err = config.Duration("sds_down_grace", c.SDSDownGrace, DefaultDownGrace); err != nil {
		return l, err
	}
	if l.HeartbeatTimeout, err = config.Duration("heartbeat_timeout", c.HeartbeatTimeout, DefaultHeartbeatTimeout); err != nil {
		return l, err
	}
	if l.Lease, err = config.Duration("sds_lease", c.SDSLease, DefaultSDSLease); err != nil {
		return l, err
	}

	if c.DeadServerCleanup != "" {
		if l.DeadServerCleanup, err = config.Duration("dead_server_cleanup", c.DeadServerCleanup, 0); err != nil {
			return l, err
		}
	}
	return l, nil
}

// RebuildSettings is the parsed rebuild planner settings.
type RebuildSettings struct {
	Interval    time.Duration
	BatchChunks int64
	Rebalance   bool
}

// Rebuild planner defaults.
const (
	DefaultRebuildInterval    = 500 * time.Millisecond
	DefaultRebuildBatchChunks = 1024
)

// Rebuild parses rebuild_interval and rebuild_batch_chunks.
func (c *Config) Rebuild() (RebuildSettings, error) {
	s := RebuildSettings{BatchChunks: DefaultRebuildBatchChunks, Rebalance: c.Rebalance == nil || *c.Rebalance}
	var err error
	if s.Interval, err = config.Duration("rebuild_interval", c.RebuildInterval, DefaultRebuildInterval); err != nil {
		return s, err
	}
	switch {
	case c.RebuildBatchChunks < 0:
		return s, fmt.Errorf("rebuild_batch_chunks: %d must not be negative", c.RebuildBatchChunks)
	case c.RebuildBatchChunks > 0:
		s.BatchChunks = c.RebuildBatchChunks
	}
	return s, nil
}
