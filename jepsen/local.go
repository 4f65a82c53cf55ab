package jepsen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"pflex/internal/api"
	"pflex/internal/ports"
)

// LocalConfig describes a cluster of `pflex mdm` processes on loopback.
type LocalConfig struct {
	Binary string // path of the pflex binary
	Dir    string // per node: <Dir>/<id>/{mdm.hcl,data/} and <Dir>/<id>.log
	Size   int    // number of MDMs; 3 unless set
	// GossipKey is the memberlist key (base64); ClusterKey what components present.
	GossipKey  string
	ClusterKey string
	AdminToken string
	// Raft timing; empty fields keep the MDM defaults (500 ms heartbeat and election).
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout string
	LogLevel                                              string // info unless set
	// OnExit is told when a node (MDM, SDS or SDC) exits without the harness having asked it to.
	OnExit func(node string, err error)
	// DataPath adds SDSs (one sparse file device each, under Dir) and one SDC to the cluster;
	// StartDataPath starts them and creates a pool and a volume mapped to the SDC.
	DataPath  bool
	SDSs      int    // number of SDSs with DataPath; 3 unless set
	IOTimeout string // SDC io_timeout; the SDC's default (30 s) unless set
	// host places the processes (addresses, how each runs); loopback processes unless set.
	// The netns and docker backends set it.
	host procHost
}

// LocalCluster runs the MDMs as local processes: SIGKILL, SIGSTOP and SIGCONT are real
// signals, and each node keeps its ports (API, raft, gossip) across restarts.
type LocalCluster struct {
	cfg   LocalConfig
	nodes []Node
	specs []procSpec // MDMs first (index = node index), then SDSs, then the SDC
	http  *http.Client
	data  *dataPath // nil without LocalConfig.DataPath

	mu    sync.Mutex
	procs []*localProc
}

// procHost is where a cluster's processes run: the addresses they listen on, the command that
// runs one in the foreground (its exit is the process's exit) and how a signal reaches it.
type procHost interface {
	// listen returns the n addresses process id listens on (MDM: API, raft, gossip; SDS: API,
	// mgmt, data, gossip; SDC: API, mgmt, NBD, gossip).
	listen(id, role string, n int) ([]string, error)
	// command runs argv as process id.
	command(id string, argv []string) *exec.Cmd
	// signal delivers sig (SIGKILL, SIGTERM, SIGSTOP, SIGCONT) to process id, run by cmd.
	signal(id string, cmd *exec.Cmd, sig syscall.Signal) error
}

// loopbackHost runs processes on this host's loopback, on ports below the ephemeral range
// (internal/ports, which never hands out a port twice).
type loopbackHost struct{}

func (loopbackHost) listen(id, role string, n int) ([]string, error) {
	ps, err := ports.Pick(n)
	if err != nil {
		return nil, fmt.Errorf("jepsen: ports for %s: %w", id, err)
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return out, nil
}

func (loopbackHost) command(id string, argv []string) *exec.Cmd {
	return exec.Command(argv[0], argv[1:]...)
}

func (loopbackHost) signal(id string, cmd *exec.Cmd, sig syscall.Signal) error {
	return cmd.Process.Signal(sig)
}

// procSpec is how to run one process of the cluster.
type procSpec struct {
	ID   string // mdm-1, sds-2, sdc-1
	Role string // mdm, sds, sdc: the pflex subcommand
	HCL  string // config path
	API  string // its HTTP API
}

type localProc struct {
	cmd      *exec.Cmd
	done     chan struct{}
	paused   bool
	stopping bool // the harness asked it to exit
}

// DefaultGossipKey is the gossip key of harness clusters (they run on loopback only).
const DefaultGossipKey = "ZvG5M1yAbxn/f9ZTQa6wVQ1qlvSCnjPMZKW2qCS81tg="

// NewLocalCluster prepares the nodes' configs and data directories; call Start for each node
// (or StartAll).
func NewLocalCluster(cfg LocalConfig) (*LocalCluster, error) {
	if cfg.Binary == "" {
		return nil, ErrNoBinary
	}
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoBinary, err)
	}
	if cfg.Size == 0 {
		cfg.Size = 3
	}
	if cfg.GossipKey == "" {
		cfg.GossipKey = DefaultGossipKey
	}
	if cfg.ClusterKey == "" {
		cfg.ClusterKey = "jepsen-cluster-key"
	}
	if cfg.AdminToken == "" {
		cfg.AdminToken = "jepsen-admin-token"
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	if cfg.host == nil {
		cfg.host = loopbackHost{}
	}
	// Absolute, so that a container can bind-mount it at the same path.
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	c := &LocalCluster{cfg: cfg, http: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
	var join []string
	addrs := make([][]string, cfg.Size)
	for i := 0; i < cfg.Size; i++ {
		if addrs[i], err = cfg.host.listen(fmt.Sprintf("mdm-%d", i+1), "mdm", 3); err != nil {
			return nil, err
		}
		join = append(join, addrs[i][2])
	}
	for i := 0; i < cfg.Size; i++ {
		id := fmt.Sprintf("mdm-%d", i+1)
		n := Node{ID: id, API: addrs[i][0]}
		dir := filepath.Join(cfg.Dir, id)
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			return nil, err
		}
		hcl := renderMDMConfig(mdmConfig{
			ID: id, DataDir: filepath.Join(dir, "data"), API: n.API,
			Raft: addrs[i][1], Gossip: join[i], Join: join,
			GossipKey: cfg.GossipKey, ClusterKey: cfg.ClusterKey, AdminToken: cfg.AdminToken, LogLevel: cfg.LogLevel,
			BootstrapExpect: cfg.Size, HeartbeatTimeout: cfg.HeartbeatTimeout,
			ElectionTimeout: cfg.ElectionTimeout, LeaderLeaseTimeout: cfg.LeaderLeaseTimeout,
		})
		path := filepath.Join(dir, "mdm.hcl")
		if err := os.WriteFile(path, []byte(hcl), 0o600); err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
		c.specs = append(c.specs, procSpec{ID: id, Role: "mdm", HCL: path, API: n.API})
	}
	if cfg.DataPath {
		if err := c.prepareDataPath(join); err != nil {
			return nil, err
		}
	}
	c.procs = make([]*localProc, len(c.specs))
	return c, nil
}

// Describe says where the cluster runs.
func (c *LocalCluster) Describe() string { return "local processes on loopback" }

// Nodes implements Cluster.
func (c *LocalCluster) Nodes() []Node { return append([]Node(nil), c.nodes...) }

// AdminToken implements Cluster.
func (c *LocalCluster) AdminToken() string { return c.cfg.AdminToken }

// LogPath is process k's log file (appended across restarts); MDM k is node k.
func (c *LocalCluster) LogPath(k int) string {
	return filepath.Join(c.cfg.Dir, c.specs[k].ID+".log")
}

// StartAll starts every node.
func (c *LocalCluster) StartAll(ctx context.Context) error {
	for i := range c.nodes {
		if err := c.Start(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// Start implements Cluster.
func (c *LocalCluster) Start(ctx context.Context, i int) error { return c.startProc(i) }

// startProc starts process k (MDM, SDS or SDC) unless it runs.
func (c *LocalCluster) startProc(k int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.procs[k] != nil {
		return nil
	}
	spec := c.specs[k]
	logf, err := os.OpenFile(c.LogPath(k), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== jepsen: starting %s at %s\n", spec.ID, time.Now().Format(time.RFC3339Nano))
	cmd := c.cfg.host.command(spec.ID, []string{c.cfg.Binary, spec.Role, "-config", spec.HCL})
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a Ctrl-C of the harness does not reach it before Close.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("jepsen: start %s: %w", spec.ID, err)
	}
	p := &localProc{cmd: cmd, done: make(chan struct{})}
	c.procs[k] = p
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logf, "=== jepsen: %s exited at %s: %v\n", spec.ID, time.Now().Format(time.RFC3339Nano), err)
		logf.Close()
		c.mu.Lock()
		unexpected := !p.stopping
		if c.procs[k] == p {
			c.procs[k] = nil
		}
		c.mu.Unlock()
		close(p.done)
		if unexpected && c.cfg.OnExit != nil {
			c.cfg.OnExit(spec.ID, err)
		}
	}()
	return nil
}

// Kill implements Cluster: SIGKILL, then wait for the process to be reaped.
func (c *LocalCluster) Kill(i int) error { return c.stop(i, syscall.SIGKILL, 0) }

// Stop implements Cluster: SIGTERM, SIGKILL after 10 s.
func (c *LocalCluster) Stop(i int) error { return c.stop(i, syscall.SIGTERM, 10*time.Second) }

func (c *LocalCluster) stop(k int, sig syscall.Signal, grace time.Duration) error {
	c.mu.Lock()
	p := c.procs[k]
	if p == nil {
		c.mu.Unlock()
		return nil
	}
	p.stopping = true
	paused := p.paused
	c.mu.Unlock()
	id := c.specs[k].ID
	c.cfg.host.signal(id, p.cmd, sig)
	if paused {
		c.cfg.host.signal(id, p.cmd, syscall.SIGCONT)
	}
	if grace > 0 {
		select {
		case <-p.done:
		case <-time.After(grace):
			c.cfg.host.signal(id, p.cmd, syscall.SIGKILL)
		}
	}
	<-p.done
	return nil
}

// Pause implements Cluster.
func (c *LocalCluster) Pause(i int) error { return c.setPaused(i, true) }

// Resume implements Cluster.
func (c *LocalCluster) Resume(i int) error { return c.setPaused(i, false) }

// setPaused SIGSTOPs or SIGCONTs process k (an index of specs: MDMs first, so an MDM's node
// index is its k).
func (c *LocalCluster) setPaused(k int, paused bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[k]
	if p == nil {
		return fmt.Errorf("%w: %s", ErrNodeDown, c.specs[k].ID)
	}
	sig := syscall.SIGCONT
	if paused {
		sig = syscall.SIGSTOP
	}
	if err := c.cfg.host.signal(c.specs[k].ID, p.cmd, sig); err != nil {
		return fmt.Errorf("jepsen: signal %s: %w", c.specs[k].ID, err)
	}
	p.paused = paused
	return nil
}

// State implements Cluster.
func (c *LocalCluster) State(i int) NodeState {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch p := c.procs[i]; {
	case p == nil:
		return NodeStopped
	case p.paused:
		return NodePaused
	}
	return NodeRunning
}

// Status implements Cluster.
func (c *LocalCluster) Status(ctx context.Context, i int) (*api.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.nodes[i].API+"/cluster/status?stale=1", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.AdminToken)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jepsen: %s status: %d %s", c.nodes[i].ID, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var st api.ClusterStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Heal implements Cluster: resume paused nodes, start stopped ones (SDSs and the SDC too).
func (c *LocalCluster) Heal(ctx context.Context) error {
	for k := len(c.nodes); k < len(c.specs); k++ {
		if err := c.startProc(k); err != nil {
			return err
		}
	}
	for i := range c.nodes {
		switch c.State(i) {
		case NodePaused:
			if err := c.Resume(i); err != nil {
				return err
			}
		case NodeStopped:
			if err := c.Start(ctx, i); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close implements Cluster: SIGKILL every process.
func (c *LocalCluster) Close() error {
	for k := range c.specs {
		c.stop(k, syscall.SIGKILL, 0)
	}
	return nil
}

// mdmConfig is what the harness varies in an MDM's HCL config.
type mdmConfig struct {
	ID, DataDir, API, Raft, Gossip                        string
	Join                                                  []string
	GossipKey, ClusterKey, AdminToken, LogLevel           string
	BootstrapExpect                                       int
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout string
}

// renderMDMConfig writes an MDM config that bootstraps over gossip (bootstrap_expect).
func renderMDMConfig(m mdmConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "node_id = %q\ndata_dir = %q\napi_addr = %q\nraft_addr = %q\nlog_level = %q\n",
		m.ID, m.DataDir, m.API, m.Raft, m.LogLevel)
	fmt.Fprintf(&b, "admin_token = %q\ncluster_key = %q\nbootstrap_expect = %d\n", m.AdminToken, m.ClusterKey, m.BootstrapExpect)
	q := make([]string, len(m.Join))
	for i, j := range m.Join {
		q[i] = fmt.Sprintf("%q", j)
	}
	fmt.Fprintf(&b, "gossip {\n  bind_addr = %q\n  join = [%s]\n  key = %q\n}\n", m.Gossip, strings.Join(q, ", "), m.GossipKey)
	var raft []string
	for _, kv := range [][2]string{{"heartbeat_timeout", m.HeartbeatTimeout}, {"election_timeout", m.ElectionTimeout},
		{"leader_lease_timeout", m.LeaderLeaseTimeout}} {
		if kv[1] != "" {
			raft = append(raft, fmt.Sprintf("  %s = %q\n", kv[0], kv[1]))
		}
	}
	if len(raft) > 0 {
		b.WriteString("raft {\n" + strings.Join(raft, "") + "}\n")
	}
	return b.String()
}
