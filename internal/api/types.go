// Package api holds what the MDM's admin API and its clients share: the wire types of the
// cluster routes, the header names, and a leader-following client.
package api

import "pflex/fsm"

// Headers of the admin API.
const (
	// HeaderLeader carries the leader's API address on every response.
	HeaderLeader = "X-Pflex-Leader"
	// HeaderIndex carries the answering replica's applied index.
	HeaderIndex = "X-Pflex-Index"
	// HeaderRequestID makes a write idempotent: a retry with the same id returns the first answer.
	HeaderRequestID = "X-Pflex-Request-Id"
	// HeaderForwarded marks a request a follower forwarded to the leader (one hop only).
	HeaderForwarded = "X-Pflex-Forwarded"
)

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Error codes beyond the fsm rejection kinds.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeNoLeader     = "no_leader"
	CodeUnknown      = "outcome_unknown" // leadership was lost while the write was in flight
	CodeInternal     = "internal"
	CodeTimeout      = "timeout"
)

// Peer is one MDM replica in the Raft configuration.
type Peer struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
	Suffrage string `json:"suffrage"` // voter, nonvoter, staging
}

// ClusterStatus is one replica's own view (GET /cluster/status).
type ClusterStatus struct {
	NodeID       string      `json:"node_id"`
	State        string      `json:"state"` // leader, follower, candidate, shutdown
	Term         uint64      `json:"term"`
	LeaderID     string      `json:"leader_id"`
	LeaderAPI    string      `json:"leader_api"`
	CommitIndex  uint64      `json:"commit_index"`
	AppliedIndex uint64      `json:"applied_index"`
	LastLogIndex uint64      `json:"last_log_index"`
	FSMIndex     uint64      `json:"fsm_index"` // last command entry in state.db; the digest belongs to it
	Digest       string      `json:"digest"`
	LastContact  string      `json:"last_contact"` // follower: time since the leader was heard
	Peers        []Peer      `json:"peers"`
	Counts       *fsm.Counts `json:"counts,omitempty"`
	Version      string      `json:"version"`
}

// JoinRequest adds an MDM to the Raft configuration (POST /cluster/join).
type JoinRequest struct {
	NodeID   string `json:"node_id"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
	// Voter defaults to true; false adds a non-voting replica that only follows the log.
	Voter *bool `json:"voter,omitempty"`
}

// RemoveRequest removes an MDM (POST /cluster/remove).
type RemoveRequest struct {
	NodeID string `json:"node_id"`
}

// TransferRequest moves leadership (POST /cluster/transfer-leadership); an empty NodeID lets
// Raft pick the most up-to-date follower.
type TransferRequest struct {
	NodeID string `json:"node_id,omitempty"`
}

// TransferResponse names the leader after a transfer.
type TransferResponse struct {
	LeaderID  string `json:"leader_id"`
	LeaderAPI string `json:"leader_api"`
}

// LabelRequest is the body of PUT /vol/{id}/labels/{key}. With Expect set the write is a
// compare-and-set against the current value (a missing label counts as "").
type LabelRequest struct {
	Value  string  `json:"value"`
	Expect *string `json:"expect,omitempty"`
}

// RestoreResponse answers POST /cluster/restore.
type RestoreResponse struct {
	Restored     bool   `json:"restored"`
	AppliedIndex uint64 `json:"applied_index"`
	Digest       string `json:"digest"`
}

// Summary answers GET /: a one-screen view of the cluster.
type Summary struct {
	Cluster ClusterStatus `json:"cluster"`
	Counts  fsm.Counts    `json:"counts"`
}

// HeartbeatRequest is a component's heartbeat (POST /heartbeat). An SDS sends the IOState
// version it holds; the answer carries the current IOState when it changed.
type HeartbeatRequest struct {
	ID        string `json:"id"`
	IOVersion int64  `json:"io_version,omitempty"`
	// UnreachablePeers names the SDSs this component's probes could not reach: an SDS's peers
	// (sds/peerprobe.go), or the SDSs an SDC's IO now goes around (sdc/relay.go).
	UnreachablePeers []string `json:"unreachable_peers,omitempty"`
}

// HeartbeatResponse tells the component who leads and what the FSM thinks of it.
type HeartbeatResponse struct {
	LeaderID  string   `json:"leader_id"`
	LeaderAPI string   `json:"leader_api"`
	Term      uint64   `json:"term"`
	State     string   `json:"state"`
	IO        *IOState `json:"io,omitempty"`
	// LeaseMs is the lease granted to an SDS: it may serve IO until LeaseMs after it *sent*
	// this heartbeat (its own monotonic clock). 0: no lease (the leader is about to commit
	// the node down, or the node is no SDS).
	LeaseMs int64 `json:"lease_ms,omitempty"`
}

// RegisterResponse answers POST /discovery/register.
type RegisterResponse struct {
	fsm.Registration
	LeaderID  string   `json:"leader_id"`
	LeaderAPI string   `json:"leader_api"`
	IO        *IOState `json:"io,omitempty"` // for SDS-capable nodes: the keys to verify tokens with
	LeaseMs   int64    `json:"lease_ms,omitempty"`
}

// Member is one node as gossip, the FSM and raft see it (GET /cluster/members).
type Member struct {
	ID           string   `json:"id"`
	Capabilities []string `json:"capabilities"`
	Version      string   `json:"version"`
	APIAddr      string   `json:"api_addr"`
	GossipAddr   string   `json:"gossip_addr"`
	GossipState  string   `json:"gossip_state"` // alive, suspect, dead, left; empty: not in gossip
	State        string   `json:"state"`        // up/down as committed (components) or derived (MDMs)
	Registered   bool     `json:"registered"`   // went through POST /discovery/register
	Raft         string   `json:"raft,omitempty"`
	Leader       bool     `json:"leader,omitempty"`
	// LastHeartbeatMs is how long ago the leader last heard this node's heartbeat; -1: never.
	LastHeartbeatMs int64  `json:"last_heartbeat_ms"`
	LastContact     string `json:"last_contact,omitempty"` // how long a dead member has been gone
	// UnreachablePeers: the SDSs this SDS's or SDC's probes could not reach, as its last
	// heartbeat to the leader said (mdm/DESIGN.md "Peer cuts"; an SDC's are shown, not acted on).
	UnreachablePeers []string `json:"unreachable_peers,omitempty"`
}

// NodeView is a registered node with the leader's liveness view (GET /discovery/nodes).
type NodeView struct {
	fsm.Node
	GossipState     string `json:"gossip_state"`
	LastHeartbeatMs int64  `json:"last_heartbeat_ms"`
}

// TokenRequest asks the leader for an IO token (POST /token/issue).
type TokenRequest struct {
	VolumeID   int64  `json:"volume_id"`
	SDCID      int64  `json:"sdc_id"`
	AccessMode string `json:"access_mode"` // readWrite (default) or readOnly
}

// TokenResponse is a signed IO token and what it says.
type TokenResponse struct {
	Token         string `json:"token"` // base64url; what the SDC presents to SDSs
	TokenID       string `json:"token_id"`
	VolumeID      int64  `json:"volume_id"`
	SDCID         int64  `json:"sdc_id"`
	AccessMode    string `json:"access_mode"`
	MapGeneration int64  `json:"map_generation"`
	ExpiresAt     int64  `json:"expires_at"` // unix ms
	KeyID         uint32 `json:"key_id"`
}

// IOState is what an SDS needs to verify tokens: the signing keys and each volume's map
// generation, with the version they belong to. Heartbeats carry it when it changed.
type IOState struct {
	Version     int64            `json:"io_version"`
	Keys        []TokenKey       `json:"keys"`
	Generations map[string]int64 `json:"generations"` // volume id -> generation
	// LayoutEpochs is every volume's layout epoch (volume id -> epoch): an SDS drops a cached
	// layout that is older before it serves again under the lease of the same answer.
	LayoutEpochs map[string]int64 `json:"layout_epochs,omitempty"`
}

// TokenKey is a signing key as sent to SDSs.
type TokenKey struct {
	ID  uint32 `json:"id"`
	Key []byte `json:"key"`
}

// AckRequest is an SDS's batch of token usage (POST /token/ack).
type AckRequest struct {
	SDSID   int64          `json:"sds_id"`
	Entries []fsm.TokenAck `json:"entries"`
}

// Ledger answers GET /token/ledger.
type Ledger struct {
	Rows   []fsm.LedgerRow `json:"rows"`
	Totals LedgerTotals    `json:"totals"`
}

// LedgerTotals sums ledger rows.
type LedgerTotals struct {
	Tokens     int   `json:"tokens"`
	ReadOps    int64 `json:"read_ops"`
	WriteOps   int64 `json:"write_ops"`
	ReadBytes  int64 `json:"read_bytes"`
	WriteBytes int64 `json:"write_bytes"`
}

// MappedVolume is a volume an SDC exports (GET /sdc/{id}/volumes).
type MappedVolume struct {
	VolumeID           int64  `json:"volume_id"`
	Name               string `json:"name"`
	SizeBytes          int64  `json:"size_bytes"`
	AccessMode         string `json:"access_mode"`
	MapGeneration      int64  `json:"map_generation"`
	IOPSLimit          int64  `json:"iops_limit"`
	BandwidthLimitMBps int64  `json:"bandwidth_limit_mbps"`
}

// RebuildReport is an SDS telling the leader how far it got copying its chunks of a rebuild
// batch (POST /rebuild/report, cluster key). Done says every copy of the batch from this SDS
// is on its target and durable (fdatasync'd there). Counts are for this batch so far. An SDS
// repeats a Done report until the layout moves on, so a new leader learns it too.
type RebuildReport struct {
	SDSID    int64 `json:"sds_id"`
	VolumeID int64 `json:"volume_id"`
	Epoch    int64 `json:"epoch"`   // the rebuild's: the layout epoch it began at
	Ordered  int64 `json:"ordered"` // end of the batch copied
	Chunks   int64 `json:"chunks"`  // chunks of the batch this SDS is the source of, copied so far
	Total    int64 `json:"total"`   // chunks of the batch this SDS is the source of
	Bytes    int64 `json:"bytes"`   // data bytes sent so far (unallocated chunks send none)
	Done     bool  `json:"done"`
}

// RebuildStatus answers GET /rebuild/status/{pool_id}.
type RebuildStatus struct {
	PoolID int64 `json:"pool_id"`
	// State: idle (nothing to re-protect), rebuilding, waiting (degraded chunks that cannot be
	// rebuilt now: no eligible target or source up), cancelled.
	State          string          `json:"state"`
	Health         string          `json:"health"`
	DegradedChunks int64           `json:"degraded_chunks"`      // chunks with one full copy (pending targets included)
	ChunksTotal    int64           `json:"chunks_total"`         // chunks of this run: done + still degraded
	ChunksDone     int64           `json:"chunks_done"`          // re-protected in this run
	BytesDone      int64           `json:"bytes_done"`           // copied in this run (as the sources reported)
	MBPerSec       float64         `json:"mb_per_s"`             // over this run
	ETASeconds     float64         `json:"eta_seconds"`          // -1: unknown
	StartedAt      int64           `json:"started_at,omitempty"` // unix ms, on this leader
	Volumes        []VolumeRebuild `json:"volumes,omitempty"`
}

// VolumeRebuild is one volume's rebuild progress.
type VolumeRebuild struct {
	VolumeID       int64 `json:"volume_id"`
	Epoch          int64 `json:"epoch"` // of the active rebuild, 0: none
	Done           int64 `json:"done"`
	Ordered        int64 `json:"ordered"`
	Chunks         int64 `json:"chunks"`
	DegradedChunks int64 `json:"degraded_chunks"`
}
