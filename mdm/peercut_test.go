package mdm_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/mdm"
	"pflex/mdm/mdmtest"
)

// Three SDSs heartbeat, but sds-3 and its peers name each other unreachable (a cut between
// SDSs). The leader stops granting sds-3 leases, commits it down only once its last lease has
// surely run out, moves its chunks, and keeps it down while the cut lasts; when the reports
// stop, it comes back up. sds-1 and sds-2 keep their leases throughout, also when they lose
// each other while sds-3 is down.
func TestPeerCutTakesOneSDSOut(t *testing.T) {
	c := leaseCluster(t, "200ms", "1s")
	registerSDSs(t, c, 3)
	var l1 layout.Layout
	mdmtest.DoJSON(c.URL(0), mdmtest.TestClusterKey, "GET", "/vol/1/layout", nil, &l1)
	hb := func(id string, unreachable ...string) api.HeartbeatResponse {
		t.Helper()
		var r api.HeartbeatResponse
		req := api.HeartbeatRequest{ID: id, IOVersion: 1, UnreachablePeers: unreachable}
		if code, _, err := mdmtest.DoJSON(c.URL(0), mdmtest.TestClusterKey, "POST", "/heartbeat", req, &r); err != nil || code != 200 {
			t.Fatalf("heartbeat %s: %d %v", id, code, err)
		}
		return r
	}
	state := func(id int) string {
		var s fsm.SDS
		c.Do(0, "GET", fmt.Sprintf("/sds/%d", id), nil, &s)
		return s.State
	}

	cut := func() (sds3 api.HeartbeatResponse) {
		for _, id := range []string{"sds-1", "sds-2"} {
			if r := hb(id, "sds-3"); r.LeaseMs == 0 {
				t.Fatalf("%s lost its lease: %+v", id, r)
			}
		}
		return hb("sds-3", "sds-1", "sds-2")
	}
	start := time.Now()
	// lastGrant: when the last heartbeat that got sds-3 a lease while it was up was sent. A lease
	// granted once the down is committed comes with that state (the SDS learns it is out of
	// every layout), as for any SDS that was down: it does not count.
	var lastGrant time.Time
	for state(3) != fsm.SDSDown {
		sent := time.Now()
		if r := cut(); r.LeaseMs > 0 && r.State != fsm.NodeDown {
			lastGrant = sent
		}
		if time.Since(start) > 15*time.Second {
			t.Fatal("sds-3 was never taken out")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if took := time.Since(lastGrant); took < 1500*time.Millisecond+mdm.LeaseMargin {
		t.Fatalf("sds-3 down %s after its last lease was granted, before that lease (1.5s) + margin ran out", took)
	}
	if state(1) != fsm.SDSUp || state(2) != fsm.SDSUp {
		t.Fatalf("only sds-3 is taken out: sds-1 %s, sds-2 %s", state(1), state(2))
	}

	var l2 layout.Layout
	mdmtest.DoJSON(c.URL(0), mdmtest.TestClusterKey, "GET", "/vol/1/layout", nil, &l2)
	if l2.Epoch <= l1.Epoch || len(l2.Excluded) != 1 || l2.Excluded[0].SDSID != 3 {
		t.Fatalf("layout after the peer cut: epoch %d -> %d, excluded %+v", l1.Epoch, l2.Epoch, l2.Excluded)
	}
	// While the cut lasts, sds-3 stays down although it heartbeats. And with one SDS down, a
	// second cut (sds-1 and sds-2 lose each other too) takes no one else out: more than the
	// grace and a lease pass with both keeping their leases.
	shown := false // the members list shows what sds-3 cannot reach
	for held := time.Now(); time.Since(held) < 3*time.Second; time.Sleep(50 * time.Millisecond) {
		if r := hb("sds-1", "sds-2", "sds-3"); r.LeaseMs == 0 {
			t.Fatal("sds-1 fenced while sds-3 is down")
		}
		if r := hb("sds-2", "sds-1", "sds-3"); r.LeaseMs == 0 {
			t.Fatal("sds-2 fenced while sds-3 is down")
		}
		hb("sds-3", "sds-1", "sds-2")
		if s := state(3); s != fsm.SDSDown {
			t.Fatalf("sds-3 %s while its peers still cannot reach it", s)
		}
		var members []api.Member
		c.Do(0, "GET", "/cluster/members", nil, &members)
		for _, m := range members {
			shown = shown || m.ID == "sds-3" && slices.Equal(m.UnreachablePeers, []string{"sds-1", "sds-2"})
		}
	}
	if !shown {
		t.Fatal("the members list never showed sds-3's unreachable peers")
	}
	if state(1) != fsm.SDSUp || state(2) != fsm.SDSUp {
		t.Fatalf("a second SDS taken out while sds-3 is down: sds-1 %s, sds-2 %s", state(1), state(2))
	}
	// The link is back: sds-3 comes up again.
	for back := time.Now(); state(3) != fsm.SDSUp; time.Sleep(50 * time.Millisecond) {
		hb("sds-1")
		hb("sds-2")
		hb("sds-3")
		if time.Since(back) > 10*time.Second {
			t.Fatal("sds-3 not up again after the cut")
		}
	}
}
