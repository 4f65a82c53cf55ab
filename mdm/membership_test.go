package mdm_test

import (
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/mdm"
	"pflex/mdm/mdmtest"
)

// Three MDMs started in a shuffled order with random delays bootstrap exactly one cluster.
func TestBootstrapExpectFormsOneCluster(t *testing.T) {
	for round := 0; round < 3; round++ {
		order := rand.Perm(3)
		var delays []time.Duration
		for range order {
			delays = append(delays, time.Duration(rand.IntN(700))*time.Millisecond)
		}
		t.Logf("round %d: start order %v, delays %v", round, order, delays)
		c := mdmtest.StartGossipCluster(t, 3, order, delays)
		leader := c.WaitLeader(20 * time.Second)
		deadline := time.Now().Add(10 * time.Second)
		for {
			agree := true
			for _, m := range c.Members {
				st := m.Server.Node().Status()
				if len(st.Peers) != 3 || st.LeaderID != c.Members[leader].Cfg.NodeID {
					agree = false
				}
			}
			if agree {
				break
			}
			if time.Now().After(deadline) {
				for _, m := range c.Members {
					t.Logf("%+v", m.Server.Node().Status())
				}
				t.Fatal("the three MDMs did not form one cluster")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if code, _, err := c.Do(order[0], "POST", "/pd/create", map[string]any{"name": "pd1"}, nil); err != nil || code != 200 {
			t.Fatalf("write: %d %v", code, err)
		}
		c.WaitConverged(10 * time.Second)
		c.Close()
	}
}

// A fourth MDM that joins the pool later is added as a non-voter and promoted once caught up.
func TestNewMDMJoinsOverGossipAndIsPromoted(t *testing.T) {
	c := mdmtest.StartGossipCluster(t, 3, nil, nil)
	if code, _, err := c.Do(0, "POST", "/pd/create", map[string]any{"name": "pd1"}, nil); err != nil || code != 200 {
		t.Fatalf("write: %d %v", code, err)
	}
	extra := mdmtest.GossipConfigs(t, t.TempDir(), 1)[0]
	extra.NodeID = "mdm-4"
	extra.DataDir = filepath.Join(t.TempDir(), "mdm-4")
	extra.Gossip.Join = c.Members[0].Cfg.Gossip.Join
	s, err := mdm.Start(extra, hclog.New(&hclog.LoggerOptions{Level: hclog.Warn}))
	if err != nil {
		t.Fatal(err)
	}
	c.Members = append(c.Members, &mdmtest.Member{Cfg: extra, Server: s})
	deadline := time.Now().Add(20 * time.Second)
	for {
		var peers []api.Peer
		c.Do(0, "GET", "/cluster/peers", nil, &peers)
		voter := false
		for _, p := range peers {
			voter = voter || (p.ID == "mdm-4" && p.Suffrage == "voter")
		}
		if voter {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mdm-4 was not promoted: %+v", peers)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.WaitConverged(10 * time.Second)
	var pds []fsm.ProtectionDomain
	if code, _, _ := c.Do(3, "GET", "/pd/list?stale=1", nil, &pds); code != 200 || len(pds) != 1 {
		t.Fatalf("mdm-4 state: %d %+v", code, pds)
	}
}

// heartbeat sends one heartbeat through member i; like a component it retries a 503 (a
// follower forwarding while the leader is busy) for a short while.
func heartbeat(t *testing.T, c *mdmtest.Cluster, i int, id string) int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		code, _, err := mdmtest.DoJSON(c.URL(i), mdmtest.TestClusterKey, "POST", "/heartbeat", api.HeartbeatRequest{ID: id}, nil)
		if err != nil {
			code = 0
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return code
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Registration is idempotent and authenticated; a component that stops heartbeating is committed
// down after the grace period and up again when it returns; members show all three views.
func TestRegistrationHeartbeatsAndFailureDetection(t *testing.T) {
	cfgs := mdmtest.GossipConfigs(t, t.TempDir(), 3)
	c := &mdmtest.Cluster{}
	for _, cfg := range cfgs {
		cfg.SDSDownGrace = "1s"
		cfg.HeartbeatTimeout = "600ms"
		c.Members = append(c.Members, &mdmtest.Member{Cfg: cfg})
	}
	c = mdmtest.Adopt(t, c)
	if code, _, err := c.Do(0, "POST", "/pd/create", map[string]any{"name": "pd1"}, nil); err != nil || code != 200 {
		t.Fatalf("write: %d %v", code, err)
	}

	reg := fsm.RegisterNode{ID: "sds-1", Capabilities: []string{"SDS"}, Version: "t", APIAddr: "127.0.0.1:9101",
		DataAddr: "127.0.0.1:9701", SDS: &fsm.SDSRegistration{ProtectionDomain: "pd1", Devices: fsm.Devices{"/d"}, TotalCapacityGB: 10}}
	var e api.Error
	if code, _, _ := mdmtest.DoJSON(c.URL(1), "wrong", "POST", "/discovery/register", reg, &e); code != http.StatusUnauthorized {
		t.Fatalf("wrong cluster key: %d %+v", code, e)
	}
	var r1, r2 api.RegisterResponse
	if code, _, err := mdmtest.DoJSON(c.URL(1), mdmtest.TestClusterKey, "POST", "/discovery/register", reg, &r1); err != nil || code != 200 {
		t.Fatalf("register: %d %v", code, err)
	}
	if code, _, err := mdmtest.DoJSON(c.URL(2), mdmtest.TestClusterKey, "POST", "/discovery/register", reg, &r2); err != nil || code != 200 {
		t.Fatalf("register again: %d %v", code, err)
	}
	if r1.SDSID == 0 || r1.SDSID != r2.SDSID || r1.LeaderAPI == "" {
		t.Fatalf("registrations %+v / %+v", r1, r2)
	}
	var sdss []fsm.SDS
	c.Do(0, "GET", "/sds/list", nil, &sdss)
	if len(sdss) != 1 {
		t.Fatalf("duplicate registration made %d SDSs", len(sdss))
	}
	if code := heartbeat(t, c, 0, "ghost"); code != http.StatusNotFound {
		t.Fatalf("heartbeat of an unregistered node: %d", code)
	}

	sdsState := func() string {
		var s fsm.SDS
		c.Do(0, "GET", "/sds/1", nil, &s)
		return s.State
	}
	// Heartbeat for a while: stays up.
	for i := 0; i < 10; i++ {
		if code := heartbeat(t, c, i%3, "sds-1"); code != 200 {
			t.Fatalf("heartbeat: %d", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s := sdsState(); s != fsm.SDSUp {
		t.Fatalf("state while heartbeating: %s", s)
	}
	var members []api.Member
	c.Do(2, "GET", "/cluster/members", nil, &members)
	found := false
	for _, m := range members {
		if m.ID == "sds-1" {
			found = m.Registered && m.State == "up" && m.LastHeartbeatMs >= 0 && m.LastHeartbeatMs < 1000
		}
	}
	if !found || len(members) < 4 {
		t.Fatalf("members %+v", members)
	}
	// Stop heartbeating: down after heartbeat_timeout + grace (plus a tick).
	stopped := time.Now()
	for sdsState() != fsm.SDSDown {
		if time.Since(stopped) > 10*time.Second {
			t.Fatal("SDS not marked down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("marked down %s after the last heartbeat", time.Since(stopped).Round(10*time.Millisecond))
	// Come back: up again.
	back := time.Now()
	for sdsState() != fsm.SDSUp {
		heartbeat(t, c, 0, "sds-1")
		if time.Since(back) > 10*time.Second {
			t.Fatal("SDS not marked up again")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
