package mdm_test

import (
	"bytes"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/mdm"
	"pflex/mdm/mdmtest"
)

// seed creates pd1, pool1 (100 GB), sdc1 and a thin volume vol1 through member i.
func seed(t *testing.T, c *mdmtest.Cluster, i int) {
	t.Helper()
	for _, r := range []struct {
		path string
		body any
	}{
		{"/pd/create", map[string]any{"name": "pd1"}},
		{"/pool/create", map[string]any{"name": "pool1", "pd_id": 1, "protection_policy": "two_copies", "total_capacity_gb": 100}},
		{"/sdc/add", map[string]any{"name": "sdc1"}},
		{"/vol/create", map[string]any{"name": "vol1", "size_gb": 8, "provisioning": "thin", "pool_id": 1}},
	} {
		var e api.Error
		if code, _, err := c.Do(i, "POST", r.path, r.body, &e); err != nil || code != 200 {
			t.Fatalf("seed %s: %d %v %+v", r.path, code, err, e)
		}
	}
}

func TestAPIErrorsAreJSONWithTheRightStatus(t *testing.T) {
	c := mdmtest.StartCluster(t, 3)
	seed(t, c, 0)
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"POST", "/pd/create", map[string]any{"name": "pd1"}, 409, "conflict"},
		{"POST", "/pd/create", map[string]any{"name": ""}, 400, "invalid"},
		{"POST", "/pd/create", map[string]any{"nmae": "x"}, 400, "invalid"},
		{"POST", "/pd/create", nil, 400, "invalid"},
		{"DELETE", "/pd/1", nil, 409, "conflict"},
		{"GET", "/pd/99", nil, 404, "not_found"},
		{"GET", "/pd/abc", nil, 400, "invalid"},
		{"POST", "/vol/create", map[string]any{"name": "big", "size_gb": 200, "provisioning": "thick", "pool_id": 1}, 409, "conflict"},
		{"POST", "/vol/create", map[string]any{"name": "v2", "size_gb": 1, "pool_id": 42}, 404, "not_found"},
		{"POST", "/vol/extend", map[string]any{"volume_id": 1, "size_gb": 4}, 400, "invalid"},
		{"POST", "/vol/map", map[string]any{"volume_id": 1}, 400, "invalid"},
		{"GET", "/vol/1/labels/missing", nil, 404, "not_found"},
		{"GET", "/no/such/route", nil, 404, "not_found"},
	} {
		var e api.Error
		code, _, err := c.Do(1, tc.method, tc.path, tc.body, &e)
		if err != nil || code != tc.status || e.Code != tc.code || e.Error == "" {
			t.Errorf("%s %s: got %d %+v (%v), want %d %s", tc.method, tc.path, code, e, err, tc.status, tc.code)
		}
	}
}

func TestMapUnmapQueryParamsAndLabelsCompareAndSet(t *testing.T) {
	c := mdmtest.StartCluster(t, 3)
	seed(t, c, 2)
	var v fsm.Volume
	if code, _, err := c.Do(2, "POST", "/vol/map?volume_id=1&sdc_id=1&access_mode=readOnly", nil, &v); err != nil || code != 200 {
		t.Fatalf("map: %d %v", code, err)
	}
	if len(v.Mappings) != 1 || v.Mappings[0].AccessMode != "readOnly" || v.MapGeneration != 0 {
		t.Fatalf("mapping %+v", v)
	}
	// Limits change in place, through any replica, as query or JSON; an omitted one is kept.
	if code, _, err := c.Do(1, "POST", "/vol/limits?volume_id=1&sdc_id=1&iops_limit=300", nil, &v); err != nil || code != 200 ||
		v.Mappings[0].IOPSLimit != 300 || v.Mappings[0].BandwidthLimitMBps != 0 {
		t.Fatalf("limits by query: %d %v %+v", code, err, v)
	}
	if code, _, err := c.Do(0, "POST", "/vol/limits", map[string]any{"volume_id": 1, "sdc_id": 1, "bandwidth_limit_mbps": 40}, &v); err != nil ||
		code != 200 || v.Mappings[0].IOPSLimit != 300 || v.Mappings[0].BandwidthLimitMBps != 40 || v.MapGeneration != 0 {
		t.Fatalf("limits by JSON: %d %v %+v", code, err, v)
	}
	var mapped []api.MappedVolume
	if code, _, err := c.Do(2, "GET", "/sdc/1/volumes", nil, &mapped); err != nil || code != 200 || len(mapped) != 1 ||
		mapped[0].IOPSLimit != 300 || mapped[0].BandwidthLimitMBps != 40 {
		t.Fatalf("the SDC's view of its mappings: %d %v %+v", code, err, mapped)
	}
	for _, tc := range []struct {
		path   string
		body   any
		status int
	}{
		{"/vol/limits", map[string]any{"volume_id": 1, "sdc_id": 1}, 400},
		{"/vol/limits?volume_id=1&sdc_id=1&iops_limit=lots", nil, 400},
		{"/vol/limits", map[string]any{"volume_id": 1, "sdc_id": 1, "iops_limit": -1}, 400},
		{"/vol/limits", map[string]any{"volume_id": 1, "iops_limit": 5}, 400},
		{"/vol/limits", map[string]any{"volume_id": 1, "sdc_id": 2, "iops_limit": 5}, 404},
	} {
		var e api.Error
		if code, _, _ := c.Do(0, "POST", tc.path, tc.body, &e); code != tc.status || e.Error == "" {
			t.Errorf("POST %s %v: %d %+v, want %d", tc.path, tc.body, code, e, tc.status)
		}
	}
	var e api.Error
	if code, _, _ := c.Do(0, "DELETE", "/vol/1", nil, &e); code != 409 {
		t.Fatalf("delete mapped volume: %d %+v", code, e)
	}
	if code, _, err := c.Do(1, "POST", "/vol/unmap", map[string]any{"volume_id": 1, "sdc_id": 1}, &v); err != nil || code != 200 || v.MapGeneration != 1 {
		t.Fatalf("unmap: %d %v %+v", code, err, v)
	}

	empty, one := "", "1"
	var l fsm.Label
	if code, _, _ := c.Do(0, "PUT", "/vol/1/labels/owner", api.LabelRequest{Value: "1", Expect: &empty}, &l); code != 200 || l.Version != 1 {
		t.Fatalf("cas from absent: %d %+v", code, l)
	}
	if code, _, _ := c.Do(1, "PUT", "/vol/1/labels/owner", api.LabelRequest{Value: "2", Expect: &empty}, &e); code != 412 || e.Code != "precondition_failed" {
		t.Fatalf("stale cas: %d %+v", code, e)
	}
	if code, _, _ := c.Do(2, "PUT", "/vol/1/labels/owner", api.LabelRequest{Value: "2", Expect: &one}, &l); code != 200 || l.Value != "2" || l.Version != 2 {
		t.Fatalf("cas: %d %+v", code, l)
	}
	// A linearizable read through a follower sees the write just acknowledged.
	if code, _, _ := c.Do(1, "GET", "/vol/1/labels/owner", nil, &l); code != 200 || l.Value != "2" {
		t.Fatalf("read: %d %+v", code, l)
	}
}

func TestRetriedWriteWithRequestIDAppliesOnce(t *testing.T) {
	c := mdmtest.StartCluster(t, 3)
	post := func(i int) (int, fsm.ProtectionDomain) {
		req, _ := http.NewRequest("POST", c.URL(i)+"/pd/create", strings.NewReader(`{"name":"once"}`))
		req.Header.Set(api.HeaderRequestID, "req-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var pd fsm.ProtectionDomain
		mdmtest.DecodeBody(resp.Body, &pd)
		return resp.StatusCode, pd
	}
	c1, pd1 := post(0)
	c2, pd2 := post(1)
	if c1 != 200 || c2 != 200 || pd1.ID != pd2.ID {
		t.Fatalf("retry answered differently: %d %+v / %d %+v", c1, pd1, c2, pd2)
	}
	var pds []fsm.ProtectionDomain
	c.Do(0, "GET", "/pd/list", nil, &pds)
	if len(pds) != 1 {
		t.Fatalf("want one PD, got %+v", pds)
	}
}

func TestAdminTokenAndNoLeader(t *testing.T) {
	dir := t.TempDir()
	cfgs := mdmtest.Configs(t, dir, 3, "s3cret")
	// Start only one of three: it cannot elect itself.
	s, err := mdm.Start(cfgs[0], hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "http://" + cfgs[0].APIAddr
	var e api.Error
	if code, _, _ := mdmtest.DoJSON(base, "", "GET", "/pd/list", nil, &e); code != 401 || e.Code != "unauthorized" {
		t.Fatalf("no token: %d %+v", code, e)
	}
	if code, _, _ := mdmtest.DoJSON(base, "wrong", "GET", "/pd/list", nil, &e); code != 401 {
		t.Fatalf("wrong token: %d", code)
	}
	code, hdr, _ := mdmtest.DoJSON(base, "s3cret", "POST", "/pd/create", map[string]any{"name": "x"}, &e)
	if code != 503 || e.Code != "no_leader" || hdr.Get("Retry-After") == "" {
		t.Fatalf("no leader: %d %+v %v", code, e, hdr)
	}
	if code, _, _ := mdmtest.DoJSON(base, "", "GET", "/healthz", nil, nil); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	if code, _, _ := mdmtest.DoJSON(base, "", "GET", "/readyz", nil, nil); code != 503 {
		t.Fatalf("readyz without leader: %d", code)
	}
	// A stale read is served locally even without a leader.
	var pds []fsm.ProtectionDomain
	if code, _, _ := mdmtest.DoJSON(base, "s3cret", "GET", "/pd/list?stale=1", nil, &pds); code != 200 {
		t.Fatalf("stale read: %d", code)
	}
}

func TestClusterStatusJoinTransferRemove(t *testing.T) {
	c := mdmtest.StartCluster(t, 3)
	leader := c.WaitLeader(5 * time.Second)
	var st api.ClusterStatus
	if code, _, err := c.Do((leader+1)%3, "GET", "/cluster/status", nil, &st); err != nil || code != 200 {
		t.Fatalf("status: %d %v", code, err)
	}
	if st.State != "leader" || st.NodeID != c.Members[leader].Cfg.NodeID || len(st.Peers) != 3 || st.Digest == "" ||
		st.LeaderAPI != c.Members[leader].Cfg.APIAddr || st.Term == 0 || st.CommitIndex == 0 {
		t.Fatalf("status %+v", st)
	}
	for _, p := range st.Peers {
		if p.APIAddr == "" || p.Suffrage != "voter" {
			t.Fatalf("peer %+v", p)
		}
	}

	// Join a fourth MDM that starts with no peers and waits to be added.
	cfg4 := mdmtest.Configs(t, t.TempDir(), 1, "")[0]
	cfg4.NodeID, cfg4.Peers = "mdm-4", nil
	cfg4.DataDir = filepath.Join(t.TempDir(), "mdm-4")
	s4, err := mdm.Start(cfg4, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	c.Members = append(c.Members, &mdmtest.Member{Cfg: cfg4, Server: s4})
	var peers []api.Peer
	if code, _, err := c.Do(0, "POST", "/cluster/join", api.JoinRequest{NodeID: "mdm-4", RaftAddr: cfg4.RaftAddr, APIAddr: cfg4.APIAddr}, &peers); err != nil || code != 200 || len(peers) != 4 {
		t.Fatalf("join: %d %v %+v", code, err, peers)
	}
	c.WaitConverged(10 * time.Second)

	// Transfer leadership to mdm-4, then remove the old leader.
	var tr api.TransferResponse
	if code, _, err := c.Do(1, "POST", "/cluster/transfer-leadership", api.TransferRequest{NodeID: "mdm-4"}, &tr); err != nil || code != 200 {
		t.Fatalf("transfer: %d %v", code, err)
	}
	if newLeader := c.WaitLeader(10 * time.Second); newLeader != 3 {
		t.Fatalf("leader after transfer is %d, want mdm-4", newLeader)
	}
	old := c.Members[leader].Cfg.NodeID
	if code, _, err := c.Do(3, "POST", "/cluster/remove", api.RemoveRequest{NodeID: old}, &peers); err != nil || code != 200 || len(peers) != 3 {
		t.Fatalf("remove: %d %v %+v", code, err, peers)
	}
	var e api.Error
	if code, _, _ := c.Do(3, "POST", "/cluster/remove", api.RemoveRequest{NodeID: "nope"}, &e); code != 404 {
		t.Fatalf("remove unknown: %d %+v", code, e)
	}
	c.Kill(leader)
	if code, _, err := c.Do(3, "POST", "/pd/create", map[string]any{"name": "after-remove"}, nil); err != nil || code != 200 {
		t.Fatalf("write after remove: %d %v", code, err)
	}
}

func TestSnapshotDownloadAndRestore(t *testing.T) {
	c := mdmtest.StartCluster(t, 3)
	seed(t, c, 0)
	resp, err := http.Get(c.URL(1) + "/cluster/snapshot")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("snapshot: %v %v", err, resp)
	}
	backup, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := c.WaitConverged(5 * time.Second)

	// Change the state, then restore the backup: the change is gone on every replica.
	c.Do(0, "POST", "/pd/create", map[string]any{"name": "later"}, nil)
	var e api.Error
	r, _ := http.Post(c.URL(2)+"/cluster/restore", "application/octet-stream", bytes.NewReader([]byte("not a database")))
	mdmtest.DecodeBody(r.Body, &e)
	r.Body.Close()
	if r.StatusCode != 400 || e.Code != "invalid" {
		t.Fatalf("garbage restore: %d %+v", r.StatusCode, e)
	}
	r, err = http.Post(c.URL(2)+"/cluster/restore", "application/octet-stream", bytes.NewReader(backup))
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("restore: %v %v", err, r)
	}
	var rr api.RestoreResponse
	mdmtest.DecodeBody(r.Body, &rr)
	r.Body.Close()
	if !rr.Restored || rr.Digest == "" {
		t.Fatalf("restore response %+v", rr)
	}
	// The restore carried no request id, so the state is exactly the backup's.
	if got := c.WaitConverged(5 * time.Second); got != want {
		t.Fatalf("digest after restore %s, want the backup's %s", got, want)
	}
	for i := range c.Members {
		var pds []fsm.ProtectionDomain
		var vols []fsm.Volume
		c.Do(i, "GET", "/pd/list?stale=1", nil, &pds)
		c.Do(i, "GET", "/vol/list?stale=1", nil, &vols)
		if len(pds) != 1 || pds[0].Name != "pd1" || len(vols) != 1 || vols[0].Name != "vol1" {
			t.Fatalf("member %d after restore: %+v %+v", i, pds, vols)
		}
	}
}
