package mdm_test

import (
	"fmt"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/mdm"
	"pflex/mdm/mdmtest"
)

// An SDS heartbeat grants a lease; an SDS that stops heartbeating is committed down only after
// that lease has surely run out (even with a shorter heartbeat_timeout + grace), and the same
// entry moves its chunks to their other copies under a new layout epoch, which the next
// heartbeat answer carries. Coming back does not make it a replica again; the pool is DEGRADED.
func TestLeaseExpiresBeforeDownAndDownDegradesLayouts(t *testing.T) {
	c := leaseCluster(t, "100ms", "300ms")
	// sds-3's lease runs from its registration, which the MDM received after lastHB3.
	lastHB3 := registerSDSs(t, c, 3)
	hb := func(id string, version int64) api.HeartbeatResponse {
		t.Helper()
		var r api.HeartbeatResponse
		if code, _, err := mdmtest.DoJSON(c.URL(0), mdmtest.TestClusterKey, "POST", "/heartbeat", api.HeartbeatRequest{ID: id, IOVersion: version}, &r); err != nil || code != 200 {
			t.Fatalf("heartbeat %s: %d %v", id, code, err)
		}
		return r
	}
	var l1 layout.Layout
	if code, _, err := mdmtest.DoJSON(c.URL(0), mdmtest.TestClusterKey, "GET", "/vol/1/layout", nil, &l1); err != nil || code != 200 || len(l1.Members) != 3 {
		t.Fatalf("layout: %d %v %+v", code, err, l1)
	}
	if r := hb("sds-1", 0); r.LeaseMs != 1500 || r.IO == nil || r.IO.LayoutEpochs["1"] != l1.Epoch {
		t.Fatalf("heartbeat answer %+v", r)
	}

	// sds-3 goes silent; the others keep heartbeating. Its lease runs from its registration,
	// which the MDM received after lastHB3.
	stopped := lastHB3
	var l2 layout.Layout
	for {
		hb("sds-1", 0)
		hb("sds-2", 0)
		mdmtest.DoJSON(c.URL(0), mdmtest.TestClusterKey, "GET", "/vol/1/layout", nil, &l2)
		if l2.Epoch > l1.Epoch {
			break
		}
		if time.Since(stopped) > 10*time.Second {
			t.Fatal("sds-3 never left the layout")
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(stopped)
	if took < 1500*time.Millisecond+mdm.LeaseMargin {
		t.Fatalf("sds-3 taken out %s after its last heartbeat: before its lease (1.5s) + margin ran out", took)
	}
	t.Logf("sds-3 taken out %s after its last heartbeat", took.Round(10*time.Millisecond))
	if len(l2.Excluded) != 1 || l2.Excluded[0].SDSID != 3 {
		t.Fatalf("layout after down: %+v", l2.Excluded)
	}
	degraded := 0
	for ch := range l2.Chunks() {
		for _, id := range l2.Replicas(ch) {
			if id == 3 {
				t.Fatalf("chunk %d still on sds-3", ch)
			}
		}
		if l2.Degraded(ch) {
			degraded++
		}
	}
	var h mdm.PoolHealth
	if code, _, _ := c.Do(1, "GET", "/pool/1/health", nil, &h); code != 200 || h.Health != mdm.HealthDegraded || h.DegradedChunks != int64(degraded) || degraded == 0 {
		t.Fatalf("health %d %+v, %d degraded chunks", code, h, degraded)
	}
	// sds-3 comes back: its first answer carries the new epochs with the lease.
	if r := hb("sds-3", 1); r.IO == nil || r.IO.LayoutEpochs["1"] != l2.Epoch || r.LeaseMs == 0 {
		t.Fatalf("returning SDS's heartbeat answer: %+v", r)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var s fsm.SDS
		c.Do(0, "GET", "/sds/3", nil, &s)
		if s.State == fsm.SDSUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sds-3 not up again")
		}
		hb("sds-1", 0)
		hb("sds-2", 0)
		hb("sds-3", 0)
		time.Sleep(100 * time.Millisecond)
	}
	var l3 layout.Layout
	mdmtest.DoJSON(c.URL(0), mdmtest.TestClusterKey, "GET", "/vol/1/layout", nil, &l3)
	if l3.Epoch != l2.Epoch || len(l3.Excluded) != 1 {
		t.Fatalf("layout after sds-3 came back: epoch %d excluded %+v", l3.Epoch, l3.Excluded)
	}
}

// leaseCluster starts three MDMs with the given sds_down_grace and heartbeat_timeout, a 1.5 s
// SDS lease and no rebuilds (the tests follow layout epochs exactly), and seeds pd1, pool1,
// sdc1 and vol1 (8 GB).
func leaseCluster(t *testing.T, grace, heartbeatTimeout string) *mdmtest.Cluster {
	t.Helper()
	c := &mdmtest.Cluster{}
	for _, cfg := range mdmtest.GossipConfigs(t, t.TempDir(), 3) {
		cfg.SDSDownGrace, cfg.HeartbeatTimeout, cfg.SDSLease, cfg.RebuildInterval = grace, heartbeatTimeout, "1500ms", "1h"
		c.Members = append(c.Members, &mdmtest.Member{Cfg: cfg})
	}
	c = mdmtest.Adopt(t, c)
	seed(t, c, 0)
	return c
}

// registerSDSs registers sds-1..sds-n, each granted the 1.5 s lease, and returns when the last
// registration was sent.
func registerSDSs(t *testing.T, c *mdmtest.Cluster, n int) (last time.Time) {
	t.Helper()
	for i := 1; i <= n; i++ {
		last = time.Now()
		reg := fsm.RegisterNode{ID: fmt.Sprintf("sds-%d", i), Capabilities: []string{"SDS"}, DataAddr: fmt.Sprintf("127.0.0.1:%d", 9700+i),
			SDS: &fsm.SDSRegistration{ProtectionDomain: "pd1", Devices: fsm.Devices{"/d"}, TotalCapacityGB: 10}}
		var rr api.RegisterResponse
		if code, _, err := mdmtest.DoJSON(c.URL(0), mdmtest.TestClusterKey, "POST", "/discovery/register", reg, &rr); err != nil || code != 200 || rr.LeaseMs != 1500 {
			t.Fatalf("register: %d %v lease %d", code, err, rr.LeaseMs)
		}
	}
	return last
}
