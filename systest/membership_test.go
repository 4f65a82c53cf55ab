package systest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/mdm"
	"pflex/mdm/mdmtest"
)

// component is an SDS or SDC process with its control address.
type component struct {
	*mdmtest.Proc
	api    string
	mgmt   string // mgmt listener (SDS, SDC)
	socket string // the SDC's NBD Unix socket
}

type status struct {
	Registered          bool   `json:"registered"`
	LeaderID            string `json:"leader_id"`
	LeaderAPI           string `json:"leader_api"`
	LastHeartbeatLeader string `json:"last_heartbeat_leader"`
	LastHeartbeatAgeMS  int64  `json:"last_heartbeat_age_ms"`
	Heartbeats          uint64 `json:"heartbeats"`
	GossipAlive         int    `json:"gossip_alive"`
}

func (c component) status() (status, bool) {
	var st status
	client := &http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + c.api + "/status")
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	return st, resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&st) == nil
}

// cluster is three MDM processes bootstrapped over gossip, a PD, and components beside them.
type cluster struct {
	t    testing.TB
	mdms *mdmtest.ProcCluster
	join string
}

func testKey() string { return mdmtest.TestGossipKey }

func startCluster(t testing.TB, grace string) *cluster {
	bin := mdmtest.BuildBinary(t)
	p := mdmtest.StartGossipProcesses(t, bin, 3, func(c *mdm.Config) {
		c.SDSDownGrace = grace
		c.HeartbeatTimeout = "1s"
	})
	leader := p.WaitLeader(20 * time.Second)
	if code, _, err := mdmtest.DoJSON(p.URL(leader), p.Token, "POST", "/pd/create", map[string]any{"name": "pd1"}, nil); err != nil || code != 200 {
		t.Fatalf("create pd: %d %v", code, err)
	}
	var join []string
	for _, j := range p.Cfgs[0].Gossip.Join {
		join = append(join, fmt.Sprintf("%q", j))
	}
	return &cluster{t: t, mdms: p, join: strings.Join(join, ", ")}
}

func (c *cluster) mdmList() string {
	var l []string
	for _, cfg := range c.mdms.Cfgs {
		l = append(l, fmt.Sprintf("%q", cfg.APIAddr))
	}
	return strings.Join(l, ", ")
}

// oneHostTuning is added to every SDS and SDC config: all processes of a test share the host's
// few CPUs (sds/DESIGN.md, "CPU"); with PFLEX_BENCH_PPROF they also serve /debug/pprof.
var oneHostTuning = func() string {
	s := "gomaxprocs = 1\n"
	if benchPprofDir != "" {
		s += "debug_pprof = true\n"
	}
	return s
}()

// sds adds an SDS process (not started) whose device is /dev/null (membership tests).
func (c *cluster) sds(id, key string) component { return c.sdsDevice(id, key, "/dev/null", 10) }

// sdsDevice adds an SDS process (not started) with one device file.
func (c *cluster) sdsDevice(id, key, device string, capacityGB int) component {
	ports := mdmtest.FreePorts(c.t, 4)
	api := fmt.Sprintf("127.0.0.1:%d", ports[0])
	hcl := fmt.Sprintf(`id = %q
data_dir = %q
api_addr = %q
mgmt_addr = "127.0.0.1:%d"
data_addr = "127.0.0.1:%d"
cluster_key = %q
heartbeat_interval = "200ms"
mdm = [%s]
protection_domain = "pd1"
devices = [%q]
total_capacity_gb = %d
gossip {
  bind_addr = "127.0.0.1:%d"
  join = [%s]
  key = %q
}
`, id, c.t.TempDir(), api, ports[1], ports[2], mdmtest.TestClusterKey, c.mdmList(), device, capacityGB, ports[3], c.join, key)
	hcl += oneHostTuning
	return component{Proc: c.mdms.AddProc(id, "sds", hcl), api: api, mgmt: fmt.Sprintf("127.0.0.1:%d", ports[1])}
}

func (c *cluster) sdc(id string) component {
	c2, _ := c.sdcNBD(id)
	return c2
}

// sdcNBD adds an SDC process (not started) and returns it with its NBD address.
func (c *cluster) sdcNBD(id string) (component, string) {
	ports := mdmtest.FreePorts(c.t, 4)
	api := fmt.Sprintf("127.0.0.1:%d", ports[0])
	dir := c.t.TempDir()
	socket := filepath.Join(dir, "nbd.sock")
	hcl := fmt.Sprintf(`id = %q
data_dir = %q
api_addr = %q
mgmt_addr = "127.0.0.1:%d"
nbd_addr = "127.0.0.1:%d"
nbd_socket = %q
cluster_key = %q
heartbeat_interval = "200ms"
mdm = [%s]
gossip {
  bind_addr = "127.0.0.1:%d"
  join = [%s]
  key = %q
}
`, id, dir, api, ports[1], ports[2], socket, mdmtest.TestClusterKey, c.mdmList(), ports[3], c.join, mdmtest.TestGossipKey)
	hcl += oneHostTuning
	return component{Proc: c.mdms.AddProc(id, "sdc", hcl), api: api, mgmt: fmt.Sprintf("127.0.0.1:%d", ports[1]), socket: socket},
		fmt.Sprintf("127.0.0.1:%d", ports[2])
}

// members reads /cluster/members from any answering MDM.
func (c *cluster) members() map[string]api.Member {
	for i := range c.mdms.Cfgs {
		if !c.mdms.Running(i) {
			continue
		}
		var ms []api.Member
		if code, _, err := mdmtest.DoJSON(c.mdms.URL(i), c.mdms.Token, "GET", "/cluster/members", nil, &ms); err == nil && code == 200 {
			out := map[string]api.Member{}
			for _, m := range ms {
				out[m.ID] = m
			}
			return out
		}
	}
	return nil
}

func (c *cluster) waitFor(what string, timeout time.Duration, cond func() bool) time.Duration {
	c.t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			c.t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

func TestSDSKill9IsMarkedDownAndUpAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	c := startCluster(t, "2s")
	s := c.sds("sds-1", mdmtest.TestGossipKey)
	s.Start()
	c.waitFor("sds-1 registered and up", 20*time.Second, func() bool {
		m := c.members()["sds-1"]
		return m.Registered && m.State == "up" && m.GossipState == "alive" && m.LastHeartbeatMs >= 0
	})
	killed := time.Now()
	s.Kill9()
	took := c.waitFor("sds-1 down after kill -9", 15*time.Second, func() bool { return c.members()["sds-1"].State == fsm.NodeDown })
	t.Logf("marked down %s after kill -9 (heartbeat_timeout 1s + grace 2s)", took.Round(10*time.Millisecond))
	if time.Since(killed) < 2*time.Second {
		t.Fatalf("marked down before the grace period ended")
	}
	var sdss []fsm.SDS
	mdmtest.DoJSON(c.mdms.URL(c.mdms.WaitLeader(10*time.Second)), c.mdms.Token, "GET", "/sds/list", nil, &sdss)
	if len(sdss) != 1 || sdss[0].State != fsm.SDSDown {
		t.Fatalf("SDS object after kill: %+v", sdss)
	}
	s.Start()
	took = c.waitFor("sds-1 up after restart", 20*time.Second, func() bool { return c.members()["sds-1"].State == fsm.NodeUp })
	t.Logf("marked up %s after restart", took.Round(10*time.Millisecond))
}

func TestComponentsFollowANewLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	c := startCluster(t, "5s")
	comps := []component{c.sds("sds-1", mdmtest.TestGossipKey), c.sds("sds-2", mdmtest.TestGossipKey), c.sdc("sdc-1")}
	for _, x := range comps {
		x.Start()
	}
	c.waitFor("components registered", 20*time.Second, func() bool {
		for _, x := range comps {
			if st, ok := x.status(); !ok || !st.Registered || st.Heartbeats == 0 {
				return false
			}
		}
		return true
	})
	for round := 0; round < 2; round++ {
		leader := c.mdms.WaitLeader(10 * time.Second)
		killed := time.Now()
		c.mdms.Kill9(leader)
		newLeader := c.mdms.WaitLeader(10 * time.Second)
		want := c.mdms.Cfgs[newLeader].APIAddr
		took := c.waitFor("heartbeats at the new leader", 10*time.Second, func() bool {
			for _, x := range comps {
				st, ok := x.status()
				if !ok || st.LastHeartbeatLeader != want || st.LastHeartbeatAgeMS < 0 ||
					time.Since(killed) < time.Duration(st.LastHeartbeatAgeMS)*time.Millisecond {
					return false
				}
			}
			return true
		})
		t.Logf("round %d: every SDS and SDC heartbeating to %s %s after the kill", round, c.mdms.Cfgs[newLeader].NodeID, time.Since(killed).Round(10*time.Millisecond))
		_ = took
		c.mdms.Start(leader)
		c.mdms.WaitConverged(20 * time.Second)
	}
	// Nothing was marked down: the components never stopped.
	for _, id := range []string{"sds-1", "sds-2", "sdc-1"} {
		if m := c.members()[id]; m.State != "up" {
			t.Fatalf("%s is %q after leader changes", id, m.State)
		}
	}
}

func TestWrongGossipKeyIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	c := startCluster(t, "5s")
	bad := c.sds("sds-bad", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	bad.Start()
	c.waitFor("the refusal in the node's log", 15*time.Second, func() bool {
		return strings.Contains(bad.Log(), "gossip key")
	})
	if m, ok := c.members()["sds-bad"]; ok && m.GossipState == "alive" {
		t.Fatalf("a node with the wrong gossip key was admitted: %+v", m)
	}
}
