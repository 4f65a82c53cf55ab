package jepsen

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Partitions are iptables DROP rules in each node's own network namespace (a netns the harness
// made, or a container's, entered with nsenter). Node i drops every packet whose source is a
// node it shares no group with; the relation is symmetric, so cutting INPUT on both sides cuts
// both directions (TCP connections hang as on a real partition; nothing is refused). The
// harness's own address is never dropped: clients and the status poller reach every node.
// Every rule lives in one chain, PFLEX-JEPSEN, jumped to from INPUT; healing deletes the
// jump and the chain.

// partitionChain is the iptables chain that holds every partition rule.
const partitionChain = "PFLEX-JEPSEN"

// ErrNoIptables is returned when no working iptables binary is found.
var ErrNoIptables = errors.New("jepsen: no working iptables (iptables, iptables-nft or iptables-legacy)")

// partitionDrops returns, for each of n nodes, the nodes whose packets it must drop so that two
// nodes talk iff some group holds both. A node in no group is cut from every other node.
// Groups may overlap (a bridge: the shared node talks to both sides).
func partitionDrops(n int, groups [][]int) ([][]int, error) {
	talk := make([][]bool, n)
	for i := range talk {
		talk[i] = make([]bool, n)
		talk[i][i] = true
	}
	for _, g := range groups {
		for _, i := range g {
			if i < 0 || i >= n {
				return nil, fmt.Errorf("jepsen: partition: node %d out of range (%d nodes)", i, n)
			}
		}
	}
	for _, g := range groups {
		for _, i := range g {
			for _, j := range g {
				talk[i][j] = true
			}
		}
	}
	drops := make([][]int, n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			if !talk[i][j] {
				drops[i] = append(drops[i], j)
			}
		}
	}
	return drops, nil
}

// groupIndexes turns groups of ids into groups of their indexes in ids.
func groupIndexes(ids []string, groups [][]string) ([][]int, error) {
	out := make([][]int, len(groups))
	for k, group := range groups {
		for _, id := range group {
			i := slices.Index(ids, id)
			if i < 0 {
				return nil, fmt.Errorf("jepsen: partition: no process %q", id)
			}
			out[k] = append(out[k], i)
		}
	}
	return out, nil
}

// partitionRuleArgs are the iptables invocations (without the binary) that make a node drop the
// given source addresses: the chain (its creation may fail when it exists), the jump, a flush,
// one DROP per address.
func partitionRuleArgs(sources []string) [][]string {
	args := [][]string{
		{"-w", "-N", partitionChain},
		{"-w", "-F", partitionChain},
	}
	for _, s := range sources {
		args = append(args, []string{"-w", "-A", partitionChain, "-s", s, "-j", "DROP"})
	}
	return args
}

// describeGroups renders groups of node indexes with node ids: "mdm-1 | mdm-2 mdm-3".
func describeGroups(nodes []Node, groups [][]int) string {
	var parts []string
	for _, g := range groups {
		var ids []string
		for _, i := range g {
			ids = append(ids, nodes[i].ID)
		}
		sort.Strings(ids)
		parts = append(parts, strings.Join(ids, " "))
	}
	return strings.Join(parts, " | ")
}

// firewall runs iptables inside one node's network namespace.
type firewall struct {
	bin string // iptables binary (see pickIptables)
	// enter is the argv prefix that runs a command in the node's namespace
	// (ip netns exec NS, nsenter -t PID -n).
	enter func(node string) ([]string, error)
}

func (f firewall) run(node string, args ...string) (string, error) {
	pre, err := f.enter(node)
	if err != nil {
		return "", err
	}
	return f.runIn(pre, args...)
}

// runIn runs iptables with the namespace prefix pre (from enter), so that a sequence of
// commands enters the node once (a docker inspect per command would add ~100 ms each).
func (f firewall) runIn(pre []string, args ...string) (string, error) {
	argv := append(append(append([]string(nil), pre...), f.bin), args...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("jepsen: %s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// cut makes node drop every packet from sources (replacing what it dropped before).
func (f firewall) cut(node string, sources []string) error {
	pre, err := f.enter(node)
	if err != nil {
		return err
	}
	for k, a := range partitionRuleArgs(sources) {
		if _, err := f.runIn(pre, a...); err != nil && k > 0 { // -N fails when the chain exists
			return err
		}
	}
	if _, err := f.runIn(pre, "-w", "-C", "INPUT", "-j", partitionChain); err != nil {
		if _, err := f.runIn(pre, "-w", "-I", "INPUT", "1", "-j", partitionChain); err != nil {
			return err
		}
	}
	return nil
}

// clear removes every rule cut added on node: the jumps, the chain's rules, the chain. It is
// idempotent; it fails only when rules are still there afterwards.
func (f firewall) clear(node string) error {
	pre, err := f.enter(node)
	if err != nil {
		return err
	}
	for k := 0; k < 10; k++ {
		if _, err := f.runIn(pre, "-w", "-D", "INPUT", "-j", partitionChain); err != nil {
			break
		}
	}
	f.runIn(pre, "-w", "-F", partitionChain)
	f.runIn(pre, "-w", "-X", partitionChain)
	out, err := f.runIn(pre, "-w", "-S")
	if err != nil {
		return err
	}
	if strings.Contains(out, partitionChain) {
		return fmt.Errorf("jepsen: %s: partition rules left after heal:\n%s", node, out)
	}
	return nil
}

// partition applies groups (of indexes into ids) with fw: every node's rules at once, so the
// cut takes one iptables round (a few ms) rather than one per node. addrs are the nodes'
// addresses, in the order of ids.
func partition(fw firewall, ids, addrs []string, groups [][]int) error {
	drops, err := partitionDrops(len(ids), groups)
	if err != nil {
		return err
	}
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, d := range drops {
		var src []string
		for _, j := range d {
			src = append(src, addrs[j])
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fw.cut(ids[i], src) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// processAddrs returns the ids of specs and their addresses in addrs, which mu guards.
func processAddrs(specs []procSpec, mu *sync.Mutex, addrs map[string]string) (ids, out []string) {
	mu.Lock()
	defer mu.Unlock()
	for _, s := range specs {
		ids, out = append(ids, s.ID), append(out, addrs[s.ID])
	}
	return ids, out
}

// healAll clears the rules of every node in ids at once; skip tells nodes to leave alone. A
// node found not running (ErrNodeDown: it died meanwhile) is no error: its namespace goes with
// it, and it comes back in a new one without rules.
func healAll(fw firewall, ids []string, skip func(i int) bool) error {
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		if skip != nil && skip(i) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fw.clear(id); !errors.Is(err, ErrNodeDown) {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pickIptables returns the first iptables binary that works in a namespace (probe runs it there
// with the given arguments): the system's `iptables` (nft or legacy, whichever the host
// selected), then iptables-nft, then iptables-legacy. Docker uses `iptables` too, so inside a
// container the harness adds rules with the same backend as Docker's own.
func pickIptables(probe func(bin string) error) (string, error) {
	var errs []string
	for _, bin := range []string{"iptables", "iptables-nft", "iptables-legacy"} {
		path, err := exec.LookPath(bin)
		if err != nil {
			continue
		}
		if err := probe(path); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		return path, nil
	}
	if len(errs) == 0 {
		return "", ErrNoIptables
	}
	return "", fmt.Errorf("%w: %s", ErrNoIptables, strings.Join(errs, "; "))
}
