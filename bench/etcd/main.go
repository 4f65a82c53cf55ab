// Command etcdbench runs a three-node etcd cluster on loopback and drives it with the closed-loop
// load of pflex's BenchmarkCommit (mdm/bench_test.go): N clients, one connection each, each
// writing a small value to one of 4,096 keys and waiting for the answer before the next. Issue 2's
// target is to beat etcd at 64 clients; this measures etcd on the same machine as pflex instead of
// quoting a figure from another one. It lives in its own module so that pflex does not depend on
// etcd. Run it with `make bench-etcd`; figures go to docs/BENCHMARKS.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"go.uber.org/zap"
)

func main() {
	// The cluster's members are this binary re-executed as an etcd server.
	if len(os.Args) > 1 && os.Args[1] == "server" {
		etcdmain.Main(append([]string{"etcd"}, os.Args[2:]...))
		return
	}
	clients := flag.String("clients", "1,16,64", "comma-separated client counts, one run each")
	writes := flag.Int("writes", 20000, "writes per run (a tenth of it with one client)")
	flag.Parse()
	if err := run(*clients, *writes); err != nil {
		fmt.Fprintln(os.Stderr, "etcdbench:", err)
		os.Exit(1)
	}
}

func run(clientList string, writes int) error {
	dir, err := os.MkdirTemp("", "etcdbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c, err := startCluster(dir, 3)
	if err != nil {
		return err
	}
	defer c.stop()
	leader, err := c.waitLeader(30 * time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("etcd %s, three members on loopback, fsync on (etcd's defaults), load against the leader %s\n", c.version, leader)
	for _, s := range strings.Split(clientList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad client count %q", s)
		}
		total := writes
		if n == 1 {
			total = max(writes/10, 1)
		}
		r, err := load(leader, n, total, c.pids())
		if err != nil {
			return err
		}
		fmt.Printf("clients=%-3d writes=%-6d %7.0f writes/s   p50 %6.2f ms   p99 %6.2f ms   etcd CPU %4.0f us/write   load generator CPU %3.0f us/write\n",
			n, total, r.perSec, r.p50, r.p99, r.serverCPU, r.clientCPU)
	}
	return nil
}

// cluster is three etcd processes.
type cluster struct {
	procs   []*exec.Cmd
	clients []string // client URLs
	version string
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func startCluster(dir string, n int) (*cluster, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	peers := make([]string, n)
	c := &cluster{clients: make([]string, n)}
	for i := range n {
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		cp, err := freePort()
		if err != nil {
			return nil, err
		}
		peers[i] = fmt.Sprintf("http://127.0.0.1:%d", pp)
		c.clients[i] = fmt.Sprintf("http://127.0.0.1:%d", cp)
	}
	var initial []string
	for i, p := range peers {
		initial = append(initial, fmt.Sprintf("e%d=%s", i+1, p))
	}
	for i := range n {
		name := fmt.Sprintf("e%d", i+1)
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(self, "server", "--name", name, "--data-dir", filepath.Join(dir, name),
			"--listen-client-urls", c.clients[i], "--advertise-client-urls", c.clients[i],
			"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "etcdbench",
			"--initial-cluster-state", "new", "--log-level", "error")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			c.stop()
			return nil, err
		}
		c.procs = append(c.procs, cmd)
	}
	return c, nil
}

func (c *cluster) stop() {
	for _, p := range c.procs {
		p.Process.Kill()
		p.Wait()
	}
}

func (c *cluster) pids() []int {
	var pids []int
	for _, p := range c.procs {
		pids = append(pids, p.Process.Pid)
	}
	return pids
}

// waitLeader returns the client URL of the member that leads.
func (c *cluster) waitLeader(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, ep := range c.clients {
			cl, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: time.Second, Logger: zap.NewNop()})
			if err != nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := cl.Status(ctx, ep)
			cancel()
			cl.Close()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				c.version = st.Version
				return ep, nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", fmt.Errorf("no etcd leader within %v", timeout)
}

type result struct {
	perSec, p50, p99     float64
	serverCPU, clientCPU float64 // microseconds per write
}

// load runs n closed-loop clients, one connection each, until total writes are acknowledged.
func load(endpoint string, n, total int, serverPids []int) (result, error) {
	cls := make([]*clientv3.Client, n)
	for i := range cls {
		cl, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return result{}, err
		}
		defer cl.Close()
		cls[i] = cl
	}
	var next atomic.Int64
	var failed atomic.Value
	lat := make([][]time.Duration, n)
	server0, client0 := cpuSeconds(serverPids...), cpuSeconds(os.Getpid())
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for {
				w := next.Add(1)
				if w > int64(total) {
					return
				}
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := cls[i].Put(ctx, "k"+strconv.FormatInt(w%4096, 10), "v")
				cancel()
				if err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	server1, client1 := cpuSeconds(serverPids...), cpuSeconds(os.Getpid())
	if err, _ := failed.Load().(error); err != nil {
		return result{}, fmt.Errorf("a write failed: %w", err)
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	ms := func(q float64) float64 { return float64(all[int(q*float64(len(all)-1))].Microseconds()) / 1000 }
	w := float64(len(all))
	return result{perSec: w / elapsed.Seconds(), p50: ms(0.5), p99: ms(0.99),
		serverCPU: (server1 - server0) * 1e6 / w, clientCPU: (client1 - client0) * 1e6 / w}, nil
}

// cpuSeconds is the user+system CPU time the processes have used, from /proc.
func cpuSeconds(pids ...int) float64 {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + st
	}
	return float64(ticks) / 100 // USER_HZ
}
