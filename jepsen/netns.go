package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The netns backend runs every process of a LocalCluster (MDMs, and SDSs and the SDC with a data
// path) in a network namespace of its own, pflexj-<pid>-<r>-<id>, with its own address
// 10.213.B.(10+k) on eth0, a veth whose other end is a port of a bridge in a "switch"
// namespace (pflexj-<pid>-<r>-sw). The harness reaches the nodes through one more veth, from
// the root namespace (pfj<pid hex>-<r>, 10.213.B.1) to the switch. The bridge lives in its own
// namespace so that the host's firewall (Docker sets FORWARD to DROP, and bridged frames go
// through it with br_netfilter) never sees node-to-node traffic. Processes start with
// `ip netns exec`, which execs them: signals reach the pflex process itself. Every process
// listens on its role's default ports (DESIGN.md §12) at its own address.

// netnsPrefix starts the name of every namespace the backend creates; the owner's pid follows,
// so a later run can tell a dead run's namespaces from a live one's.
const netnsPrefix = "pflexj-"

// netnsPorts are the ports of each role: MDM API, raft, gossip; SDS API, mgmt, data, gossip;
// SDC API, mgmt, NBD, gossip.
var netnsPorts = map[string][]int{
	"mdm": {8001, 8101, 7901},
	"sds": {9101, 9201, 9701, 7911},
	"sdc": {8301, 8401, 10809, 7921},
}

// NetnsAvailable says why the netns backend cannot run here (nil: it can): it needs root, ip
// (iproute2) and iptables.
func NetnsAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("jepsen: the netns backend needs root (network namespaces, veths, iptables)")
	}
	for _, bin := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("jepsen: the netns backend needs %s: %w", bin, err)
		}
	}
	// Root without CAP_SYS_ADMIN (an unprivileged container) cannot make namespaces.
	probe := fmt.Sprintf("%sprobe-%d", netnsPrefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		return fmt.Errorf("jepsen: cannot create a network namespace here: %v: %s", err, out)
	}
	exec.Command("ip", "netns", "del", probe).Run()
	return nil
}

// netnsNet is the namespaces, links and addresses of one run.
type netnsNet struct {
	run    string // <pid>-<r>
	subnet string // 10.213.B (a /24)
	hostIf string // root-namespace end of the harness's veth
	fw     firewall

	mu    sync.Mutex
	addrs map[string]string // process id -> its address
	nses  []string          // node namespaces, in creation order
}

func (n *netnsNet) switchNS() string      { return netnsPrefix + n.run + "-sw" }
func (n *netnsNet) ns(id string) string   { return netnsPrefix + n.run + "-" + id }
func (n *netnsNet) hostAddr() string      { return n.subnet + ".1" }
func (n *netnsNet) nodeAddr(k int) string { return fmt.Sprintf("%s.%d", n.subnet, 10+k) }

// ipCmd runs ip with args.
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("jepsen: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetnsNet removes what dead runs left, picks a free /24 and makes the switch namespace, its
// bridge and the harness's link to it.
func newNetnsNet() (*netnsNet, error) {
	if err := NetnsAvailable(); err != nil {
		return nil, err
	}
	CleanStaleNetns()
	r := rand.Intn(1 << 16)
	n := &netnsNet{run: fmt.Sprintf("%d-%04x", os.Getpid(), r), hostIf: fmt.Sprintf("pfj%x-%04x", os.Getpid(), r),
		addrs: map[string]string{}}
	subnet, err := freeSubnet("10.213")
	if err != nil {
		return nil, err
	}
	n.subnet = subnet
	sw := n.switchNS()
	steps := [][]string{
		{"netns", "add", sw},
		{"-n", sw, "link", "add", "br0", "type", "bridge"},
		{"-n", sw, "link", "set", "br0", "up"},
		{"link", "add", n.hostIf, "type", "veth", "peer", "name", "host", "netns", sw},
		{"-n", sw, "link", "set", "host", "master", "br0", "up"},
		{"addr", "add", n.hostAddr() + "/24", "dev", n.hostIf},
		{"link", "set", n.hostIf, "up"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			n.close()
			return nil, err
		}
	}
	n.fw = firewall{enter: func(node string) ([]string, error) { return []string{"ip", "netns", "exec", n.ns(node)}, nil }}
	bin, err := pickIptables(func(bin string) error {
		out, err := exec.Command("ip", "netns", "exec", sw, bin, "-w", "-S", "INPUT").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", bin, err, strings.TrimSpace(string(out)))
		}
		return nil
	})
	if err != nil {
		n.close()
		return nil, err
	}
	n.fw.bin = bin
	return n, nil
}

// freeSubnet picks a /24 under prefix (a.b) that no address or route of the host uses.
func freeSubnet(prefix string) (string, error) {
	var used strings.Builder
	for _, args := range [][]string{{"-4", "addr"}, {"-4", "route"}} {
		out, err := exec.Command("ip", args...).Output()
		if err != nil {
			return "", fmt.Errorf("jepsen: ip %s: %w", strings.Join(args, " "), err)
		}
		used.Write(out)
	}
	for _, b := range rand.Perm(256) {
		s := fmt.Sprintf("%s.%d", prefix, b)
		if !strings.Contains(used.String(), s+".") {
			return s, nil
		}
	}
	return "", fmt.Errorf("jepsen: every %s.x.0/24 is in use", prefix)
}

// listen implements procHost: the process gets a namespace and an address on first use.
func (n *netnsNet) listen(id, role string, count int) ([]string, error) {
	ps := netnsPorts[role]
	if len(ps) != count {
		return nil, fmt.Errorf("jepsen: netns: %d ports for a %s", count, role)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	addr, ok := n.addrs[id]
	if !ok {
		k := len(n.addrs)
		addr = n.nodeAddr(k)
		ns, sw, port := n.ns(id), n.switchNS(), fmt.Sprintf("p%d", k)
		n.nses = append(n.nses, ns)
		for _, s := range [][]string{
			{"netns", "add", ns},
			{"-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"-n", sw, "link", "set", port, "master", "br0", "up"},
			{"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
			{"-n", ns, "link", "set", "eth0", "up"},
			{"-n", ns, "link", "set", "lo", "up"},
		} {
			if err := ipCmd(s...); err != nil {
				return nil, err
			}
		}
		n.addrs[id] = addr
	}
	out := make([]string, count)
	for i, p := range ps {
		out[i] = fmt.Sprintf("%s:%d", addr, p)
	}
	return out, nil
}

// command implements procHost.
func (n *netnsNet) command(id string, argv []string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.ns(id)}, argv...)...)
}

// signal implements procHost: ip netns exec execs the command, so its pid is the process's.
func (n *netnsNet) signal(id string, cmd *exec.Cmd, sig syscall.Signal) error {
	return cmd.Process.Signal(sig)
}

// close kills whatever still runs in the run's namespaces and deletes them, the veths (they
// go with their namespaces) and the harness's link. Safe to call twice.
func (n *netnsNet) close() error {
	n.mu.Lock()
	nses := append(append([]string(nil), n.nses...), n.switchNS())
	n.mu.Unlock()
	var errs []error
	for _, ns := range nses {
		if err := deleteNetns(ns); err != nil {
			errs = append(errs, err)
		}
	}
	if linkExists(n.hostIf) {
		if err := ipCmd("link", "del", n.hostIf); err != nil && linkExists(n.hostIf) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool { return exec.Command("ip", "link", "show", name).Run() == nil }

func netnsExists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

// deleteNetns SIGKILLs every process in ns and deletes it; an absent ns is fine.
func deleteNetns(ns string) error {
	if !netnsExists(ns) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if err := ipCmd("netns", "del", ns); err != nil && netnsExists(ns) {
		return err
	}
	return nil
}

// CleanStaleNetns deletes the namespaces and links of runs whose harness process is gone
// (their names carry its pid) and returns what it deleted.
func CleanStaleNetns() []string {
	var gone []string
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], netnsPrefix) {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(f[0], netnsPrefix), "-", 2)[0])
		if err != nil || pidAlive(pid) {
			continue
		}
		if deleteNetns(f[0]) == nil {
			gone = append(gone, f[0])
		}
	}
	out, _ = exec.Command("ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(f[1], "pfj") {
			continue
		}
		name := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
		pid, err := strconv.ParseInt(strings.SplitN(strings.TrimPrefix(name, "pfj"), "-", 2)[0], 16, 32)
		if err != nil || pidAlive(int(pid)) {
			continue
		}
		if ipCmd("link", "del", name) == nil {
			gone = append(gone, name)
		}
	}
	return gone
}

func pidAlive(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// NetnsCluster is a LocalCluster whose processes each have a network namespace and address of
// their own; it can partition the MDMs.
type NetnsCluster struct {
	*LocalCluster
	net *netnsNet
}

var (
	_ DataPathCluster    = (*NetnsCluster)(nil)
	_ Partitioner        = (*NetnsCluster)(nil)
	_ ProcessPartitioner = (*NetnsCluster)(nil)
)

// NewNetnsCluster makes the namespaces and the configs (cfg as for NewLocalCluster; addresses
// are the backend's). Close deletes every namespace, also after a failed run.
func NewNetnsCluster(cfg LocalConfig) (*NetnsCluster, error) {
	n, err := newNetnsNet()
	if err != nil {
		return nil, err
	}
	cfg.host = n
	lc, err := NewLocalCluster(cfg)
	if err != nil {
		n.close()
		return nil, err
	}
	return &NetnsCluster{LocalCluster: lc, net: n}, nil
}

// Describe says where the cluster runs.
func (c *NetnsCluster) Describe() string {
	return fmt.Sprintf("network namespaces %s*, %s.0/24, %s", netnsPrefix+c.net.run, c.net.subnet, c.net.fw.bin)
}

// Partition implements Partitioner: groups of MDM indexes; MDMs that share no group cannot
// reach each other (SDSs and the SDC reach everyone).
func (c *NetnsCluster) Partition(groups [][]int) error {
	ids, addrs := c.mdmAddrs()
	return partition(c.net.fw, ids, addrs, groups)
}

// Processes implements ProcessPartitioner: the MDMs, then the SDSs and the SDC.
func (c *NetnsCluster) Processes() []string {
	ids, _ := c.addrsOf(len(c.specs))
	return ids
}

// PartitionProcesses implements ProcessPartitioner: groups of process ids; a process in no
// group is cut from every other.
func (c *NetnsCluster) PartitionProcesses(groups [][]string) error {
	ids, addrs := c.addrsOf(len(c.specs))
	g, err := groupIndexes(ids, groups)
	if err != nil {
		return err
	}
	return partition(c.net.fw, ids, addrs, g)
}

func (c *NetnsCluster) mdmAddrs() (ids, addrs []string) { return c.addrsOf(len(c.nodes)) }

// addrsOf returns the ids and addresses of the first n processes (the MDMs come first).
func (c *NetnsCluster) addrsOf(n int) (ids, addrs []string) {
	return processAddrs(c.specs[:n], &c.net.mu, c.net.addrs)
}

// healPartition removes every partition rule from every process's namespace.
func (c *NetnsCluster) healPartition() error {
	return healAll(c.net.fw, c.Processes(), nil)
}

// Heal implements Cluster: partitions first, then paused and stopped processes.
func (c *NetnsCluster) Heal(ctx context.Context) error {
	return errors.Join(c.healPartition(), c.LocalCluster.Heal(ctx))
}

// Close implements Cluster: every process killed, every namespace and link deleted.
func (c *NetnsCluster) Close() error {
	c.LocalCluster.Close()
	return c.net.close()
}
