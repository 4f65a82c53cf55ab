package jepsen

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"sync"
	"time"
)

// Nemesis injects one kind of fault. Inject runs one fault from start to heal (a killed node
// is started again, a paused one resumed) and returns; when ctx ends early it heals at once.
// Every action is recorded in the history as a nemesis event.
type Nemesis interface {
	Name() string
	Inject(ctx context.Context, c Cluster, rng *rand.Rand, rec *NemesisRecorder) error
}

// NemesisRecorder writes nemesis actions into the history and counts faults.
type NemesisRecorder struct {
	h *History

	mu     sync.Mutex
	faults map[string]int
}

// Do runs one action and records it (F = action, Key = nemesis, Node = target).
func (r *NemesisRecorder) Do(nemesis, action string, c Cluster, i int, f func() error) error {
	return r.DoNamed(nemesis, action, c.Nodes()[i].ID, f)
}

// DoNamed is Do for a target that is not an MDM (an SDS).
func (r *NemesisRecorder) DoNamed(nemesis, action, target string, f func() error) error {
	op := Op{Process: NemesisProcess, F: action, Key: nemesis, Node: target, Invoke: r.h.Now()}
	err := f()
	op.Return, op.Outcome = r.h.Now(), OK
	if err != nil {
		op.Outcome, op.Error = Fail, err.Error()
	}
	r.h.Add(op)
	return err
}

// Fault counts one injected fault of the named nemesis.
func (r *NemesisRecorder) Fault(nemesis string) {
	r.mu.Lock()
	r.faults[nemesis]++
	r.mu.Unlock()
}

// Faults returns the count of faults per nemesis.
func (r *NemesisRecorder) Faults() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.faults {
		out[k] = v
	}
	return out
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int63n(int64(hi-lo)+1))
}

// waitLeader waits up to timeout for a node that says it leads.
func waitLeader(ctx context.Context, c Cluster, timeout time.Duration) (int, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if i, ok := Leader(ctx, c); ok {
			return i, true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return -1, false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killNemesis SIGKILLs the leader (leader-kill) or a random MDM (kill), and starts it again
// 2-4 s later.
type killNemesis struct{ leader bool }

func (n killNemesis) Name() string {
	if n.leader {
		return "leader-kill"
	}
	return "kill"
}

func (n killNemesis) Inject(ctx context.Context, c Cluster, rng *rand.Rand, rec *NemesisRecorder) error {
	target := rng.Intn(len(c.Nodes()))
	if n.leader {
		i, ok := waitLeader(ctx, c, 10*time.Second)
		if !ok {
			return fmt.Errorf("leader-kill: no leader to kill")
		}
		target = i
	}
	if err := rec.Do(n.Name(), "kill", c, target, func() error { return c.Kill(target) }); err != nil {
		return err
	}
	rec.Fault(n.Name())
	sleep(ctx, between(rng, 2*time.Second, 4*time.Second))
	return rec.Do(n.Name(), "start", c, target, func() error { return c.Start(context.Background(), target) })
}

// pauseNemesis SIGSTOPs the leader or a random MDM (even odds) for 2-5 s, then SIGCONTs it.
type pauseNemesis struct{}

func (pauseNemesis) Name() string { return "pause" }

func (n pauseNemesis) Inject(ctx context.Context, c Cluster, rng *rand.Rand, rec *NemesisRecorder) error {
	target := rng.Intn(len(c.Nodes()))
	if rng.Intn(2) == 0 {
		if i, ok := Leader(ctx, c); ok {
			target = i
		}
	}
	if err := rec.Do(n.Name(), "pause", c, target, func() error { return c.Pause(target) }); err != nil {
		return err
	}
	rec.Fault(n.Name())
	sleep(ctx, between(rng, 2*time.Second, 5*time.Second))
	return rec.Do(n.Name(), "resume", c, target, func() error { return c.Resume(target) })
}

// rollingRestartNemesis restarts every MDM in turn (SIGTERM, start), waiting for the
// restarted node to answer and for a leader before the next one.
type rollingRestartNemesis struct{}

func (rollingRestartNemesis) Name() string { return "rolling-restart" }

func (n rollingRestartNemesis) Inject(ctx context.Context, c Cluster, rng *rand.Rand, rec *NemesisRecorder) error {
	for i := range c.Nodes() {
		if err := rec.Do(n.Name(), "restart", c, i, func() error { return Restart(context.Background(), c, i) }); err != nil {
			return err
		}
		rec.Fault(n.Name())
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := c.Status(ctx, i); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		waitLeader(context.Background(), c, 20*time.Second)
		if ctx.Err() != nil {
			return nil
		}
		sleep(ctx, between(rng, time.Second, 2*time.Second))
	}
	return nil
}

// NewNemesis returns the nemesis with the given name.
func NewNemesis(name string) (Nemesis, error) {
	switch name {
	case "leader-kill":
		return killNemesis{leader: true}, nil
	case "kill":
		return killNemesis{}, nil
	case "pause":
		return pauseNemesis{}, nil
	case "rolling-restart":
		return rollingRestartNemesis{}, nil
	case sdsKillName:
		return sdsKillNemesis, nil
	case sdsPauseName:
		return sdsPauseNemesis, nil
	case "partition-leader", "partition-majority", "partition-bridge":
		return partitionNemesis{kind: strings.TrimPrefix(name, "partition-")}, nil
	}
	if slices.Contains(dataPartitions, name) {
		return dataPartitionNemesis{name: name}, nil
	}
	return nil, fmt.Errorf("jepsen: unknown nemesis %q (%s, none)", name, strings.Join(Nemeses(), ", "))
}

// Nemeses lists the nemesis names.
func Nemeses() []string {
	return append([]string{"leader-kill", "kill", "pause", "rolling-restart", sdsKillName, sdsPauseName,
		"partition-leader", "partition-majority", "partition-bridge"}, dataPartitions...)
}

// Names of the SDS nemeses.
const (
	sdsKillName  = "sds-kill"
	sdsPauseName = "sds-pause"
)

// sdsNemesis faults a random SDS and undoes it after a while. It needs a DataPathCluster.
//   - sds-kill SIGKILLs it and starts it again 5-10 s later (past the 3 s after which the MDMs
//     commit a silent SDS down: heartbeat_timeout + sds_down_grace), so it goes down and up;
//   - sds-pause SIGSTOPs it for 1-8 s, then SIGCONTs it. The pause spans, from run to run, less
//     and more than its lease (2 s), the MDMs' 3 s to a down and its primaries' wait for a
//     forwarded write (5 s): the SDS's own IO in flight, and the replica writes it holds when
//     it resumes, meet a cluster that has moved on without it, or has not.
type sdsNemesis struct {
	name         string
	fault, undo  string // the actions recorded
	lo, hi       time.Duration
	do, undoFunc func(DataPathCluster, int) error
}

var (
	sdsKillNemesis = sdsNemesis{name: sdsKillName, fault: "kill", undo: "start", lo: 5 * time.Second, hi: 10 * time.Second,
		do: DataPathCluster.KillSDS, undoFunc: DataPathCluster.StartSDS}
	sdsPauseNemesis = sdsNemesis{name: sdsPauseName, fault: "pause", undo: "resume", lo: time.Second, hi: 8 * time.Second,
		do: DataPathCluster.PauseSDS, undoFunc: DataPathCluster.ResumeSDS}
)

func (n sdsNemesis) Name() string { return n.name }

func (n sdsNemesis) Inject(ctx context.Context, c Cluster, rng *rand.Rand, rec *NemesisRecorder) error {
	d, ok := c.(DataPathCluster)
	if !ok || d.SDSCount() == 0 {
		return fmt.Errorf("%s: the cluster has no SDSs (use the block workload)", n.name)
	}
	i := rng.Intn(d.SDSCount())
	if err := rec.DoNamed(n.name, n.fault, d.SDSID(i), func() error { return n.do(d, i) }); err != nil {
		return err
	}
	rec.Fault(n.name)
	sleep(ctx, between(rng, n.lo, n.hi))
	return rec.DoNamed(n.name, n.undo, d.SDSID(i), func() error { return n.undoFunc(d, i) })
}

// partitionNemesis cuts the network between MDMs for 3-6 s, then heals it. Kinds:
//   - leader: the current leader alone on one side, every other MDM on the other;
//   - majority: a random minority (n/2 MDMs) against the majority;
//   - bridge: two halves that share one MDM, which alone talks to both sides.
//
// It needs a backend that implements Partitioner (netns, docker).
type partitionNemesis struct{ kind string }

func (n partitionNemesis) Name() string { return "partition-" + n.kind }

func (n partitionNemesis) Inject(ctx context.Context, c Cluster, rng *rand.Rand, rec *NemesisRecorder) error {
	p, ok := c.(Partitioner)
	if !ok {
		return fmt.Errorf("%s: the backend cannot partition (use netns or docker)", n.Name())
	}
	groups, err := partitionGroups(n.kind, len(c.Nodes()), rng, func() (int, bool) { return waitLeader(ctx, c, 10*time.Second) })
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name(), err)
	}
	if err := rec.DoNamed(n.Name(), "partition", describeGroups(c.Nodes(), groups), func() error { return p.Partition(groups) }); err != nil {
		// A half-made partition is still healed.
		rec.DoNamed(n.Name(), "heal", "network", func() error { return c.Heal(context.Background()) })
		return err
	}
	rec.Fault(n.Name())
	sleep(ctx, between(rng, 3*time.Second, 6*time.Second))
	return rec.DoNamed(n.Name(), "heal", "network", func() error { return c.Heal(context.Background()) })
}

// partitionGroups picks the groups of a partition of n nodes (kinds as partitionNemesis);
// leader finds the leader for kind "leader".
func partitionGroups(kind string, n int, rng *rand.Rand, leader func() (int, bool)) ([][]int, error) {
	perm := rng.Perm(n)
	switch kind {
	case "leader":
		l, ok := leader()
		if !ok {
			return nil, fmt.Errorf("no leader to isolate")
		}
		var rest []int
		for i := 0; i < n; i++ {
			if i != l {
				rest = append(rest, i)
			}
		}
		return [][]int{{l}, rest}, nil
	case "majority":
		return [][]int{perm[:n/2], perm[n/2:]}, nil
	case "bridge":
		if n < 3 {
			return nil, fmt.Errorf("a bridge needs 3 nodes, have %d", n)
		}
		mid := n / 2
		return [][]int{perm[:mid+1], perm[mid:]}, nil
	}
	return nil, fmt.Errorf("unknown partition kind %q", kind)
}

// Names of the data path's partition nemeses.
const (
	partitionSDS      = "partition-sds"
	partitionSDSMDM   = "partition-sds-mdm"
	partitionSDSPeers = "partition-sds-peers"
	partitionSDCSDS   = "partition-sdc-sds"
	partitionSDSLdr   = "partition-sds-leader"
	partitionSDCLdr   = "partition-sdc-leader"
)

var dataPartitions = []string{partitionSDS, partitionSDSMDM, partitionSDSPeers, partitionSDCSDS, partitionSDSLdr, partitionSDCLdr}

// sdsFault tells whether the nemesis action is the start of a fault of an SDS: a kill, a pause
// or a cut of the data path. After one, the token ledger can differ from the history: a
// killed SDS loses the counts it had not sent, a write retried after its chunk moved is counted
// by its new copies too, and a read sent again after its answer was lost is counted twice.
func sdsFault(nemesis, action string) bool {
	for _, n := range []sdsNemesis{sdsKillNemesis, sdsPauseNemesis} {
		if nemesis == n.name {
			return action == n.fault
		}
	}
	return slices.Contains(dataPartitions, nemesis) && action == "partition"
}

// dataPartitionNemesis cuts a random SDS off for 2-12 s, then heals the network. The cut
// spans, from run to run, less and more than the SDS's lease (2 s), the MDMs' 3 s to a down,
// a primary's wait for a forward (5 s) and the 6-7 s to a peer-cut down (mdm/DESIGN.md "Peer
// cuts"). Unlike a pause, the SDS keeps running on its side:
//   - partition-sds: from every other process;
//   - partition-sds-mdm: from the MDMs only. It still hears the SDC and its peers, so only its
//     lease stops it serving chunks the MDMs give to others meanwhile;
//   - partition-sds-peers: from the other SDSs only. Forwards to and from it hang (no reset)
//     while it heartbeats to the MDMs as usual, until the MDMs take it (or a peer) out;
//   - partition-sdc-sds: the SDC from the SDS;
//   - partition-sds-leader: from the MDM leader only (the followers and every other process
//     still reach it): an asymmetric cut of its heartbeats, which go to the leader;
//   - partition-sdc-leader: not an SDS but the SDC, from the MDM leader only.
//
// It needs the block workload on a backend that implements ProcessPartitioner (netns, docker).
type dataPartitionNemesis struct{ name string }

func (n dataPartitionNemesis) Name() string { return n.name }

func (n dataPartitionNemesis) Inject(ctx context.Context, c Cluster, rng *rand.Rand, rec *NemesisRecorder) error {
	d, ok := c.(DataPathCluster)
	p, okp := c.(ProcessPartitioner)
	if !ok || !okp || d.SDSCount() == 0 {
		return fmt.Errorf("%s: needs the block workload on a backend that cuts any process (netns, docker)", n.name)
	}
	var leader string
	if n.name == partitionSDSLdr || n.name == partitionSDCLdr {
		l, ok := waitLeader(ctx, c, 10*time.Second)
		if !ok {
			return fmt.Errorf("%s: no leader to cut from", n.name)
		}
		leader = c.Nodes()[l].ID
	}
	groups, err := dataPartitionGroups(n.name, p.Processes(), d.SDSID(rng.Intn(d.SDSCount())), leader)
	if err != nil {
		return err
	}
	var desc []string
	for _, g := range groups {
		desc = append(desc, strings.Join(g, " "))
	}
	if err := rec.DoNamed(n.name, "partition", strings.Join(desc, " | "), func() error { return p.PartitionProcesses(groups) }); err != nil {
		rec.DoNamed(n.name, "heal", "network", func() error { return c.Heal(context.Background()) })
		return err
	}
	rec.Fault(n.name)
	sleep(ctx, between(rng, 2*time.Second, 12*time.Second))
	return rec.DoNamed(n.name, "heal", "network", func() error { return c.Heal(context.Background()) })
}

// dataPartitionGroups returns the groups (as PartitionProcesses takes them) of the partition
// named for SDS sds among procs (ids mdm-N, sds-N, sdc-N); leader is the MDM leader's id, for
// the cuts from it. Each cuts a victim (sds, or the SDC for partition-sdc-leader) from the
// processes from picks: everyone but those in one group, everyone but the victim in the other.
func dataPartitionGroups(name string, procs []string, sds, leader string) ([][]string, error) {
	role := func(id string) string { r, _, _ := strings.Cut(id, "-"); return r }
	if name == partitionSDCLdr {
		i := slices.IndexFunc(procs, func(id string) bool { return role(id) == "sdc" })
		if i < 0 {
			return nil, fmt.Errorf("%s: no SDC", name)
		}
		sds = procs[i]
	}
	if !slices.Contains(procs, sds) {
		return nil, fmt.Errorf("%s: no process %q", name, sds)
	}
	var from func(id string) bool
	switch name {
	case partitionSDS:
		from = func(id string) bool { return id != sds }
	case partitionSDSMDM:
		from = func(id string) bool { return role(id) == "mdm" }
	case partitionSDSPeers:
		from = func(id string) bool { return role(id) == "sds" && id != sds }
	case partitionSDCSDS:
		from = func(id string) bool { return role(id) == "sdc" }
	case partitionSDSLdr, partitionSDCLdr:
		if !slices.Contains(procs, leader) {
			return nil, fmt.Errorf("%s: no leader %q", name, leader)
		}
		from = func(id string) bool { return id == leader }
	default:
		return nil, fmt.Errorf("unknown data path partition %q", name)
	}
	return [][]string{
		slices.DeleteFunc(slices.Clone(procs), from),
		slices.DeleteFunc(slices.Clone(procs), func(id string) bool { return id == sds }),
	}, nil
}

// runNemeses injects a random fault from list every interval (uniform in [lo, hi]) until ctx
// ends. Faults never overlap: each is healed before the next starts.
func runNemeses(ctx context.Context, c Cluster, list []Nemesis, lo, hi time.Duration, rng *rand.Rand, rec *NemesisRecorder, logf func(string, ...any)) {
	if len(list) == 0 {
		return
	}
	for {
		sleep(ctx, between(rng, lo, hi))
		if ctx.Err() != nil {
			return
		}
		n := list[rng.Intn(len(list))]
		if err := n.Inject(ctx, c, rng, rec); err != nil {
			logf("nemesis %s: %v", n.Name(), err)
		}
	}
}
