package systest

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"pflex/internal/api"
	"pflex/jepsen"
	"pflex/mdm"
	"pflex/mdm/mdmtest"
)

// Rebuild with real processes: after an SDS dies the pool goes back to OK by itself, the two
// copies of every chunk byte-identical; a leader killed mid-rebuild does not stop it.

// waitHealthOK polls pool 1's health until OK and returns every health seen on the way.
func (ic *ioCluster) waitHealthOK(timeout time.Duration) map[string]bool {
	ic.t.Helper()
	seen := map[string]bool{}
	ic.waitFor("pool health back to OK", timeout, func() bool {
		var h mdm.PoolHealth
		leader := ic.mdms.WaitLeader(10 * time.Second)
		if code, err := getPoolHealth(ic, leader, &h); err != nil || code != 200 {
			return false
		}
		seen[h.Health] = true
		return h.Health == mdm.HealthOK
	})
	return seen
}

func getPoolHealth(ic *ioCluster, leader int, h *mdm.PoolHealth) (int, error) {
	code, _, err := mdmtest.DoJSON(ic.mdms.URL(leader), ic.mdms.Token, "GET", "/pool/1/health", nil, h)
	return code, err
}

func (ic *ioCluster) rebuildStatus() api.RebuildStatus {
	ic.t.Helper()
	var st api.RebuildStatus
	ic.get("/rebuild/status/1", &st)
	return st
}

// writeChunks writes n MiB of distinct data from MiB base of the export, 1 MiB per request.
func writeChunks(t testing.TB, addr, export string, base, n int) {
	t.Helper()
	conn, err := jepsen.DialNBD(context.Background(), addr, export, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 1<<20)
	for i := range n {
		mibPattern(buf, i)
		if err := conn.Write(uint64(base+i)<<20, buf, time.Now().Add(30*time.Second)); err != nil {
			t.Fatalf("write MiB %d: %v", i, err)
		}
	}
}

// A rebuild throttled to last several seconds survives the MDM leader's kill -9 (the new leader
// resumes it from the committed batch and the sources' repeated reports) and a source SDS's
// restart (it copies its share again).
func TestRebuildSurvivesLeaderKillAndSourceRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	ic := startFailureClusterWith(t, "", "rebuild_mbps = 8\n")
	vol := ic.volume("vol1", 1, "readWrite")
	writeChunks(t, ic.nbd, "vol1", 0, 96)
	before := ic.volLayout(vol)
	victim := ic.sdsByID(before.Replicas(0)[0])
	victim.Kill9()
	ic.waitFor("the rebuild copying", 30*time.Second, func() bool {
		st := ic.rebuildStatus()
		return st.State == "rebuilding" && st.BytesDone > 0
	})
	leader := ic.mdms.WaitLeader(10 * time.Second)
	mid := ic.rebuildStatus()
	ic.mdms.Kill9(leader)
	t.Logf("killed MDM leader %d with the rebuild at %d/%d chunks", leader, mid.ChunksDone, mid.ChunksTotal)
	// A source of the batch restarts at once (kill -9, start): whether or not the MDM saw it
	// down, it copies its share again and the rebuild completes.
	var source component
	for _, s := range ic.sdss {
		if s.Name != victim.Name {
			source = s
			break
		}
	}
	time.Sleep(time.Second)
	source.Kill9()
	source.Start()
	seen := ic.waitHealthOK(120 * time.Second)
	ic.mdms.Start(leader)
	copies := ic.replicasIdentical(vol, victim.Name)
	if copies < 96 {
		t.Fatalf("%d chunks with two copies, want the 96 written", copies)
	}
	end := ic.rebuildStatus()
	t.Logf("rebuild finished under the new leader: health seen %v; status %s, %d chunks done; %d chunks with two identical copies",
		seen, end.State, end.ChunksDone, copies)
	writeCheck(t, ic, "vol1", 0, 96)
}

// mibPattern fills buf with the content writeChunks gives MiB i.
func mibPattern(buf []byte, i int) {
	for j := range buf {
		buf[j] = byte(i*7 + j*13 + j>>9)
	}
}

// writeCheck reads n MiB from MiB base back through NBD and compares them with writeChunks' data.
func writeCheck(t testing.TB, ic *ioCluster, export string, base, n int) {
	t.Helper()
	conn, err := jepsen.DialNBD(context.Background(), ic.nbd, export, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want := make([]byte, 1<<20)
	for i := range n {
		mibPattern(want, i)
		got, err := conn.Read(uint64(base+i)<<20, 1<<20, time.Now().Add(30*time.Second))
		if err != nil {
			t.Fatalf("read MiB %d: %v", i, err)
		}
		if string(got) != string(want) {
			t.Fatalf("MiB %d reads back different data", i)
		}
	}
}

// BenchmarkRebuildThroughput: 1 GiB written through NBD, one SDS killed, rebuild unthrottled
// (rebuild_mbps = 0): bytes the sources copied over the time from the kill's exclusion to pool
// health OK, next to a plain local copy (dd with fsync) of the same number of bytes on the same
// disk. Figures: docs/BENCHMARKS.md.
func BenchmarkRebuildThroughput(b *testing.B) {
	ic := startFailureClusterWith(b, "", "rebuild_mbps = 0\n")
	vol := ic.volume("vol1", 2, "readWrite")
	src := filepath.Join(b.TempDir(), "src.img")
	if out, err := exec.Command("dd", "if=/dev/urandom", "of="+src, "bs=1M", "count=1024", "status=none").CombinedOutput(); err != nil {
		b.Fatalf("dd: %v %s", err, out)
	}
	if out, err := exec.Command("nbdcopy", src, ic.uri("vol1")).CombinedOutput(); err != nil {
		b.Fatalf("nbdcopy: %v %s", err, out)
	}
	before := ic.volLayout(vol)
	victim := ic.sdsByID(before.Replicas(0)[0])
	victim.Kill9()
	ic.waitFor("the rebuild started", 60*time.Second, func() bool { return ic.rebuildStatus().State == "rebuilding" })
	start := time.Now()
	ic.waitHealthOK(10 * time.Minute)
	took := time.Since(start)
	st := ic.rebuildStatus()
	copies := ic.replicasIdentical(vol, victim.Name)
	mbps := float64(st.BytesDone) / (1 << 20) / took.Seconds()

	// The same bytes copied plainly on the same disk.
	dst := filepath.Join(b.TempDir(), "dst.img")
	t0 := time.Now()
	if out, err := exec.Command("dd", "if="+src, "of="+dst, "bs=1M", fmt.Sprintf("count=%d", st.BytesDone>>20), "conv=fsync", "status=none").CombinedOutput(); err != nil {
		b.Fatalf("dd copy: %v %s", err, out)
	}
	plain := time.Since(t0)
	plainMBps := float64(st.BytesDone) / (1 << 20) / plain.Seconds()
	b.Logf("bench_rebuild: %d MiB rebuilt (%d chunks) in %s = %.0f MiB/s; plain copy (dd conv=fsync) %s = %.0f MiB/s; ratio %.2f; %d chunks with two identical copies",
		st.BytesDone>>20, st.ChunksDone, took.Round(time.Millisecond), mbps, plain.Round(time.Millisecond), plainMBps, mbps/plainMBps, copies)
}

// Instant maintenance mode with real processes: an SDS enters maintenance under a verifying NBD
// write workload (no NBD error), is stopped and started again as for a reboot, exits, and only
// the chunks written meanwhile are copied back to it; afterwards every acknowledged block reads
// back and both copies of every chunk are identical.
func TestMaintenanceModeResyncsTheDelta(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	ic := startFailureCluster(t, "")
	vol := ic.volume("vol1", 1, "readWrite")
	writeChunks(t, ic.nbd, "vol1", 600, 64) // beyond the workload's blocks
	before := ic.volLayout(vol)
	target := ic.sdsByID(before.Replicas(0)[1])
	id := before.Replicas(0)[1]

	w := startNBDWorkload(t, ic.nbd, "vol1", 2)
	time.Sleep(500 * time.Millisecond)
	ic.post(fmt.Sprintf("/sds/%d/maintenance/enter", id), nil)
	time.Sleep(time.Second)
	held := len(ic.chunkList(target, vol)) // out of every replica set by now: nothing changes here
	target.Kill9()                         // the planned reboot
	time.Sleep(2 * time.Second)
	target.Start()
	ic.waitFor("the SDS back and heartbeating", 30*time.Second, func() bool {
		m := ic.members()
		return m[target.Name].Registered && m[target.Name].State == "up"
	})
	if got := len(ic.chunkList(target, vol)); got != held {
		t.Fatalf("the SDS in maintenance holds %d copies, had %d", got, held)
	}
	var sentBefore int64
	for _, s := range ic.sdss {
		if s.Name != target.Name {
			sentBefore += ic.rebuildSent(s)
		}
	}
	ic.post(fmt.Sprintf("/sds/%d/maintenance/exit", id), nil)
	seen := ic.waitHealthOK(60 * time.Second)
	w.stop()
	if len(w.errs) > 0 {
		t.Fatalf("NBD errors during maintenance: %v", w.errs)
	}
	var sent int64
	for _, s := range ic.sdss {
		if s.Name != target.Name {
			sent += ic.rebuildSent(s)
		}
	}
	sent -= sentBefore
	n := w.verify(t, ic.nbd, "vol1")
	copies := ic.replicasIdentical(vol)
	writeCheck(t, ic, "vol1", 600, 64)
	placed := int64(0) // chunks the maintenance took from it, written or not
	for c := range before.Chunks() {
		if slices.Contains(before.Replicas(c), id) {
			placed++
		}
	}
	t.Logf("maintenance of %s: %d acknowledged writes (worst stall %s), health seen %v; re-sync copied %d of the %d chunks it got back (it held %d copies); %d chunks with two identical copies",
		target.Name, n, w.stall().Round(time.Millisecond), seen, sent, placed, held, copies)
	if sent == 0 || sent >= placed {
		t.Fatalf("the re-sync copied %d chunks of the %d it got back: not a delta", sent, placed)
	}
}

// chunkList is GET /volumes/{vol}/chunks of an SDS.
func (ic *ioCluster) chunkList(s component, vol int64) []chunkReplica {
	ic.t.Helper()
	var list struct {
		Chunks []chunkReplica `json:"chunks"`
	}
	ic.waitFor(s.Name+" chunk list", 30*time.Second, func() bool {
		return getJSON(fmt.Sprintf("http://%s/volumes/%d/chunks", s.api, vol), &list) == nil
	})
	return list.Chunks
}

// rebuildSent is how many chunks an SDS copied as a rebuild source.
func (ic *ioCluster) rebuildSent(s component) int64 {
	var st struct {
		Data struct {
			Rebuild struct {
				ChunksSent int64 `json:"chunks_sent"`
			} `json:"rebuild"`
		} `json:"data"`
	}
	if err := getJSON("http://"+s.api+"/status", &st); err != nil {
		ic.t.Fatalf("%s status: %v", s.Name, err)
	}
	return st.Data.Rebuild.ChunksSent
}
