package mdm_test

import (
	"net/http"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/mdm/mdmtest"
)

func TestWriteToFollowerAppliesEverywhere(t *testing.T) {
	c := mdmtest.StartCluster(t, 3)
	leader := c.WaitLeader(5 * time.Second)
	follower := (leader + 1) % 3

	var pd fsm.ProtectionDomain
	code, hdr, err := c.Do(follower, "POST", "/pd/create", map[string]any{"name": "pd1"}, &pd)
	if err != nil || code != http.StatusOK {
		t.Fatalf("create via follower: %d %v", code, err)
	}
	if pd.ID != 1 || pd.Name != "pd1" {
		t.Fatalf("unexpected pd %+v", pd)
	}
	if hdr.Get(api.HeaderLeader) != c.Members[leader].Cfg.APIAddr {
		t.Fatalf("X-Pflex-Leader %q, want %q", hdr.Get(api.HeaderLeader), c.Members[leader].Cfg.APIAddr)
	}
	if hdr.Get(api.HeaderIndex) == "" {
		t.Fatal("no X-Pflex-Index header")
	}
	c.WaitConverged(5 * time.Second)
	for i := range c.Members {
		var got fsm.ProtectionDomain
		code, _, err := c.Do(i, "GET", "/pd/1?stale=1", nil, &got)
		if err != nil || code != 200 || got.Name != "pd1" {
			t.Fatalf("member %d stale read: %d %v %+v", i, code, err, got)
		}
	}
}

func TestLeaderKillElectsNewLeaderAndRestartCatchesUp(t *testing.T) {
	c := mdmtest.StartCluster(t, 3)
	leader := c.WaitLeader(5 * time.Second)
	if code, _, err := c.Do(leader, "POST", "/pd/create", map[string]any{"name": "before"}, nil); err != nil || code != 200 {
		t.Fatalf("create: %d %v", code, err)
	}
	c.Kill(leader)
	newLeader := c.WaitLeader(10 * time.Second)
	if newLeader == leader {
		t.Fatal("killed node still leader")
	}
	other := 3 - leader - newLeader
	if code, _, err := c.Do(other, "POST", "/pd/create", map[string]any{"name": "after"}, nil); err != nil || code != 200 {
		t.Fatalf("create after failover: %d %v", code, err)
	}
	c.Start(leader)
	c.WaitConverged(10 * time.Second)
	var pds []fsm.ProtectionDomain
	if code, _, err := c.Do(leader, "GET", "/pd/list?stale=1", nil, &pds); err != nil || code != 200 || len(pds) != 2 {
		t.Fatalf("restarted node: %d %v %+v", code, err, pds)
	}
}
