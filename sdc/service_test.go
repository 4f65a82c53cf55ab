package sdc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/promtext"
	"pflex/internal/wire"
)

// startTestService runs a whole SDC (agent, exporter, NBD, control API) against the cluster.
func startTestService(t *testing.T, c *fakeCluster, ioTimeout string) *Service {
	t.Helper()
	cfg := validConfig()
	cfg.DataDir = filepath.Join(t.TempDir(), "sdc1")
	cfg.APIAddr, cfg.MgmtAddr, cfg.NBDAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.HeartbeatInterval = "50ms"
	cfg.VolumePollInterval = "50ms"
	cfg.IOTimeout = ioTimeout
	cfg.MDM = []string{c.mdmAddr()}
	cfg.Gossip.BindAddr, cfg.Gossip.Join = "127.0.0.1:0", nil
	s, err := Start(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func waitExported(t *testing.T, s *Service, name string) *Volume {
	t.Helper()
	var v *Volume
	waitFor(t, "export "+name, 10*time.Second, func() bool {
		var ok bool
		v, ok = s.Exporter().VolumeByName(name)
		return ok
	})
	return v
}

// postJSON posts body and decodes the answer into out; it returns the HTTP status.
func postJSON(t *testing.T, url string, body, out any) int {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case string:
		rd = strings.NewReader(b)
	default:
		js, _ := json.Marshal(body)
		rd = bytes.NewReader(js)
	}
	resp, err := http.Post(url, "application/json", rd)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s: %v: %s", url, err, data)
		}
	}
	return resp.StatusCode
}

func TestControlAPIRoundTrip(t *testing.T) {
	c := newFakeCluster(t, 3)
	c.addVolume(4, "vol4", fsm.ReadWrite)
	c.addVolume(5, "ro5", fsm.ReadOnly)
	s := startTestService(t, c, "400ms")
	waitExported(t, s, "vol4")
	waitExported(t, s, "ro5")
	base := "http://" + s.APIAddr()

	// The prototype's smoke test, across a chunk boundary.
	payload := []byte("test-data")
	off := int64(testChunkSize - 4)
	var wr IOWriteResponse
	if code := postJSON(t, base+"/vol/4/io/write", map[string]any{"sdc_id": testSDCID, "offset_bytes": off,
		"data_b64": base64.StdEncoding.EncodeToString(payload)}, &wr); code != 200 || wr.WrittenBytes != 9 {
		t.Fatalf("write: %d %+v", code, wr)
	}
	var rd IOReadResponse
	if code := postJSON(t, base+"/vol/4/io/read", map[string]any{"sdc_id": testSDCID, "offset_bytes": off, "length_bytes": 9}, &rd); code != 200 {
		t.Fatalf("read: %d", code)
	}
	if got, _ := base64.StdEncoding.DecodeString(rd.DataB64); string(got) != "test-data" {
		t.Fatalf("read back %q", got)
	}

	for _, tc := range []struct {
		path, body string
		status     int
		code       string
	}{
		{"/vol/99/io/read", `{"offset_bytes":0,"length_bytes":1}`, 404, codeNotMapped},
		{"/vol/x/io/read", `{"offset_bytes":0,"length_bytes":1}`, 400, api.CodeBadRequest},
		{"/vol/4/io/read", `{"offset_bytes":-1,"length_bytes":1}`, 400, api.CodeBadRequest},
		{"/vol/4/io/read", fmt.Sprintf(`{"offset_bytes":%d,"length_bytes":2}`, testVolSize-1), 400, api.CodeBadRequest},
		{"/vol/4/io/read", `{"offset_bytes":`, 400, api.CodeBadRequest},
		{"/vol/4/io/write", `{"offset_bytes":0,"data_b64":"***"}`, 400, api.CodeBadRequest},
		{"/vol/5/io/write", `{"offset_bytes":0,"data_b64":"AAAA"}`, 403, codeReadOnly},
	} {
		var e api.Error
		if got := postJSON(t, base+tc.path, tc.body, &e); got != tc.status || e.Code != tc.code || e.Error == "" {
			t.Errorf("%s %s: %d %+v, want %d %s", tc.path, tc.body, got, e, tc.status, tc.code)
		}
	}

	// An IO that cannot succeed within io_timeout is a 503.
	for _, sds := range c.sds {
		sds.setInject(func(req *wire.Request) (wire.Status, bool) { return wire.StatusRetry, req.Op == wire.OpRead })
	}
	var e api.Error
	if got := postJSON(t, base+"/vol/4/io/read", `{"offset_bytes":0,"length_bytes":10}`, &e); got != 503 || e.Code != api.CodeTimeout {
		t.Fatalf("timeout: %d %+v", got, e)
	}

	// GET /status: membership and exports with token expiry, layout epoch and counters.
	resp, err := http.Get(base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Role != Role || st.SDCID != testSDCID || len(st.Exports) != 2 || st.NBDAddr != s.NBDAddr() {
		t.Fatalf("status %+v", st)
	}
	ro, vol := st.Exports[0], st.Exports[1]
	if vol.Name != "vol4" || vol.Writes != 1 || vol.Reads != 2 || vol.Timeouts != 1 || vol.LayoutEpoch != 1 ||
		vol.TokenExpiresAt.Before(time.Now()) || vol.AccessMode != fsm.ReadWrite || ro.AccessMode != fsm.ReadOnly {
		t.Fatalf("exports %+v", st.Exports)
	}

	// GET /metrics: the same counters in Prometheus's format, on both listeners.
	for _, addr := range []string{s.APIAddr(), s.MgmtAddr()} {
		text := getText(t, "http://"+addr+"/metrics")
		if err := promtext.Validate(text); err != nil {
			t.Fatalf("GET /metrics on %s: %v\n%s", addr, err, text)
		}
		for _, want := range []string{
			`pflex_sdc_writes_total{node="sdc-1",volume="vol4"} 1`,
			`pflex_sdc_timeouts_total{node="sdc-1",volume="vol4"} 1`,
			`pflex_sdc_iops_limit{node="sdc-1",volume="ro5"} 0`,
			`pflex_sdc_exports{node="sdc-1"} 2`,
			`pflex_registered{node="sdc-1",role="sdc"} 1`,
		} {
			if !strings.Contains(text, want+"\n") {
				t.Fatalf("GET /metrics on %s lacks %q:\n%s", addr, want, text)
			}
		}
	}
}

// The SDC's heartbeats name the SDSs its probes lost, for the MDMs' members list.
func TestHeartbeatsNameUnreachableSDSs(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(4, "vol4", fsm.ReadWrite)
	s := startTestService(t, c, "5s")
	v := waitExported(t, s, "vol4")
	if err := v.WriteAt(context.Background(), make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err) // the SDC now talks to an SDS, and probes it
	}
	for _, sds := range c.sds {
		sds.ln.Close() // connections refused from now on
		sds.dropConns()
	}
	heard := func() []string {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.unreachable
	}
	waitFor(t, "a heartbeat naming the unreachable SDSs", 10*time.Second, func() bool { return len(heard()) > 0 })
	for _, addr := range heard() {
		if addr != c.sds[1].addr && addr != c.sds[2].addr {
			t.Fatalf("heartbeat names %v, not the SDS addresses %s, %s", heard(), c.sds[1].addr, c.sds[2].addr)
		}
	}
}

// getText is the body of a GET that must answer 200.
func getText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func TestNBDWithQemuIO(t *testing.T) {
	if _, err := exec.LookPath("qemu-io"); err != nil {
		t.Skipf("qemu-io not installed: %v", err)
	}
	c := newFakeCluster(t, 3)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	c.addVolume(2, "snap", fsm.ReadOnly)
	s := startTestService(t, c, "5s")
	v := waitExported(t, s, "vol1")
	waitExported(t, s, "snap")
	uri := "nbd://" + s.NBDAddr() + "/vol1"

	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := run("qemu-io", "-f", "raw", uri,
		"-c", "write -P 0xab 0 512k", // 8 chunks, in requests qemu may cut
		"-c", "read -P 0xab 0 512k",
		"-c", fmt.Sprintf("write -P 0xcd %d 70001", testChunkSize-1000), // unaligned, across chunks
		"-c", fmt.Sprintf("read -P 0xcd %d 70001", testChunkSize-1000),
		"-c", "write -f -P 0x11 600k 3333", // FUA
		"-c", "read -P 0x11 600k 3333",
		"-c", "write -z 700k 128k", // WRITE_ZEROES
		"-c", "read -P 0 700k 128k",
		"-c", "discard 900k 64k", // TRIM
		"-c", "flush",
	)
	if strings.Contains(out, "fail") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io reported a failure:\n%s", out)
	}
	// The bytes are on the SDSs, each chunk on its primary.
	want := bytes.Repeat([]byte{0xab}, 512<<10)
	copy(want[testChunkSize-1000:], bytes.Repeat([]byte{0xcd}, 70001))
	l := c.trueLayout(1)
	for chunk := int64(0); chunk < 8; chunk++ {
		got := c.sds[l.Replicas(chunk)[0]].chunk(1, chunk)
		if !bytes.Equal(got, want[chunk*testChunkSize:(chunk+1)*testChunkSize]) {
			t.Fatalf("chunk %d on its primary differs from what qemu-io wrote", chunk)
		}
	}
	flushes := 0
	for _, sds := range c.sds {
		flushes += len(sds.opsOf(wire.OpFlush))
	}
	if flushes < 3 {
		t.Fatalf("flush reached %d SDSs, want all 3", flushes)
	}
	if st := v.Status(); st.Writes < 3 || st.WriteZeroes < 1 || st.Trims < 1 || st.Flushes < 1 {
		t.Fatalf("status after qemu-io: %+v", st)
	}

	// The read-only mapping is a read-only export: writes fail, reads work.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	roOut, _ := exec.CommandContext(ctx, "qemu-io", "-f", "raw", "nbd://"+s.NBDAddr()+"/snap", "-c", "write -P 1 0 4k").CombinedOutput()
	if !strings.Contains(string(roOut), "ermission") && !strings.Contains(string(roOut), "read-only") && !strings.Contains(string(roOut), "read only") {
		t.Fatalf("write to the read-only export:\n%s", roOut)
	}
	run("qemu-io", "-r", "-f", "raw", "nbd://"+s.NBDAddr()+"/snap", "-c", "read -P 0 0 64k")

	// Unmapped: the export disappears.
	c.unmap(1)
	waitFor(t, "vol1 unexported", 5*time.Second, func() bool { _, ok := s.Exporter().Exports().Lookup("vol1"); return !ok })
	bad, err := exec.CommandContext(ctx, "qemu-io", "-f", "raw", uri, "-c", "read 0 4k").CombinedOutput()
	if err == nil && !strings.Contains(string(bad), "rror") && !strings.Contains(string(bad), "fail") {
		t.Fatalf("unmapped export still served:\n%s", bad)
	}
}
