package systest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"pflex/jepsen"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/internal/token"
	"pflex/internal/wire"
	"pflex/mdm"
	"pflex/mdm/mdmtest"
)

// SDS failure with real processes and default failure-detection settings (MDM heartbeat_timeout,
// sds_down_grace, sds_lease; SDS heartbeat_interval): an SDS killed with kill -9 during a
// verifying NBD write workload costs a stall, never an error, and loses no acknowledged write;
// the pool goes DEGRADED, REBUILDING, then OK; a restarted SDS and a paused-then-resumed SDS
// serve nothing stale, and a returned SDS takes chunks again through the rebalance.

// startFailureCluster is three MDMs with default liveness settings, three SDSs (file devices,
// heartbeat every sdsHeartbeat; "" for the default) and one SDC, plus pool1.
func startFailureCluster(t testing.TB, sdsHeartbeat string) *ioCluster {
	return startFailureClusterWith(t, sdsHeartbeat, "")
}

// startFailureClusterWith is startFailureCluster with extra SDS settings (HCL attributes).
func startFailureClusterWith(t testing.TB, sdsHeartbeat, sdsExtra string) *ioCluster {
	bin := mdmtest.BuildBinary(t)
	p := mdmtest.StartGossipProcesses(t, bin, 3, nil)
	leader := p.WaitLeader(20 * time.Second)
	if code, _, err := mdmtest.DoJSON(p.URL(leader), p.Token, "POST", "/pd/create", map[string]any{"name": "pd1"}, nil); err != nil || code != 200 {
		t.Fatalf("create pd: %d %v", code, err)
	}
	var join []string
	for _, j := range p.Cfgs[0].Gossip.Join {
		join = append(join, fmt.Sprintf("%q", j))
	}
	c := &cluster{t: t, mdms: p, join: strings.Join(join, ", ")}
	ic := &ioCluster{cluster: c}
	dir := t.TempDir()
	for i := 1; i <= 3; i++ {
		s := c.sdsDevice(fmt.Sprintf("sds-%d", i), mdmtest.TestGossipKey, filepath.Join(dir, fmt.Sprintf("sds%d.img", i)), 4)
		if sdsHeartbeat == "" {
			s.Config = strings.Replace(s.Config, "heartbeat_interval = \"200ms\"\n", "", 1)
		} else {
			s.Config = strings.Replace(s.Config, "heartbeat_interval = \"200ms\"", fmt.Sprintf("heartbeat_interval = %q", sdsHeartbeat), 1)
		}
		s.Config += sdsExtra
		s.Start()
		ic.sdss = append(ic.sdss, s)
	}
	ic.sdc, ic.nbd = c.sdcNBD("sdc-1")
	ic.sdc.Start()
	var missing []string
	defer func() {
		if t.Failed() {
			t.Logf("not registered and up: %v", missing)
		}
	}()
	c.waitFor("three SDSs and the SDC registered and up", 30*time.Second, func() bool {
		m := c.members()
		missing = missing[:0]
		for _, id := range []string{"sds-1", "sds-2", "sds-3", "sdc-1"} {
			if !m[id].Registered || m[id].State != "up" {
				missing = append(missing, fmt.Sprintf("%s(registered=%v state=%q gossip=%q)", id, m[id].Registered, m[id].State, m[id].GossipState))
			}
		}
		return len(missing) == 0
	})
	ic.post("/pool/create", map[string]any{"name": "pool1", "pd_id": 1, "total_capacity_gb": 10})
	return ic
}

// volLayout fetches a volume's layout as SDSs and SDCs do.
func (ic *ioCluster) volLayout(vol int64) layout.Layout {
	ic.t.Helper()
	var l layout.Layout
	leader := ic.mdms.WaitLeader(10 * time.Second)
	if code, _, err := mdmtest.DoJSON(ic.mdms.URL(leader), mdmtest.TestClusterKey, "GET", fmt.Sprintf("/vol/%d/layout", vol), nil, &l); err != nil || code != 200 {
		ic.t.Fatalf("layout of volume %d: %d %v", vol, code, err)
	}
	return l
}

func (ic *ioCluster) poolHealth() mdm.PoolHealth {
	var h mdm.PoolHealth
	ic.get("/pool/1/health", &h)
	return h
}

// nbdWorkload is writers, each on its own NBD connection, writing 4 KiB blocks that carry
// (writer, sequence) to offsets of their own, and remembering what was acknowledged where.
type nbdWorkload struct {
	mu     sync.Mutex
	acked  map[uint64][]byte // offset -> last acknowledged content
	errs   []error
	acks   [][]time.Time // per writer
	cancel context.CancelFunc
	done   sync.WaitGroup
}

const (
	wlBlock  = 4096
	wlStride = 64 << 10 // 16 blocks per 1 MiB chunk
	wlSlots  = 4096     // offsets per writer: 256 MiB of the volume each
)

func startNBDWorkload(t testing.TB, addr, export string, writers int) *nbdWorkload {
	ctx, cancel := context.WithCancel(context.Background())
	w := &nbdWorkload{acked: map[uint64][]byte{}, acks: make([][]time.Time, writers), cancel: cancel}
	for i := range writers {
		conn, err := jepsen.DialNBD(ctx, addr, export, 5*time.Second)
		if err != nil {
			t.Fatalf("nbd dial: %v", err)
		}
		w.done.Add(1)
		go func() {
			defer w.done.Done()
			defer conn.Close()
			buf := make([]byte, wlBlock)
			for seq := uint64(0); ctx.Err() == nil; seq++ {
				off := ((seq%wlSlots)*uint64(writers) + uint64(i)) * wlStride
				for j := 0; j < wlBlock; j += 8 {
					binary.BigEndian.PutUint64(buf[j:], uint64(i)<<48|seq<<8|uint64(j/8)&0xff)
				}
				if err := conn.Write(off, buf, time.Now().Add(60*time.Second)); err != nil {
					w.mu.Lock()
					w.errs = append(w.errs, fmt.Errorf("writer %d seq %d at %d: %w", i, seq, off, err))
					w.mu.Unlock()
					return
				}
				w.mu.Lock()
				w.acked[off] = append([]byte(nil), buf...)
				w.acks[i] = append(w.acks[i], time.Now())
				w.mu.Unlock()
			}
		}()
	}
	return w
}

func (w *nbdWorkload) stop() { w.cancel(); w.done.Wait() }

// stall is the longest time any writer went without an acknowledgement, from after its first
// one.
func (w *nbdWorkload) stall() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var worst time.Duration
	for _, acks := range w.acks {
		for i := 1; i < len(acks); i++ {
			worst = max(worst, acks[i].Sub(acks[i-1]))
		}
	}
	return worst
}

func (w *nbdWorkload) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.acks {
		n += len(a)
	}
	return n
}

// verify reads every acknowledged block back through NBD.
func (w *nbdWorkload) verify(t testing.TB, addr, export string) int {
	t.Helper()
	conn, err := jepsen.DialNBD(context.Background(), addr, export, 5*time.Second)
	if err != nil {
		t.Fatalf("nbd dial: %v", err)
	}
	defer conn.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	offs := make([]uint64, 0, len(w.acked))
	for off := range w.acked {
		offs = append(offs, off)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	for _, off := range offs {
		got, err := conn.Read(off, wlBlock, time.Now().Add(60*time.Second))
		if err != nil {
			t.Fatalf("read back %d: %v", off, err)
		}
		if !bytes.Equal(got, w.acked[off]) {
			t.Fatalf("block at %d: read %x..., acknowledged %x...", off, got[:16], w.acked[off][:16])
		}
	}
	return len(offs)
}

// sdsIndex is the index in ic.sdss of the SDS with id (ids follow registration order, which the
// test fixes by waiting; names carry the number).
func (ic *ioCluster) sdsByID(id int64) component {
	ic.t.Helper()
	var list []struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	ic.get("/sds/list", &list)
	for _, s := range list {
		if s.ID == id {
			for _, c := range ic.sdss {
				if c.Name == s.Name {
					return c
				}
			}
		}
	}
	ic.t.Fatalf("SDS %d not found", id)
	return component{}
}

// directRead reads a block from one SDS over the data protocol, claiming epoch, as an SDC with
// an old layout would. It returns the data (on OK) and the status.
func directRead(t testing.TB, addr string, tok token.Token, vol int64, off int64, epoch int64) ([]byte, wire.Status) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := wire.Dial(ctx, addr, wire.ClientOptions{})
	if err != nil {
		return nil, wire.Status(254) // not listening (yet)
	}
	defer conn.Close()
	if _, err := conn.Do(ctx, wire.Request{Op: wire.OpAuth, VolumeID: vol, Data: tok.Bytes()}); err != nil {
		st, _ := wire.StatusOf(err)
		return nil, st
	}
	resp, err := conn.Do(ctx, wire.Request{Op: wire.OpRead, VolumeID: vol, Offset: off, Length: wlBlock, Epoch: epoch})
	if err != nil {
		st, ok := wire.StatusOf(err)
		if !ok {
			return nil, wire.Status(255)
		}
		return nil, st
	}
	return resp.Data, wire.StatusOK
}

func getJSON(url string, out any) error {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (ic *ioCluster) token(vol int64) token.Token {
	ic.t.Helper()
	var tr api.TokenResponse
	leader := ic.mdms.WaitLeader(10 * time.Second)
	if code, _, err := mdmtest.DoJSON(ic.mdms.URL(leader), mdmtest.TestClusterKey, "POST", "/token/issue", api.TokenRequest{VolumeID: vol, SDCID: 1, AccessMode: "readOnly"}, &tr); err != nil || code != 200 {
		ic.t.Fatalf("token: %d %v", code, err)
	}
	tok, err := token.ParseString(tr.Token)
	if err != nil {
		ic.t.Fatal(err)
	}
	return tok
}

// killSDSDuringWrites runs the workload, kills one SDS with kill -9 and returns the worst stall
// the NBD writers saw; it fails the test on any NBD error or lost write.
func killSDSDuringWrites(t testing.TB, ic *ioCluster, export string, victim component) (time.Duration, *nbdWorkload) {
	w := startNBDWorkload(t, ic.nbd, export, 4)
	time.Sleep(1500 * time.Millisecond)
	victim.Kill9()
	killed := time.Now()
	ic.waitFor("writes acknowledged again after the kill", 30*time.Second, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, a := range w.acks {
			if len(a) == 0 || !a[len(a)-1].After(killed.Add(100*time.Millisecond)) {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second)
	w.stop()
	if len(w.errs) > 0 {
		t.Fatalf("NBD errors during the SDS kill: %v", w.errs)
	}
	return w.stall(), w
}

func TestSDSKill9DuringNBDWritesStallsWithoutErrorOrLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	ic := startFailureCluster(t, "")
	vol := ic.volume("vol1", 1, "readWrite")
	before := ic.volLayout(vol)
	victim := ic.sdss[1] // sds-2
	stall, w := killSDSDuringWrites(t, ic, "vol1", victim)
	t.Logf("kill -9 %s: %d writes acknowledged, worst NBD stall %s", victim.Name, w.count(), stall.Round(time.Millisecond))
	if stall > 5*time.Second {
		t.Errorf("NBD stall %s, want under 5 s with default settings", stall)
	}
	after := ic.volLayout(vol)
	if after.Epoch <= before.Epoch || len(after.Excluded) != 1 {
		t.Fatalf("layout after the kill: epoch %d -> %d, excluded %+v", before.Epoch, after.Epoch, after.Excluded)
	}
	excluded := after.Excluded[0].SDSID
	seen := ic.waitHealthOK(90 * time.Second)
	if st := ic.rebuildStatus(); !seen[mdm.HealthDegraded] && !seen[mdm.HealthRebuilding] && st.ChunksDone == 0 {
		// The rebuild may finish between two polls; the leader's run figures say it happened.
		t.Fatalf("pool health went %v, never DEGRADED or REBUILDING, and no chunk was rebuilt: %+v", seen, st)
	}
	n := w.verify(t, ic.nbd, "vol1")
	copies := ic.replicasIdentical(vol, victim.Name)
	t.Logf("%d acknowledged blocks read back; pool health seen %v, then OK; %d chunks with two identical copies", n, seen, copies)

	// The killed SDS comes back: it serves nothing stale, drops the copies it missed writes to
	// (the rebuild put them elsewhere), and takes chunks again as the rebalance moves some onto it.
	var stale []int64 // offsets of blocks on chunks the victim held
	for off := range w.acked {
		if slices.Contains(before.Replicas(int64(off)/before.ChunkSize), excluded) {
			stale = append(stale, int64(off))
		}
	}
	if len(stale) == 0 {
		t.Fatal("the killed SDS held none of the written chunks")
	}
	victim.Start()
	tok := ic.token(vol)
	addr := ""
	if m, ok := before.Member(excluded); ok {
		addr = m.Addr
	}
	superseded := func() int { // copies the SDS holds that its layout does not place there
		var list struct {
			Chunks []chunkReplica `json:"chunks"`
		}
		if getJSON("http://"+victim.api+fmt.Sprintf("/volumes/%d/chunks", vol), &list) != nil {
			return -1
		}
		n := 0
		for _, c := range list.Chunks {
			if c.Role == "" {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(15 * time.Second)
	served := map[wire.Status]int{}
	for time.Now().Before(deadline) {
		for _, off := range stale[:min(len(stale), 16)] {
			data, st := directRead(t, addr, tok, vol, off, before.Epoch)
			served[st]++
			if st == wire.StatusOK {
				t.Fatalf("the restarted SDS served a read at %d under the old epoch (%x...)", off, data[:8])
			}
		}
		if superseded() == 0 && served[wire.StatusStaleEpoch]+served[wire.StatusNotPrimary] > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := superseded(); n != 0 {
		t.Fatalf("restarted SDS still holds %d superseded copies", n)
	}
	t.Logf("restarted SDS: answers to old-epoch reads %v; superseded copies dropped", served)
	ic.waitFor("the rebalance moving chunks onto the returned SDS and settling", 120*time.Second, func() bool {
		l := ic.volLayout(vol)
		if _, active := l.ActiveRebuild(); active {
			return false
		}
		for c := range l.Chunks() {
			if slices.Contains(l.Replicas(c), excluded) {
				time.Sleep(time.Second) // a next move may begin: look again
				again := ic.volLayout(vol)
				_, active := again.ActiveRebuild()
				return !active
			}
		}
		return false
	})
	copies = ic.replicasIdentical(vol)
	t.Logf("after the rebalance: %d chunks with two identical copies, the returned SDS among them", copies)
	w.verify(t, ic.nbd, "vol1")
}

// A paused SDS (SIGSTOP) whose chunks were handed to their other copies meanwhile never serves
// a stale read after it resumes: its lease ran out, and the heartbeat that renews it brings the
// new layout epochs.
func TestPausedSDSNeverServesAStaleReadAfterResume(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	ic := startFailureCluster(t, "")
	vol := ic.volume("vol1", 1, "readWrite")
	before := ic.volLayout(vol)
	// A block on a chunk whose primary is the SDS to pause.
	victimID := before.Replicas(0)[0]
	victim := ic.sdsByID(victimID)
	m, _ := before.Member(victimID)
	off := int64(0)
	conn, err := jepsen.DialNBD(context.Background(), ic.nbd, "vol1", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	old := bytes.Repeat([]byte("A"), wlBlock)
	if err := conn.Write(uint64(off), old, time.Now().Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	tok := ic.token(vol)
	if data, st := directRead(t, m.Addr, tok, vol, off, before.Epoch); st != wire.StatusOK || !bytes.Equal(data, old) {
		t.Fatalf("direct read before the pause: %v", st)
	}

	victim.Pause()
	paused := time.Now()
	newer := bytes.Repeat([]byte("B"), wlBlock)
	if err := conn.Write(uint64(off), newer, time.Now().Add(30*time.Second)); err != nil {
		for i := range ic.mdms.Cfgs {
			for _, line := range strings.Split(ic.mdms.Log(i), "\n") {
				if strings.Contains(line, "node state") || strings.Contains(line, "could not") {
					t.Log(line)
				}
			}
		}
		t.Logf("layout now: %+v", ic.volLayout(vol).Excluded)
		t.Fatalf("write while the primary is paused: %v", err) // the SDC's log follows (mdmtest)
	}
	t.Logf("write acknowledged %s after pausing the primary (by its other copy)", time.Since(paused).Round(time.Millisecond))
	if l := ic.volLayout(vol); slices.Contains(l.Replicas(0), victimID) {
		t.Fatalf("chunk 0 still on the paused SDS: %v", l.Replicas(0))
	}
	victim.Resume()
	// Hammer the resumed SDS with reads under the old epoch, as an SDC with a stale layout
	// would: none may return the old data.
	answers := map[wire.Status]int{}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		data, st := directRead(t, m.Addr, tok, vol, off, before.Epoch)
		answers[st]++
		if st == wire.StatusOK && !bytes.Equal(data, newer) {
			t.Fatalf("the resumed SDS served a stale read: %q...", data[:8])
		}
	}
	t.Logf("resumed SDS's answers to old-epoch reads: %v", answers)
	got, err := conn.Read(uint64(off), wlBlock, time.Now().Add(30*time.Second))
	if err != nil || !bytes.Equal(got, newer) {
		t.Fatalf("read through NBD after the resume: %v", err)
	}
}

// BenchmarkSDSKillNBDStall: the IO stall an NBD client sees when an SDS is killed with kill -9,
// with default settings (MDM heartbeat_timeout, sds_down_grace, sds_lease; SDS heartbeat
// interval), over 10 kills of a fresh cluster each. Figures: docs/BENCHMARKS.md.
func BenchmarkSDSKillNBDStall(b *testing.B) {
	if _, err := exec.LookPath("nbdinfo"); err != nil {
		b.Skip("nbdinfo is not installed")
	}
	runs := 10
	var stalls []time.Duration
	for i := range runs {
		func() {
			ic := startFailureCluster(b, "")
			ic.volume("vol1", 1, "readWrite")
			stall, w := killSDSDuringWrites(b, ic, "vol1", ic.sdss[i%3])
			w.verify(b, ic.nbd, "vol1")
			b.Logf("run %d: kill -9 %s, worst stall %s, %d writes, 0 errors", i+1, ic.sdss[i%3].Name, stall.Round(time.Millisecond), w.count())
			stalls = append(stalls, stall)
			ic.mdms.Close()
		}()
	}
	slices.Sort(stalls)
	b.ReportMetric(float64(stalls[len(stalls)/2].Milliseconds()), "median-stall-ms")
	b.ReportMetric(float64(stalls[len(stalls)-1].Milliseconds()), "worst-stall-ms")
	b.Logf("bench_sds_kill: %d kills, NBD stall median %s, worst %s, 0 IO errors", runs,
		stalls[len(stalls)/2].Round(time.Millisecond), stalls[len(stalls)-1].Round(time.Millisecond))
}
