package mdmtest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"pflex/internal/api"
	"pflex/mdm"
)

// ProcCluster runs MDMs as real `pflex mdm` processes, so that they can be killed with SIGKILL.
type ProcCluster struct {
	t     testing.TB
	Bin   string
	Dir   string
	Cfgs  []*mdm.Config
	procs []*exec.Cmd
	Token string
}

// BuildBinary builds ./cmd/pflex into a temporary directory and returns its path.
func BuildBinary(t testing.TB) string {
	t.Helper()
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("find module root: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "pflex")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/pflex")
	cmd.Dir = strings.TrimSpace(string(root))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pflex: %v\n%s", err, out)
	}
	return bin
}

// RenderHCL writes cfg as an HCL config file.
func RenderHCL(cfg *mdm.Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "node_id = %q\ndata_dir = %q\napi_addr = %q\nraft_addr = %q\nlog_level = %q\n",
		cfg.NodeID, cfg.DataDir, cfg.APIAddr, cfg.RaftAddr, cfg.LogLevel)
	if cfg.AdminToken != "" {
		fmt.Fprintf(&b, "admin_token = %q\n", cfg.AdminToken)
	}
	if cfg.ClusterKey != "" {
		fmt.Fprintf(&b, "cluster_key = %q\n", cfg.ClusterKey)
	}
	if cfg.BootstrapExpect > 0 {
		fmt.Fprintf(&b, "bootstrap_expect = %d\n", cfg.BootstrapExpect)
	}
	for _, kv := range [][2]string{{"sds_down_grace", cfg.SDSDownGrace}, {"heartbeat_timeout", cfg.HeartbeatTimeout}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, "%s = %q\n", kv[0], kv[1])
		}
	}
	if g := cfg.Gossip; g != nil {
		fmt.Fprintf(&b, "gossip {\n  bind_addr = %q\n  join = [%s]\n  key = %q\n}\n", g.BindAddr, quoteList(g.Join), g.Key)
	}
	for _, p := range cfg.Peers {
		fmt.Fprintf(&b, "peer %q {\n  raft_addr = %q\n  api_addr = %q\n}\n", p.ID, p.RaftAddr, p.APIAddr)
	}
	if r := cfg.Raft; r != nil {
		b.WriteString("raft {\n")
		for _, kv := range [][2]string{{"heartbeat_timeout", r.HeartbeatTimeout}, {"election_timeout", r.ElectionTimeout},
			{"leader_lease_timeout", r.LeaderLeaseTimeout}, {"commit_timeout", r.CommitTimeout}} {
			if kv[1] != "" {
				fmt.Fprintf(&b, "  %s = %q\n", kv[0], kv[1])
			}
		}
		if r.NoSync {
			b.WriteString("  no_sync = true\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func quoteList(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// StartGossipProcesses starts n `pflex mdm` processes that bootstrap over gossip
// (bootstrap_expect = n); tune edits each config before it is written.
func StartGossipProcesses(t testing.TB, bin string, n int, tune func(*mdm.Config)) *ProcCluster {
	t.Helper()
	dir := t.TempDir()
	p := &ProcCluster{t: t, Bin: bin, Dir: dir, Cfgs: GossipConfigs(t, dir, n), procs: make([]*exec.Cmd, n), Token: TestClusterKey}
	for _, cfg := range p.Cfgs {
		cfg.Raft = nil
		cfg.LogLevel = "info"
		if tune != nil {
			tune(cfg)
		}
	}
	for i := range p.Cfgs {
		p.Start(i)
	}
	t.Cleanup(p.Close)
	return p
}

// Proc is another pflex process (an SDS, an SDC) run beside a ProcCluster.
type Proc struct {
	t      testing.TB
	Name   string
	Role   string
	Config string // HCL text
	bin    string
	dir    string
	cmd    *exec.Cmd
	done   chan struct{}
}

// AddProc prepares `pflex <role> -config <name>.hcl` with the given HCL; call Start.
func (p *ProcCluster) AddProc(name, role, hcl string) *Proc {
	x := &Proc{t: p.t, Name: name, Role: role, Config: hcl, bin: p.Bin, dir: p.Dir}
	p.t.Cleanup(func() {
		x.Kill9()
		if p.t.Failed() {
			p.t.Logf("log of %s %s (tail):\n%s", role, name, tail(x.Log(), logTail))
		}
	})
	return x
}

// Start starts the process (again).
func (x *Proc) Start() {
	x.t.Helper()
	if x.cmd != nil {
		return
	}
	path := filepath.Join(x.dir, x.Name+".hcl")
	if err := os.WriteFile(path, []byte(x.Config), 0o600); err != nil {
		x.t.Fatal(err)
	}
	logf, err := os.OpenFile(filepath.Join(x.dir, x.Name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		x.t.Fatal(err)
	}
	cmd := exec.Command(x.bin, x.Role, "-config", path)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		x.t.Fatalf("start %s: %v", x.Name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	x.cmd, x.done = cmd, done
}

// Pid is the running process's id (0 when it is not running).
func (x *Proc) Pid() int {
	if x.cmd == nil || x.cmd.Process == nil {
		return 0
	}
	return x.cmd.Process.Pid
}

// Kill9 kills the process with SIGKILL.
func (x *Proc) Kill9() {
	if x.cmd != nil {
		x.cmd.Process.Signal(syscall.SIGKILL)
		<-x.done
		x.cmd = nil
	}
}

// Pause stops the process with SIGSTOP; Resume continues it.
func (x *Proc) Pause()  { x.signal(syscall.SIGSTOP) }
func (x *Proc) Resume() { x.signal(syscall.SIGCONT) }

func (x *Proc) signal(s syscall.Signal) {
	if x.cmd != nil {
		x.cmd.Process.Signal(s)
	}
}

// Log returns the process's log.
func (x *Proc) Log() string {
	b, _ := os.ReadFile(filepath.Join(x.dir, x.Name+".log"))
	return string(b)
}

// StartProcesses starts n `pflex mdm` processes with the given raft timing (nil: defaults).
func StartProcesses(t testing.TB, bin string, n int, raftSettings *mdm.RaftSettings) *ProcCluster {
	t.Helper()
	dir := t.TempDir()
	p := &ProcCluster{t: t, Bin: bin, Dir: dir, Cfgs: Configs(t, dir, n, ""), procs: make([]*exec.Cmd, n)}
	for _, cfg := range p.Cfgs {
		cfg.Raft = raftSettings
		cfg.LogLevel = "info"
	}
	for i := range p.Cfgs {
		p.Start(i)
	}
	t.Cleanup(p.Close)
	return p
}

// Start (re)starts process i.
func (p *ProcCluster) Start(i int) {
	p.t.Helper()
	if p.procs[i] != nil {
		return
	}
	cfg := p.Cfgs[i]
	path := filepath.Join(p.Dir, cfg.NodeID+".hcl")
	if err := os.WriteFile(path, []byte(RenderHCL(cfg)), 0o600); err != nil {
		p.t.Fatal(err)
	}
	logf, err := os.OpenFile(filepath.Join(p.Dir, cfg.NodeID+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.Bin, "mdm", "-config", path)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", cfg.NodeID, err)
	}
	go func() { cmd.Wait(); logf.Close() }()
	p.procs[i] = cmd
}

// Kill9 kills process i with SIGKILL.
func (p *ProcCluster) Kill9(i int) {
	if c := p.procs[i]; c != nil {
		c.Process.Signal(syscall.SIGKILL)
		p.procs[i] = nil
		// Wait until its API port is closed so a restart can bind it.
		for j := 0; j < 100 && p.status(i) != nil; j++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Close kills every process.
func (p *ProcCluster) Close() {
	for i := range p.procs {
		p.Kill9(i)
	}
	if p.t.Failed() {
		for i, cfg := range p.Cfgs {
			p.t.Logf("log of mdm %s (tail):\n%s", cfg.NodeID, tail(p.Log(i), logTail))
		}
	}
}

// logTail is how much of each process's log (bytes) a failed test prints.
const logTail = 4000

// Running reports whether process i is started.
func (p *ProcCluster) Running(i int) bool { return p.procs[i] != nil }

// Pid is process i's id (0 when it is not running).
func (p *ProcCluster) Pid(i int) int {
	if p.procs[i] == nil {
		return 0
	}
	return p.procs[i].Process.Pid
}

// URL is process i's API base URL.
func (p *ProcCluster) URL(i int) string { return "http://" + p.Cfgs[i].APIAddr }

// Log returns process i's log.
func (p *ProcCluster) Log(i int) string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, p.Cfgs[i].NodeID+".log"))
	return string(b)
}

func (p *ProcCluster) status(i int) *api.ClusterStatus {
	var st api.ClusterStatus
	code, _, err := DoJSON(p.URL(i), p.Token, http.MethodGet, "/cluster/status?stale=1", nil, &st)
	if err != nil || code != http.StatusOK {
		return nil
	}
	return &st
}

// Status is process i's own view, or nil if it does not answer.
func (p *ProcCluster) Status(i int) *api.ClusterStatus { return p.status(i) }

// WaitLeader waits until a running process is leader and returns its index.
func (p *ProcCluster) WaitLeader(timeout time.Duration) int {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for i := range p.Cfgs {
			if p.procs[i] == nil {
				continue
			}
			if st := p.status(i); st != nil && st.State == "leader" {
				return i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range p.Cfgs {
		p.t.Logf("%s log tail:\n%s", p.Cfgs[i].NodeID, tail(p.Log(i), 2000))
	}
	p.t.Fatalf("no leader within %s", timeout)
	return -1
}

// WaitConverged waits until every running process reports the same applied index and digest.
func (p *ProcCluster) WaitConverged(timeout time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var sts []*api.ClusterStatus
		ok := true
		for i := range p.Cfgs {
			if p.procs[i] == nil {
				continue
			}
			st := p.status(i)
			ok = ok && st != nil
			sts = append(sts, st)
		}
		if ok && len(sts) > 0 {
			same := true
			for _, s := range sts[1:] {
				same = same && s.FSMIndex == sts[0].FSMIndex && s.Digest == sts[0].Digest && s.AppliedIndex == sts[0].AppliedIndex
			}
			if same {
				return sts[0].Digest
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("processes did not converge within %s", timeout)
	return ""
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
