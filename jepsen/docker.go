package jepsen

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The docker backend runs every process of a LocalCluster as a container of the FROM-scratch
// pflex image (`make image`, or built here from the static binary when it is missing) on a
// private bridge network of its own (pflexj-<pid>-<r>, 10.214.B.0/24), each with a fixed
// address and its role's default ports. The cluster directory is bind-mounted at the same path,
// so configs, data and device files are where LocalCluster put them. A start is
// `docker run --rm` in the foreground (its output goes to the node's log; its exit is the
// container's); kill and stop are `docker kill -s KILL|TERM`, pause is `docker pause` (the
// cgroup freezer), resume `docker unpause`. Partitions are iptables rules in the container's
// network namespace, entered from the host with `nsenter -t <pid> -n` (the image has no
// iptables). A restarted container has a new namespace, without rules.

// DefaultImage is the image `make image` builds.
const DefaultImage = "pflex:local"

// DockerConfig is a LocalConfig plus the image.
type DockerConfig struct {
	LocalConfig
	Image string // DefaultImage unless set
	// RebuildImage builds Image from LocalConfig.Binary even if it exists.
	RebuildImage bool
}

// DockerAvailable says why the docker backend cannot run here (nil: it can): it needs a docker
// daemon, and root with nsenter and iptables for partitions.
func DockerAvailable() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return fmt.Errorf("jepsen: no docker daemon: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if os.Geteuid() != 0 {
		return errors.New("jepsen: the docker backend needs root (nsenter into containers for iptables)")
	}
	for _, bin := range []string{"nsenter", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("jepsen: the docker backend needs %s: %w", bin, err)
		}
	}
	return nil
}

// docker runs the docker CLI.
func docker(args ...string) (string, error) {
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("jepsen: docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// EnsureImage builds image FROM scratch with binary as /pflex unless it exists (or rebuild).
// The binary must be static (CGO_ENABLED=0, as `make build` builds it).
func EnsureImage(image, binary string, rebuild bool) error {
	if !rebuild {
		if _, err := docker("image", "inspect", image); err == nil {
			return nil
		}
	}
	f, err := elf.Open(binary)
	if err != nil {
		return fmt.Errorf("jepsen: image %s: %w", image, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			f.Close()
			return fmt.Errorf("jepsen: image %s: %s is dynamically linked; build it with CGO_ENABLED=0 (make build)", image, binary)
		}
	}
	f.Close()
	dir, err := os.MkdirTemp("", "pflex-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	data, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "pflex"), data, 0o755); err != nil {
		return err
	}
	df := "FROM scratch\nCOPY pflex /pflex\nENTRYPOINT [\"/pflex\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		return err
	}
	_, err = docker("build", "-q", "-t", image, dir)
	return err
}

// dockerHost places the processes in containers (procHost).
type dockerHost struct {
	run, network, subnet, image, dir string

	mu    sync.Mutex
	addrs map[string]string // process id -> container address
	fw    *firewall         // made at the first partition
}

func (h *dockerHost) container(id string) string { return h.network + "-" + id }

func (h *dockerHost) listen(id, role string, count int) ([]string, error) {
	ps := netnsPorts[role]
	if len(ps) != count {
		return nil, fmt.Errorf("jepsen: docker: %d ports for a %s", count, role)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	addr, ok := h.addrs[id]
	if !ok {
		addr = fmt.Sprintf("%s.%d", h.subnet, 10+len(h.addrs))
		h.addrs[id] = addr
	}
	out := make([]string, count)
	for i, p := range ps {
		out[i] = fmt.Sprintf("%s:%d", addr, p)
	}
	return out, nil
}

func (h *dockerHost) command(id string, argv []string) *exec.Cmd {
	h.mu.Lock()
	addr := h.addrs[id]
	h.mu.Unlock()
	args := []string{"run", "--rm", "--name", h.container(id), "--hostname", id,
		"--label", "pflex.jepsen=" + h.run, "--network", h.network, "--ip", addr,
		"-v", h.dir + ":" + h.dir, h.image}
	return exec.Command("docker", append(args, argv[1:]...)...)
}

func (h *dockerHost) signal(id string, cmd *exec.Cmd, sig syscall.Signal) error {
	name := h.container(id)
	var err error
	switch sig {
	case syscall.SIGSTOP:
		_, err = docker("pause", name)
	case syscall.SIGCONT:
		_, err = docker("unpause", name)
	default:
		_, err = docker("kill", "-s", strconv.Itoa(int(sig)), name)
		if sig == syscall.SIGKILL {
			docker("unpause", name) // a frozen container dies once thawed
		}
	}
	return err
}

// enter is the argv prefix that runs a command in a running container's network namespace.
func (h *dockerHost) enter(id string) ([]string, error) {
	out, err := docker("inspect", "-f", "{{.State.Pid}}", h.container(id))
	if err != nil {
		return nil, err
	}
	pid := strings.TrimSpace(out)
	if pid == "" || pid == "0" {
		return nil, fmt.Errorf("%w: %s (container not running)", ErrNodeDown, id)
	}
	return []string{"nsenter", "-t", pid, "-n"}, nil
}

// firewall returns the firewall, picking the iptables binary at the first call.
func (h *dockerHost) firewall(probeNode string) (*firewall, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fw != nil {
		return h.fw, nil
	}
	pre, err := h.enter(probeNode)
	if err != nil {
		return nil, err
	}
	bin, err := pickIptables(func(bin string) error {
		argv := append(append([]string(nil), pre...), bin, "-w", "-S", "INPUT")
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", bin, err, strings.TrimSpace(string(out)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	h.fw = &firewall{bin: bin, enter: h.enter}
	return h.fw, nil
}

// removeDockerRun removes the containers and the network of one run (name prefix).
func removeDockerRun(network string) error {
	var errs []error
	out, err := docker("ps", "-aq", "--filter", "name=^"+network+"-")
	if err != nil {
		return err
	}
	if ids := strings.Fields(out); len(ids) > 0 {
		if _, err := docker(append([]string{"rm", "-f", "-v"}, ids...)...); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := docker("network", "inspect", network); err == nil {
		if _, err := docker("network", "rm", network); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CleanStaleDocker removes the containers and networks of runs whose harness is gone (their
// names carry its pid) and returns the networks it removed.
func CleanStaleDocker() []string {
	var gone []string
	seen := map[string]bool{}
	for _, args := range [][]string{
		{"network", "ls", "--filter", "name=" + netnsPrefix, "--format", "{{.Name}}"},
		{"ps", "-a", "--filter", "name=" + netnsPrefix, "--format", "{{.Names}}"},
	} {
		out, err := docker(args...)
		if err != nil {
			continue
		}
		for _, name := range strings.Fields(out) {
			f := strings.SplitN(strings.TrimPrefix(name, netnsPrefix), "-", 3)
			if !strings.HasPrefix(name, netnsPrefix) || len(f) < 2 {
				continue
			}
			pid, err := strconv.Atoi(f[0])
			network := netnsPrefix + f[0] + "-" + f[1]
			if err != nil || pidAlive(pid) || seen[network] {
				continue
			}
			seen[network] = true
			if removeDockerRun(network) == nil {
				gone = append(gone, network)
			}
		}
	}
	return gone
}

// DockerCluster is a LocalCluster whose processes are containers; it can partition the MDMs.
type DockerCluster struct {
	*LocalCluster
	host *dockerHost
}

var (
	_ DataPathCluster    = (*DockerCluster)(nil)
	_ Partitioner        = (*DockerCluster)(nil)
	_ ProcessPartitioner = (*DockerCluster)(nil)
)

// NewDockerCluster makes the network and the configs, and the image if it is missing. Close
// removes every container and the network, also after a failed run.
func NewDockerCluster(cfg DockerConfig) (*DockerCluster, error) {
	if err := DockerAvailable(); err != nil {
		return nil, err
	}
	if cfg.Image == "" {
		cfg.Image = DefaultImage
	}
	if err := EnsureImage(cfg.Image, cfg.Binary, cfg.RebuildImage); err != nil {
		return nil, err
	}
	CleanStaleDocker()
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg.Dir = dir
	run := fmt.Sprintf("%d-%04x", os.Getpid(), rand.Intn(1<<16))
	h := &dockerHost{run: run, network: netnsPrefix + run, image: cfg.Image, dir: dir, addrs: map[string]string{}}
	for tries := 0; ; tries++ {
		if h.subnet, err = freeSubnet("10.214"); err != nil {
			return nil, err
		}
		_, err = docker("network", "create", "--driver", "bridge", "--subnet", h.subnet+".0/24",
			"--label", "pflex.jepsen="+run, h.network)
		if err == nil {
			break
		}
		if tries == 3 {
			return nil, err
		}
	}
	cfg.host = h
	lc, err := NewLocalCluster(cfg.LocalConfig)
	if err != nil {
		removeDockerRun(h.network)
		return nil, err
	}
	return &DockerCluster{LocalCluster: lc, host: h}, nil
}

// Describe says where the cluster runs.
func (c *DockerCluster) Describe() string {
	return fmt.Sprintf("docker containers of %s on network %s (%s.0/24)", c.host.image, c.host.network, c.host.subnet)
}

// Partition implements Partitioner (groups of MDM indexes, as NetnsCluster.Partition).
func (c *DockerCluster) Partition(groups [][]int) error {
	return c.cut(len(c.nodes), groups)
}

// Processes implements ProcessPartitioner: the MDMs, then the SDSs and the SDC.
func (c *DockerCluster) Processes() []string {
	ids, _ := c.addrsOf(len(c.specs))
	return ids
}

// PartitionProcesses implements ProcessPartitioner: groups of process ids; a process in no
// group is cut from every other.
func (c *DockerCluster) PartitionProcesses(groups [][]string) error {
	g, err := groupIndexes(c.Processes(), groups)
	if err != nil {
		return err
	}
	return c.cut(len(c.specs), g)
}

// cut applies groups of indexes into the first n processes.
func (c *DockerCluster) cut(n int, groups [][]int) error {
	ids, addrs := c.addrsOf(n)
	fw, err := c.firewall(ids)
	if err != nil {
		return err
	}
	return partition(*fw, ids, addrs, groups)
}

// firewall is the host's firewall, probed in the first of ids whose container runs.
func (c *DockerCluster) firewall(ids []string) (*firewall, error) {
	var errs []error
	for i, id := range ids {
		if c.State(i) == NodeStopped {
			continue
		}
		fw, err := c.host.firewall(id)
		if err == nil {
			return fw, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("jepsen: docker: no running container to probe iptables in: %w", errors.Join(errs...))
}

// addrsOf returns the ids and addresses of the first n processes (the MDMs come first).
func (c *DockerCluster) addrsOf(n int) (ids, addrs []string) {
	return processAddrs(c.specs[:n], &c.host.mu, c.host.addrs)
}

// healPartition removes the partition rules of every running container (a stopped one comes
// back in a new namespace, without rules).
func (c *DockerCluster) healPartition() error {
	c.host.mu.Lock()
	fw := c.host.fw
	c.host.mu.Unlock()
	if fw == nil {
		return nil
	}
	return healAll(*fw, c.Processes(), func(i int) bool { return c.State(i) == NodeStopped })
}

// Heal implements Cluster: partitions first, then paused and stopped containers.
func (c *DockerCluster) Heal(ctx context.Context) error {
	return errors.Join(c.healPartition(), c.LocalCluster.Heal(ctx))
}

// Close implements Cluster: every container killed and removed, the network removed.
func (c *DockerCluster) Close() error {
	c.LocalCluster.Close()
	return removeDockerRun(c.host.network)
}
