package mdm_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"pflex/internal/api"
	"pflex/internal/promtext"
	"pflex/mdm/mdmtest"
)

func TestRebuildRoutes(t *testing.T) {
	c := mdmtest.StartCluster(t, 3)
	seed(t, c, 0)
	leader := c.WaitLeader(10e9)
	follower := (leader + 1) % 3
	good := api.RebuildReport{SDSID: 1, VolumeID: 1, Epoch: 2, Ordered: 10, Chunks: 1, Total: 2, Bytes: 1 << 20}
	bad := func(mut func(r *api.RebuildReport)) api.RebuildReport { r := good; mut(&r); return r }
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"POST", "/rebuild/report", good, 200, ""},
		{"POST", "/rebuild/report", bad(func(r *api.RebuildReport) { r.SDSID = 0 }), 400, "invalid"},
		{"POST", "/rebuild/report", bad(func(r *api.RebuildReport) { r.VolumeID = -3 }), 400, "invalid"},
		{"POST", "/rebuild/report", bad(func(r *api.RebuildReport) { r.Epoch = 0 }), 400, "invalid"},
		{"POST", "/rebuild/report", bad(func(r *api.RebuildReport) { r.Bytes = -1 }), 400, "invalid"},
		{"POST", "/rebuild/report", bad(func(r *api.RebuildReport) { r.Chunks = -1 }), 400, "invalid"},
		{"POST", "/rebuild/report", map[string]any{"sds_id": 1, "bogus": 2}, 400, "invalid"},
		{"POST", "/rebuild/report", nil, 400, "invalid"},
		{"GET", "/rebuild/status/99", nil, 404, "not_found"},
		{"GET", "/rebuild/status/abc", nil, 400, "invalid"},
		{"GET", "/rebuild/status/0", nil, 400, "invalid"},
		{"POST", "/rebuild/start/99", nil, 404, "not_found"},
		{"POST", "/rebuild/cancel/99", nil, 404, "not_found"},
		{"POST", "/rebuild/cancel/x", nil, 400, "invalid"},
	} {
		var e api.Error
		code, _, err := c.Do(follower, tc.method, tc.path, tc.body, &e)
		if err != nil || code != tc.status || e.Code != tc.code {
			t.Errorf("%s %s %+v: got %d %+v (%v), want %d %s", tc.method, tc.path, tc.body, code, e, err, tc.status, tc.code)
		}
	}

	var st api.RebuildStatus
	if code, _, err := c.Do(follower, "GET", "/rebuild/status/1", nil, &st); err != nil || code != 200 || st.State != "idle" || st.Health == "" || st.ETASeconds != 0 {
		t.Fatalf("status: %d %v %+v", code, err, st)
	}
	if code, _, err := c.Do(follower, "POST", "/rebuild/cancel/1", nil, nil); err != nil || code != 200 {
		t.Fatalf("cancel: %d %v", code, err)
	}
	if code, _, _ := c.Do(follower, "GET", "/rebuild/status/1", nil, &st); code != 200 || st.State != "cancelled" {
		t.Fatalf("status after cancel: %d %+v", code, st)
	}
	if code, _, err := c.Do(follower, "POST", "/rebuild/start/1", nil, nil); err != nil || code != 200 {
		t.Fatalf("start: %d %v", code, err)
	}
	if code, _, _ := c.Do(follower, "GET", "/rebuild/status/1", nil, &st); code != 200 || st.State != "idle" {
		t.Fatalf("status after start: %d %+v", code, st)
	}

	resp, err := http.Get(c.URL(leader) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if err := promtext.Validate(string(body)); err != nil {
		t.Fatalf("/metrics: %v\n%s", err, body)
	}
	for _, want := range []string{`pflex_pool_degraded_chunks{node=`, `pool_id="1",pool="pool1"} 0`, "pflex_rebuild_chunks_done_total{", "pflex_rebuild_bytes_total{",
		"# TYPE pflex_raft_is_leader gauge\npflex_raft_is_leader{node=", `kind="pools"} 1`, "# TYPE pflex_http_request_seconds summary",
		"pflex_http_request_seconds_count{node=", `code="200"} `} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
