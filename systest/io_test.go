package systest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/mdm/mdmtest"
	"pflex/sdc"
)

// The data path end to end: three MDM, three SDS (file devices) and one SDC processes; real NBD
// clients write and read through the SDC; every chunk has two identical replicas; the token
// ledger matches what the clients did; read-only maps and unmaps are enforced.

type ioCluster struct {
	*cluster
	sdss []component
	sdc  component
	nbd  string
}

func needTools(t *testing.T, tools ...string) {
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (.ci/run installs qemu-utils, libnbd-bin and fio)", tool)
		}
	}
}

func startIOCluster(t *testing.T) *ioCluster { return startIOClusterTB(t) }

func startIOClusterTB(t testing.TB) *ioCluster {
	c := startCluster(t, "5s")
	ic := &ioCluster{cluster: c}
	dir := t.TempDir()
	for i := 1; i <= 3; i++ {
		s := c.sdsDevice(fmt.Sprintf("sds-%d", i), mdmtest.TestGossipKey, filepath.Join(dir, fmt.Sprintf("sds%d.img", i)), 4)
		s.Start()
		ic.sdss = append(ic.sdss, s)
	}
	ic.sdc, ic.nbd = c.sdcNBD("sdc-1")
	ic.sdc.Start()
	c.waitFor("three SDSs and the SDC registered and up", 30*time.Second, func() bool {
		m := c.members()
		for _, id := range []string{"sds-1", "sds-2", "sds-3", "sdc-1"} {
			if !m[id].Registered || m[id].State != "up" {
				return false
			}
		}
		return true
	})
	ic.post("/pool/create", map[string]any{"name": "pool1", "pd_id": 1, "total_capacity_gb": 10})
	return ic
}

func (ic *ioCluster) post(path string, body any) {
	ic.t.Helper()
	var e api.Error
	leader := ic.mdms.WaitLeader(10 * time.Second)
	if code, _, err := mdmtest.DoJSON(ic.mdms.URL(leader), ic.mdms.Token, "POST", path, body, &e); err != nil || code != 200 {
		ic.t.Fatalf("POST %s: %d %v %+v", path, code, err, e)
	}
}

func (ic *ioCluster) get(path string, out any) {
	ic.t.Helper()
	leader := ic.mdms.WaitLeader(10 * time.Second)
	if code, _, err := mdmtest.DoJSON(ic.mdms.URL(leader), ic.mdms.Token, "GET", path, nil, out); err != nil || code != 200 {
		ic.t.Fatalf("GET %s: %d %v", path, code, err)
	}
}

// volume creates a thin volume of sizeGB and maps it to the SDC in mode; it returns its id
// once the SDC exports it.
func (ic *ioCluster) volume(name string, sizeGB int, mode string) int64 {
	var v fsm.Volume
	leader := ic.mdms.WaitLeader(10 * time.Second)
	if code, _, err := mdmtest.DoJSON(ic.mdms.URL(leader), ic.mdms.Token, "POST", "/vol/create",
		map[string]any{"name": name, "size_gb": sizeGB, "pool_id": 1}, &v); err != nil || code != 200 {
		ic.t.Fatalf("create %s: %d %v", name, code, err)
	}
	ic.post("/vol/map", map[string]any{"volume_id": v.ID, "sdc_id": 1, "access_mode": mode})
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command("nbdinfo", ic.uri(name)).CombinedOutput()
		if err == nil {
			return v.ID
		}
		if time.Now().After(deadline) {
			ic.t.Fatalf("export %s not within 20s: nbdinfo: %v %s", name, err, out) // the SDC's log follows (mdmtest)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sdcQoS is the export's limits and throttling as the SDC's GET /status shows them.
func (ic *ioCluster) sdcQoS(t *testing.T, export string) sdc.QoSStatus {
	var st struct{ Exports []sdc.VolumeStatus }
	resp, err := http.Get("http://" + ic.sdc.api + "/status")
	if err != nil {
		t.Fatalf("SDC status: %v", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("SDC status: %v", err)
	}
	for _, e := range st.Exports {
		if e.Name == export {
			return e.QoS
		}
	}
	t.Fatalf("SDC status lists no export %s: %+v", export, st.Exports)
	return sdc.QoSStatus{}
}

func (ic *ioCluster) uri(name string) string { return "nbd://" + ic.nbd + "/" + name }

// unixURI is the export's URI on the SDC's NBD Unix socket.
func (ic *ioCluster) unixURI(name string) string {
	return "nbd+unix:///" + name + "?socket=" + ic.sdc.socket
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func sha(t *testing.T, path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

type chunkReplica struct {
	Chunk     int64  `json:"chunk"`
	Checksum  string `json:"crc32c"`
	Allocated bool   `json:"allocated"`
	Role      string `json:"role"`
}

// replicasIdentical asserts every written chunk of vol is on exactly two SDSs, byte-identical;
// the SDSs named in except (down) are not asked. Copies a move or rebuild superseded are given a
// few seconds to be dropped (each SDS drops them once it learns the new epoch).
func (ic *ioCluster) replicasIdentical(vol int64, except ...string) int {
	ic.t.Helper()
	var copies map[int64][]string
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		copies = ic.replicaSums(vol, except...)
		extra := false
		for _, sums := range copies {
			extra = extra || len(sums) > 2
		}
		if !extra || time.Now().After(end) {
			break
		}
	}
	for chunk, sums := range copies {
		if len(sums) != 2 || sums[0] != sums[1] {
			ic.t.Fatalf("volume %d chunk %d: replicas %v", vol, chunk, sums)
		}
	}
	return len(copies)
}

// replicaSums lists the CRC-32C of every allocated copy of vol's chunks, per chunk.
func (ic *ioCluster) replicaSums(vol int64, except ...string) map[int64][]string {
	ic.t.Helper()
	copies := map[int64][]string{}
	for _, s := range ic.sdss {
		if slices.Contains(except, s.Name) {
			continue
		}
		resp, err := http.Get(fmt.Sprintf("http://%s/volumes/%d/chunks?checksum=1", s.api, vol))
		if err != nil {
			ic.t.Fatalf("%s chunks: %v", s.Name, err)
		}
		var list struct {
			Chunks []chunkReplica `json:"chunks"`
		}
		body := new(bytes.Buffer)
		body.ReadFrom(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(body.Bytes(), &list); err != nil {
			var plain []chunkReplica
			if err2 := json.Unmarshal(body.Bytes(), &plain); err2 != nil {
				ic.t.Fatalf("%s chunks: %v: %s", s.Name, err, body)
			}
			list.Chunks = plain
		}
		for _, c := range list.Chunks {
			if c.Allocated && c.Checksum == "" {
				ic.t.Fatalf("%s chunk %d: no checksum in the listing", s.Name, c.Chunk)
			}
			if c.Allocated {
				copies[c.Chunk] = append(copies[c.Chunk], c.Checksum)
			}
		}
	}
	return copies
}

func TestDataPathWithRealNBDClients(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	needTools(t, "nbdinfo", "nbdcopy", "qemu-io")
	ic := startIOCluster(t)
	vol := ic.volume("vol1", 1, "readWrite")
	if out := run(t, "nbdinfo", ic.uri("vol1")); !strings.Contains(out, "1073741824") {
		t.Fatalf("nbdinfo: %s", out)
	}

	// qemu-io pattern write and read, aligned and not.
	run(t, "qemu-io", "-f", "raw", ic.uri("vol1"), "-c", "write -P 0xab 0 4M", "-c", "write -P 0xcd 5000001 70001")
	run(t, "qemu-io", "-f", "raw", ic.uri("vol1"), "-c", "read -P 0xab 0 4M", "-c", "read -P 0xcd 5000001 70001")
	// The same export on the SDC's Unix socket (named in its status): what one client writes
	// there, the other reads.
	var st struct {
		NBDSocket string `json:"nbd_socket"`
	}
	if err := getJSON("http://"+ic.sdc.api+"/status", &st); err != nil || st.NBDSocket != ic.sdc.socket {
		t.Fatalf("SDC status names the NBD socket %q (%v), want %q", st.NBDSocket, err, ic.sdc.socket)
	}
	if out := run(t, "nbdinfo", ic.unixURI("vol1")); !strings.Contains(out, "1073741824") {
		t.Fatalf("nbdinfo over the Unix socket: %s", out)
	}
	run(t, "qemu-io", "-f", "raw", ic.unixURI("vol1"), "-c", "read -P 0xab 0 4M", "-c", "write -P 0xef 8M 1M")
	run(t, "qemu-io", "-f", "raw", ic.uri("vol1"), "-c", "read -P 0xef 8M 1M")

	// nbdcopy of a random 64 MiB image in and out.
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.img"), filepath.Join(dir, "out.img")
	data := make([]byte, 64<<20)
	rand.Read(data)
	os.WriteFile(in, data, 0o600)
	run(t, "nbdcopy", in, ic.uri("vol1"))
	run(t, "nbdcopy", ic.uri("vol1"), out)
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got[:64<<20], data) {
		t.Fatalf("nbdcopy round trip differs (%v)", err)
	}

	// A short fio verify job, when fio has its nbd engine.
	if _, err := exec.LookPath("fio"); err == nil {
		if help, _ := exec.Command("fio", "--enghelp").CombinedOutput(); strings.Contains(string(help), "nbd") {
			run(t, "fio", "--name=verify", "--ioengine=nbd", "--uri="+ic.uri("vol1"), "--rw=randwrite", "--bs=4k",
				"--iodepth=16", "--size=16m", "--offset=128m", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0")
		}
	}
	n := ic.replicasIdentical(vol)
	t.Logf("%d chunks written, each on two SDSs with identical checksums", n)
	if n < 64 {
		t.Fatalf("only %d chunks allocated after writing 64 MiB", n)
	}
	// All on one host: the payloads went through the SDC's shared memory, primaries passed
	// references on to their secondaries, nbdcopy's large reads came back through it too
	// (sds/DESIGN.md "Shared memory"), and reads of chunks once read went to the SDS devices
	// under read grants (sds/DESIGN.md "Local reads"; the SDC reports them within a second).
	var writes, forwards, reads, grants, local int64
	ic.waitFor("local reads reported to the SDSs", 10*time.Second, func() bool {
		writes, forwards, reads, grants, local = 0, 0, 0, 0, 0
		for _, s := range ic.sdss {
			var st struct {
				Data struct {
					ShmWrites   int64 `json:"shm_writes"`
					ShmForwards int64 `json:"shm_forwards"`
					ShmReads    int64 `json:"shm_reads"`
					GrantsMade  int64 `json:"read_grants_made"`
					LocalReads  int64 `json:"local_reads"`
				} `json:"data"`
			}
			if err := getJSON("http://"+s.api+"/status", &st); err != nil {
				t.Fatal(err)
			}
			writes += st.Data.ShmWrites
			forwards += st.Data.ShmForwards
			reads += st.Data.ShmReads
			grants += st.Data.GrantsMade
			local += st.Data.LocalReads
		}
		return local > 0
	})
	t.Logf("shared-memory writes %d, forwarded by reference %d, reads %d; read grants %d, local reads %d", writes, forwards, reads, grants, local)
	if writes == 0 || forwards == 0 || reads == 0 {
		t.Fatalf("the same-host shared-memory path was not taken (writes %d, forwards %d, reads %d)", writes, forwards, reads)
	}
}

func TestLedgerReadOnlyAndUnmap(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	needTools(t, "nbdinfo", "qemu-io")
	ic := startIOCluster(t)
	vol := ic.volume("vol2", 1, "readWrite")
	run(t, "qemu-io", "-f", "raw", ic.uri("vol2"), "-c", "write -P 0x11 0 8M", "-c", "read -P 0x11 0 8M")

	// The ledger: every byte written counted once per replica, every byte read once.
	var ledger api.Ledger
	ic.waitFor("the ledger to catch up", 15*time.Second, func() bool {
		ic.get(fmt.Sprintf("/token/ledger?volume_id=%d", vol), &ledger)
		return ledger.Totals.WriteBytes >= 2*(8<<20) && ledger.Totals.ReadBytes >= 8<<20
	})
	// qemu-io reads a few KiB on open to probe the image: reads may exceed ours by that much.
	if ledger.Totals.WriteBytes != 2*(8<<20) || ledger.Totals.ReadBytes > 8<<20+64<<10 {
		t.Fatalf("ledger totals %+v, want %d bytes written (two copies) and %d read", ledger.Totals, 2*(8<<20), 8<<20)
	}
	if ledger.Totals.Tokens < 1 {
		t.Fatalf("ledger %+v", ledger)
	}
	// The same through the CLI, and the volume's placement.
	leaderAPI := ic.mdms.Cfgs[ic.mdms.WaitLeader(10*time.Second)].APIAddr
	cli := func(args ...string) string {
		return run(t, ic.mdms.Bin, append([]string{"-mdm", leaderAPI, "-token", ic.mdms.Token}, args...)...)
	}
	if out := cli("token", "ledger", "-vol", "vol2"); !strings.Contains(out, "16777216") {
		t.Fatalf("pflex token ledger:\n%s", out)
	}
	if out := cli("vol", "layout", "vol2"); !strings.Contains(out, "PRIMARY") || !strings.Contains(out, "epoch 1") {
		t.Fatalf("pflex vol layout:\n%s", out)
	}

	// Mapping limits, changed in place: the SDC paces vol2's IO at 40 IOPS, then not at all.
	cli("vol", "limits", "vol2", "sdc-1", "-iops", "40")
	if out := cli("vol", "show", "vol2"); !strings.Contains(out, "sdc-1") || !strings.Contains(out, " 40 ") {
		t.Fatalf("pflex vol show after setting the limit:\n%s", out)
	}
	ic.waitFor("the SDC to put the limit in force", 10*time.Second, func() bool { return ic.sdcQoS(t, "vol2").IOPSLimit == 40 })
	writes := []string{"-f", "raw", ic.uri("vol2")}
	for i := 0; i < 40; i++ {
		writes = append(writes, "-c", fmt.Sprintf("write -P 0x22 %d 4k", i*4096))
	}
	start := time.Now()
	run(t, "qemu-io", writes...)
	// 40 writes at 40 IOPS: at least 35 of them 25 ms apart (a lower bound, whatever the machine).
	if took, q := time.Since(start), ic.sdcQoS(t, "vol2"); took < 875*time.Millisecond || q.Throttled == 0 {
		t.Fatalf("40 writes at a 40 IOPS limit took %v; SDC: %+v", took, q)
	} else {
		t.Logf("40 writes at a 40 IOPS limit took %v; SDC: %+v", took.Round(time.Millisecond), q)
	}
	cli("vol", "limits", "vol2", "sdc-1", "-iops", "0")
	ic.waitFor("the SDC to lift the limit", 10*time.Second, func() bool { return ic.sdcQoS(t, "vol2").IOPSLimit == 0 })

	// A read-only map refuses writes.
	ic.volume("ro", 1, "readOnly")
	if out, err := exec.Command("qemu-io", "-f", "raw", ic.uri("ro"), "-c", "write 0 4k").CombinedOutput(); err == nil && !strings.Contains(string(out), "ermission") {
		t.Fatalf("write to a readOnly map succeeded: %s", out)
	}
	run(t, "qemu-io", "-r", "-f", "raw", ic.uri("ro"), "-c", "read 0 4k")

	// Unmapping cuts the SDC off within about a second.
	unmapped := time.Now()
	ic.post("/vol/unmap", map[string]any{"volume_id": vol, "sdc_id": 1})
	took := ic.waitFor("vol2 export gone", 10*time.Second, func() bool {
		return exec.Command("nbdinfo", ic.uri("vol2")).Run() != nil
	})
	t.Logf("export gone %s after the unmap", time.Since(unmapped).Round(10*time.Millisecond))
	_ = took
}
