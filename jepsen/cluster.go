package jepsen

import (
	"context"
	"errors"

	"pflex/internal/api"
)

// Errors of the cluster backends.
var (
	// ErrNodeDown is returned when an operation needs a running node.
	ErrNodeDown = errors.New("jepsen: node is not running")
	// ErrNoBinary is returned when no pflex binary was given or found.
	ErrNoBinary = errors.New("jepsen: no pflex binary")
)

// Node is one MDM of a cluster under test.
type Node struct {
	ID  string // raft server id, e.g. mdm-1
	API string // host:port of its admin API as clients reach it
}

// NodeState is what the harness did to a node last.
type NodeState string

// Node states.
const (
	NodeRunning NodeState = "running"
	NodePaused  NodeState = "paused"
	NodeStopped NodeState = "stopped"
)

// Cluster controls the MDMs under test. Node indexes run from 0 to len(Nodes())-1. Every
// backend (local processes today; docker containers and network namespaces later) implements it.
type Cluster interface {
	// Nodes lists the MDMs; the list never changes.
	Nodes() []Node
	// AdminToken is what clients send as "Authorization: Bearer <token>".
	AdminToken() string
	// Start starts a stopped node (a no-op on a running one).
	Start(ctx context.Context, i int) error
	// Kill stops a node abruptly (SIGKILL for processes) and returns once it is gone.
	Kill(i int) error
	// Stop stops a node gracefully (SIGTERM, then SIGKILL after a grace period).
	Stop(i int) error
	// Pause freezes a node (SIGSTOP); Resume continues it (SIGCONT).
	Pause(i int) error
	Resume(i int) error
	// State reports what the harness did to the node last; Exits counts exits it did not cause.
	State(i int) NodeState
	// Status asks node i for its own view (GET /cluster/status?stale=1).
	Status(ctx context.Context, i int) (*api.ClusterStatus, error)
	// Heal undoes every fault: resumes paused nodes, starts stopped ones, heals partitions.
	Heal(ctx context.Context) error
	// Close stops every node for good.
	Close() error
}

// Partitioner is the optional interface of backends that can cut the network (netns, docker):
// Partition splits the nodes into groups that cannot reach each other; Heal in Cluster rejoins
// them. The local-process backend shares one loopback and does not implement it.
type Partitioner interface {
	Partition(groups [][]int) error
}

// ProcessPartitioner is the optional interface of backends that can cut any of their processes
// apart, the data path's included (netns). Processes lists their ids (mdm-N, sds-N, sdc-N);
// PartitionProcesses makes two processes unable to reach each other unless a group holds both.
// Heal in Cluster rejoins them.
type ProcessPartitioner interface {
	Processes() []string
	PartitionProcesses(groups [][]string) error
}

// Restart stops node i gracefully and starts it again.
func Restart(ctx context.Context, c Cluster, i int) error {
	if err := c.Stop(i); err != nil {
		return err
	}
	return c.Start(ctx, i)
}

// Leader returns the node that reports itself leader with the highest term among the nodes
// that answer, asking every running node.
func Leader(ctx context.Context, c Cluster) (int, bool) {
	best, term := -1, uint64(0)
	for i := range c.Nodes() {
		if c.State(i) != NodeRunning {
			continue
		}
		st, err := c.Status(ctx, i)
		if err != nil || st.State != "leader" {
			continue
		}
		if best < 0 || st.Term > term {
			best, term = i, st.Term
		}
	}
	return best, best >= 0
}
