package jepsen

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPartitionDrops(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		groups [][]int
		want   [][]int
	}{
		{"isolate one", 3, [][]int{{0}, {1, 2}}, [][]int{{1, 2}, {0}, {0}}},
		{"majority of five", 5, [][]int{{3, 1}, {0, 2, 4}}, [][]int{{1, 3}, {0, 2, 4}, {1, 3}, {0, 2, 4}, {1, 3}}},
		{"bridge", 3, [][]int{{0, 1}, {1, 2}}, [][]int{{2}, nil, {0}}},
		{"bridge of five", 5, [][]int{{0, 1, 2}, {2, 3, 4}}, [][]int{{3, 4}, {3, 4}, nil, {0, 1}, {0, 1}}},
		{"node in no group is alone", 3, [][]int{{0, 1}}, [][]int{{2}, {2}, {0, 1}}},
		{"one group: nothing cut", 3, [][]int{{0, 1, 2}}, [][]int{nil, nil, nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := partitionDrops(tc.n, tc.groups)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("drops %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := partitionDrops(3, [][]int{{0, 3}}); err == nil {
		t.Fatal("node 3 of 3 accepted")
	}
}

// TestDataPartitionGroups: each data path partition cuts exactly the pairs it names.
func TestDataPartitionGroups(t *testing.T) {
	procs := []string{"mdm-1", "mdm-2", "mdm-3", "sds-1", "sds-2", "sds-3", "sdc-1"}
	for _, tc := range []struct {
		name   string
		victim string   // sds-2 unless the cut is the SDC's
		cut    []string // what the victim no longer reaches (the pairs are symmetric)
	}{
		{partitionSDS, "sds-2", []string{"mdm-1", "mdm-2", "mdm-3", "sds-1", "sds-3", "sdc-1"}},
		{partitionSDSMDM, "sds-2", []string{"mdm-1", "mdm-2", "mdm-3"}},
		{partitionSDSPeers, "sds-2", []string{"sds-1", "sds-3"}},
		{partitionSDCSDS, "sds-2", []string{"sdc-1"}},
		{partitionSDSLdr, "sds-2", []string{"mdm-3"}},
		{partitionSDCLdr, "sdc-1", []string{"mdm-3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			groups, err := dataPartitionGroups(tc.name, procs, "sds-2", "mdm-3")
			if err != nil {
				t.Fatal(err)
			}
			g, err := groupIndexes(procs, groups)
			if err != nil {
				t.Fatal(err)
			}
			drops, err := partitionDrops(len(procs), g)
			if err != nil {
				t.Fatal(err)
			}
			for i, d := range drops {
				var got []string
				for _, j := range d {
					got = append(got, procs[j])
				}
				var want []string
				switch {
				case procs[i] == tc.victim:
					want = tc.cut
				case slices.Contains(tc.cut, procs[i]):
					want = []string{tc.victim}
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s drops %v, want %v", procs[i], got, want)
				}
			}
		})
	}
	if _, err := dataPartitionGroups(partitionSDS, procs, "sds-9", "mdm-3"); err == nil {
		t.Fatal("an unknown SDS was accepted")
	}
	if _, err := dataPartitionGroups(partitionSDSLdr, procs, "sds-2", ""); err == nil {
		t.Fatal("a cut from the leader was made without a leader")
	}
	if _, err := NewNemesis(partitionSDSPeers); err != nil {
		t.Fatal(err)
	}
	for backend, ok := range map[string]bool{"netns": true, "docker": true, "local": false} {
		o := Options{ReportDir: t.TempDir(), Workload: "block", Backend: backend, Nemeses: []string{partitionSDSMDM}, Clients: 1, Keys: 1}
		if err := o.Validate(); (err == nil) != ok {
			t.Errorf("a data path partition on %s: %v", backend, err)
		}
	}
}

func TestPartitionRuleArgs(t *testing.T) {
	got := partitionRuleArgs([]string{"10.0.0.11", "10.0.0.12"})
	want := [][]string{
		{"-w", "-N", "PFLEX-JEPSEN"},
		{"-w", "-F", "PFLEX-JEPSEN"},
		{"-w", "-A", "PFLEX-JEPSEN", "-s", "10.0.0.11", "-j", "DROP"},
		{"-w", "-A", "PFLEX-JEPSEN", "-s", "10.0.0.12", "-j", "DROP"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rules %v, want %v", got, want)
	}
}

func TestPartitionGroups(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for seed := 0; seed < 50; seed++ {
		for _, n := range []int{3, 5} {
			g, err := partitionGroups("leader", n, rng, func() (int, bool) { return 1, true })
			if err != nil || len(g) != 2 || !reflect.DeepEqual(g[0], []int{1}) || len(g[1]) != n-1 {
				t.Fatalf("leader, n=%d: %v %v", n, g, err)
			}
			g, _ = partitionGroups("majority", n, rng, nil)
			if len(g[0]) != n/2 || len(g[1]) != n-n/2 || overlap(g[0], g[1]) != 0 {
				t.Fatalf("majority, n=%d: %v", n, g)
			}
			g, _ = partitionGroups("bridge", n, rng, nil)
			if overlap(g[0], g[1]) != 1 || len(g[0])+len(g[1]) != n+1 {
				t.Fatalf("bridge, n=%d: %v", n, g)
			}
			drops, _ := partitionDrops(n, g)
			cut := 0
			for _, d := range drops {
				if len(d) > 0 {
					cut++
				}
			}
			if cut != n-1 { // everyone but the bridge node loses someone
				t.Fatalf("bridge, n=%d: %v cuts %d nodes", n, g, cut)
			}
		}
	}
	if _, err := partitionGroups("leader", 3, rng, func() (int, bool) { return -1, false }); err == nil {
		t.Fatal("no leader accepted")
	}
}

func overlap(a, b []int) int {
	n := 0
	for _, x := range a {
		for _, y := range b {
			if x == y {
				n++
			}
		}
	}
	return n
}

// TestNetnsCleanup makes namespaces, cuts, heals twice, closes twice: nothing is left, and a
// dead run's namespace is removed by the next run.
func TestNetnsCleanup(t *testing.T) {
	if err := NetnsAvailable(); err != nil {
		t.Skip(err)
	}
	n, err := newNetnsNet()
	if err != nil {
		t.Fatal(err)
	}
	defer n.close()
	t.Logf("iptables: %s", n.fw.bin)
	if _, err := n.listen("a", "mdm", 3); err != nil {
		t.Fatal(err)
	}
	if _, err := n.listen("b", "mdm", 3); err != nil {
		t.Fatal(err)
	}
	if err := n.fw.cut("a", []string{n.addrs["b"]}); err != nil {
		t.Fatal(err)
	}
	if err := n.fw.cut("a", []string{n.addrs["b"]}); err != nil { // again: replaces
		t.Fatal(err)
	}
	out, _ := n.fw.run("a", "-w", "-S")
	if strings.Count(out, "-j DROP") != 1 || strings.Count(out, "-j "+partitionChain) != 1 {
		t.Fatalf("rules after two cuts:\n%s", out)
	}
	for k := 0; k < 2; k++ {
		for _, id := range []string{"a", "b"} {
			if err := n.fw.clear(id); err != nil {
				t.Fatalf("clear %s #%d: %v", id, k, err)
			}
		}
	}
	for k := 0; k < 2; k++ {
		if err := n.close(); err != nil {
			t.Fatalf("close #%d: %v", k, err)
		}
	}
	for _, ns := range []string{n.ns("a"), n.ns("b"), n.switchNS()} {
		if netnsExists(ns) {
			t.Fatalf("%s left", ns)
		}
	}
	if linkExists(n.hostIf) {
		t.Fatalf("link %s left", n.hostIf)
	}

	// A namespace of a run whose harness is gone.
	dead := 4000000
	for pidAlive(dead) {
		dead++
	}
	stale := fmt.Sprintf("%s%d-beef-sw", netnsPrefix, dead)
	if err := ipCmd("netns", "add", stale); err != nil {
		t.Fatal(err)
	}
	defer deleteNetns(stale)
	gone := CleanStaleNetns()
	if netnsExists(stale) || !slices.Contains(gone, stale) {
		t.Fatalf("stale %s not removed (removed %v)", stale, gone)
	}
}

// TestSmokeLabelsPartitionLeaderNetns: three MDMs, each in its own network namespace; the
// leader is cut off from the others every few seconds. Valid, with partitions injected and
// operations acknowledged, and nothing left behind.
func TestSmokeLabelsPartitionLeaderNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three MDMs in network namespaces for about 30 s")
	}
	if err := NetnsAvailable(); err != nil {
		t.Skip(err)
	}
	o := Options{
		Binary: buildPflex(t), Backend: "netns", Workload: "labels",
		Nemeses: []string{"partition-leader"}, Time: 20 * time.Second, Recovery: 5 * time.Second,
		Clients: 6, Keys: 4, NemesisMin: 2 * time.Second, NemesisMax: 3 * time.Second,
	}
	v := smokeRun(t, "pflex-jepsen-netns-", o)
	if n := v.Faults["partition-leader"]; n < 2 {
		t.Fatalf("only %d partitions injected", n)
	}
	if v.Ops.OK < 200 {
		t.Fatalf("only %d operations acknowledged", v.Ops.OK)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), fmt.Sprintf("%s%d-", netnsPrefix, os.Getpid())) {
		t.Fatalf("namespaces left after the run:\n%s", out)
	}
}

// TestSmokeBlockDataPartitionsNetns: the block workload while an SDS is cut from everyone, from
// the MDMs, from its peers, or the SDC from it (each process in its own namespace). Block
// registers linearizable and two equal copies of every chunk once the pool settled: an SDS cut
// from the MDMs keeps serving the SDC until its lease lapses, and must not acknowledge a write
// the MDMs' new layout does not hold.
func TestSmokeBlockDataPartitionsNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts seven processes in network namespaces for about a minute")
	}
	if err := NetnsAvailable(); err != nil {
		t.Skip(err)
	}
	o := Options{
		Binary: buildPflex(t), Backend: "netns", Workload: "block", Nemeses: dataPartitions,
		Time: 30 * time.Second, Recovery: 5 * time.Second, Clients: 8, Keys: 4,
		NemesisMin: time.Second, NemesisMax: 2 * time.Second,
	}
	v := smokeRun(t, "pflex-jepsen-block-cut-", o)
	if v.FaultCount() < 2 || v.ByF["write"] < 100 || v.ByF["read"] < 100 {
		t.Fatalf("too little happened: %v faults, %v", v.Faults, v.ByF)
	}
}

// TestSmokeLabelsPartitionDocker: three MDM containers of an image built FROM scratch from this
// tree's binary, on a private network; a bridge partition every few seconds. Valid, and every
// container and the network are gone afterwards.
func TestSmokeLabelsPartitionDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three MDM containers for about 30 s")
	}
	if err := DockerAvailable(); err != nil {
		t.Skip(err)
	}
	o := Options{
		Binary: buildPflex(t), Backend: "docker", Image: "pflex:jepsen-test", RebuildImage: true,
		Workload: "labels", Nemeses: []string{"partition-bridge", "partition-leader"},
		Time: 15 * time.Second, Recovery: 4 * time.Second, Clients: 6, Keys: 4,
		NemesisMin: 2 * time.Second, NemesisMax: 3 * time.Second,
	}
	t.Cleanup(func() { docker("rmi", o.Image) })
	v := smokeRun(t, "pflex-jepsen-docker-", o)
	if n := v.FaultCount(); n < 2 {
		t.Fatalf("only %d partitions injected", n)
	}
	if v.Ops.OK < 200 {
		t.Fatalf("only %d operations acknowledged", v.Ops.OK)
	}
	mine := fmt.Sprintf("name=%s%d-", netnsPrefix, os.Getpid())
	for _, args := range [][]string{{"ps", "-aq", "--filter", mine}, {"network", "ls", "-q", "--filter", mine}} {
		if out, err := docker(args...); err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("docker %v after the run: %q %v", args, out, err)
		}
	}
}

// TestSmokeBlockDataPartitionsDocker: the data path cuts on containers (three MDMs, three
// SDSs, the SDC): an SDS cut from everyone, and the SDC cut from an SDS. Valid: linearizable
// blocks, equal copies, progress after the heal.
func TestSmokeBlockDataPartitionsDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts seven containers for about a minute")
	}
	if err := DockerAvailable(); err != nil {
		t.Skip(err)
	}
	o := Options{
		Binary: buildPflex(t), Backend: "docker", Image: "pflex:jepsen-test-data", RebuildImage: true,
		Workload: "block", Nemeses: []string{partitionSDCSDS, partitionSDS},
		Time: 25 * time.Second, Recovery: 5 * time.Second, Clients: 8, Keys: 4,
		NemesisMin: time.Second, NemesisMax: 2 * time.Second,
	}
	t.Cleanup(func() { docker("rmi", o.Image) })
	v := smokeRun(t, "pflex-jepsen-docker-cut-", o)
	if v.FaultCount() < 2 || v.ByF["write"] < 100 || v.ByF["read"] < 100 {
		t.Fatalf("too little happened: %v faults, %v", v.Faults, v.ByF)
	}
}

// TestDockerCleanup: the network of a run whose harness is gone is removed by the next run, and
// removing a run twice is fine.
func TestDockerCleanup(t *testing.T) {
	if err := DockerAvailable(); err != nil {
		t.Skip(err)
	}
	dead := 4000000
	for pidAlive(dead) {
		dead++
	}
	stale := fmt.Sprintf("%s%d-beef", netnsPrefix, dead)
	if _, err := docker("network", "create", "--label", "pflex.jepsen=test", stale); err != nil {
		t.Fatal(err)
	}
	defer removeDockerRun(stale)
	gone := CleanStaleDocker()
	if _, err := docker("network", "inspect", stale); err == nil || !slices.Contains(gone, stale) {
		t.Fatalf("stale network %s not removed (removed %v)", stale, gone)
	}
	for k := 0; k < 2; k++ {
		if err := removeDockerRun(stale); err != nil {
			t.Fatalf("remove #%d: %v", k, err)
		}
	}
}
