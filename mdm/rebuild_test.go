package mdm

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/layout"
)

// storeProposer applies commands straight to a real fsm.Store, as raft would on commit: the
// planner runs against it without raft.
type storeProposer struct {
	t     testing.TB
	s     *fsm.Store
	index uint64
	now   int64
}

func newStoreProposer(t testing.TB) *storeProposer {
	s, err := fsm.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &storeProposer{t: t, s: s, now: 1_700_000_000_000}
}

func (sp *storeProposer) Read(fn func(r *fsm.Reader) error) error { return sp.s.Read(fn) }

func (sp *storeProposer) Propose(_ context.Context, rid string, c fsm.Command) (any, error) {
	sp.index++
	sp.now += 1000
	data, err := fsm.Encode(fsm.Header{RequestID: rid, Time: sp.now}, c)
	if err != nil {
		return nil, err
	}
	res := sp.s.Apply([]fsm.Entry{{Index: sp.index, Term: 1, Data: data}})
	return res[0].Value, res[0].Err
}

func (sp *storeProposer) ok(c fsm.Command) any {
	sp.t.Helper()
	v, err := sp.Propose(context.Background(), "", c)
	if err != nil {
		sp.t.Fatalf("%T: %v", c, err)
	}
	return v
}

func (sp *storeProposer) layout(vol int64) (l layout.Layout) {
	sp.t.Helper()
	if err := sp.Read(func(r *fsm.Reader) (err error) { l, _, err = r.Layout(vol); return }); err != nil {
		sp.t.Fatal(err)
	}
	return l
}

// rebuildFixture is pool 1 with four SDSs and a 1 GiB volume (1024 chunks of 1 MiB), with
// sds-1 down: about half the chunks are degraded.
func rebuildFixture(t *testing.T) (*storeProposer, int64) {
	sp := newStoreProposer(t)
	sp.ok(&fsm.CreatePD{Name: "pd1"})
	sp.ok(&fsm.CreatePool{Name: "pool1", PDID: 1, TotalCapacityGB: 100})
	var members []layout.Member
	for _, n := range []string{"sds-1", "sds-2", "sds-3", "sds-4"} {
		reg := sp.ok(&fsm.RegisterNode{ID: n, Capabilities: []string{fsm.CapSDS}, Version: "t", APIAddr: "127.0.0.1:9101",
			DataAddr: "127.0.0.1:9701", GossipAddr: "127.0.0.1:7911",
			SDS: &fsm.SDSRegistration{ProtectionDomain: "pd1", Devices: fsm.Devices{"/d0"}, TotalCapacityGB: 100}}).(fsm.Registration)
		members = append(members, layout.Member{SDSID: reg.SDSID, Weight: 1})
	}
	vol := sp.ok(&fsm.CreateVolume{Name: "v1", SizeGB: 1, PoolID: 1}).(fsm.Volume).ID
	sp.ok(&fsm.SetLayout{VolumeID: vol, Members: members})
	sp.ok(&fsm.SetNodeState{ID: "sds-1", State: fsm.NodeDown})
	return sp, vol
}

func testPlanner(sp *storeProposer, batch int64) *rebuildPlanner {
	return newRebuildPlanner(sp, RebuildSettings{Interval: time.Hour, BatchChunks: batch}, hclog.NewNullLogger())
}

func mustRound(t *testing.T, p *rebuildPlanner) {
	t.Helper()
	if err := p.round(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// batchSources lists who copies the active batch: the primaries of its pending chunks, with
// how many chunks each.
func batchSources(l layout.Layout) (layout.Rebuild, map[int64]int64) {
	rb, ok := l.ActiveRebuild()
	if !ok {
		return rb, nil
	}
	src := map[int64]int64{}
	for c := rb.Done; c < rb.Ordered; c++ {
		if ids, pending := l.ReplicaSet(c); pending {
			src[ids[0]]++
		}
	}
	return rb, src
}

func degradedChunks(l layout.Layout) (n int64) {
	for c := range l.Chunks() {
		if l.Degraded(c) {
			n++
		}
	}
	return n
}

// reportDone sends every source's Done report for the active batch (except skip).
func reportDone(p *rebuildPlanner, l layout.Layout, skip int64) {
	rb, src := batchSources(l)
	for id, n := range src {
		if id == skip {
			continue
		}
		p.record(api.RebuildReport{SDSID: id, VolumeID: l.VolumeID, Epoch: rb.Epoch, Ordered: rb.Ordered,
			Chunks: n, Total: n, Bytes: n << 20, Done: true})
	}
}

func TestRebuildBeginsInBoundedBatchesAndAdvancesOnlyWhenEverySourceIsDone(t *testing.T) {
	sp, vol := rebuildFixture(t)
	const batch = 64
	p := testPlanner(sp, batch)
	before := degradedChunks(sp.layout(vol))
	if before == 0 {
		t.Fatal("fixture: no degraded chunks")
	}
	mustRound(t, p)
	l := sp.layout(vol)
	rb, src := batchSources(l)
	if rb.Epoch != 3 || rb.Done != 0 || len(src) < 2 {
		t.Fatalf("begin: %+v sources %v", l.Rebuilds, src)
	}
	var pending int64
	for _, n := range src {
		pending += n
	}
	if pending != batch {
		t.Fatalf("first batch [0, %d) has %d pending chunks, want %d", rb.Ordered, pending, batch)
	}
	if ids, pend := l.ReplicaSet(rb.Ordered - 1); !pend || len(ids) != 2 {
		t.Fatalf("batch end %d is not just after its last pending chunk", rb.Ordered)
	}
	if degradedChunks(l) != before {
		t.Fatalf("pending chunks must still count as degraded: %d, was %d", degradedChunks(l), before)
	}

	// A stale report (old batch end, or another epoch) does not complete the batch, nor do
	// the reports of all sources but one.
	var one int64
	for id := range src {
		one = id
	}
	for id := range src {
		p.record(api.RebuildReport{SDSID: id, VolumeID: vol, Epoch: rb.Epoch, Ordered: rb.Ordered - 1, Done: true})
		p.record(api.RebuildReport{SDSID: id, VolumeID: vol, Epoch: rb.Epoch - 1, Ordered: rb.Ordered, Done: true})
	}
	reportDone(p, l, one)
	mustRound(t, p)
	if got, _ := activeOf(sp.layout(vol)); got != rb {
		t.Fatalf("advanced without every source: %+v, was %+v", got, rb)
	}
	// A progress report does not complete it either.
	p.record(api.RebuildReport{SDSID: one, VolumeID: vol, Epoch: rb.Epoch, Ordered: rb.Ordered, Chunks: 1, Total: src[one], Bytes: 1 << 20})
	mustRound(t, p)
	if got, _ := activeOf(sp.layout(vol)); got != rb {
		t.Fatalf("advanced on a progress report: %+v", got)
	}
	reportDone(p, l, 0)
	mustRound(t, p)
	l = sp.layout(vol)
	next, src2 := batchSources(l)
	if next.Epoch != rb.Epoch || next.Done != rb.Ordered || next.Ordered <= rb.Ordered {
		t.Fatalf("advance: %+v, was %+v", next, rb)
	}
	pending = 0
	for _, n := range src2 {
		pending += n
	}
	if pending != batch || degradedChunks(l) != before-batch {
		t.Fatalf("second batch: %d pending, %d degraded (was %d)", pending, degradedChunks(l), before)
	}

	// Run to the end: every degraded chunk re-protected, the run's figures kept.
	for i := 0; i < 100; i++ {
		if _, ok := l.ActiveRebuild(); !ok {
			break
		}
		reportDone(p, l, 0)
		mustRound(t, p)
		l = sp.layout(vol)
	}
	if _, ok := l.ActiveRebuild(); ok || degradedChunks(l) != 0 {
		t.Fatalf("not finished: %+v, %d degraded", l.Rebuilds, degradedChunks(l))
	}
	mustRound(t, p) // sees the pool whole: the run ends
	st, err := p.status(1)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != RebuildIdle || st.Health != HealthOK || st.ChunksDone != before || st.ChunksTotal != before ||
		st.BytesDone != before<<20 || st.ETASeconds != 0 || st.StartedAt == 0 {
		t.Fatalf("status after the run: %+v", st)
	}
	chunks, bytes := p.counters()
	if chunks[1] != before || bytes[1] != before<<20 {
		t.Fatalf("counters: %v %v", chunks, bytes)
	}
}

func TestRebuildCancelStopsBeginsAndStartResumes(t *testing.T) {
	sp, vol := rebuildFixture(t)
	p := testPlanner(sp, 32)
	mustRound(t, p)
	l := sp.layout(vol)
	rb, ok := l.ActiveRebuild()
	if !ok {
		t.Fatal("no rebuild begun")
	}
	st, err := p.status(1)
	if err != nil || st.State != RebuildRebuilding || st.Health != HealthRebuilding || len(st.Volumes) != 1 || st.Volumes[0].Ordered != rb.Ordered {
		t.Fatalf("status while rebuilding: %+v %v", st, err)
	}
	sp.ok(&fsm.SetRebuildPaused{PoolID: 1, Paused: true})
	reportDone(p, l, 0) // reports of the batch cancel cut short
	mustRound(t, p)
	mustRound(t, p)
	l = sp.layout(vol)
	if _, ok := l.ActiveRebuild(); ok {
		t.Fatalf("a batch while cancelled: %+v", l.Rebuilds)
	}
	st, _ = p.status(1)
	if st.State != RebuildCancelled || st.Health != HealthDegraded {
		t.Fatalf("status while cancelled: %+v", st)
	}
	sp.ok(&fsm.SetRebuildPaused{PoolID: 1, Paused: false})
	mustRound(t, p)
	l = sp.layout(vol)
	got, ok := l.ActiveRebuild()
	if !ok || got.Epoch == rb.Epoch || got.Done != 0 {
		t.Fatalf("start did not resume with a new rebuild: %+v", l.Rebuilds)
	}
}

func TestRebuildNewLeaderResumesFromRecordAndRepeatedReports(t *testing.T) {
	sp, vol := rebuildFixture(t)
	old := testPlanner(sp, 128)
	mustRound(t, old)
	l := sp.layout(vol)
	rb, _ := l.ActiveRebuild()
	reportDone(old, l, 0) // the old leader heard them but lost leadership before advancing

	p := testPlanner(sp, 128) // a new leader: nothing in memory
	mustRound(t, p)
	if got, _ := activeOf(sp.layout(vol)); got != rb {
		t.Fatalf("the new leader moved without reports: %+v, was %+v", got, rb)
	}
	reportDone(p, l, 0) // the SDSs repeat their Done reports
	mustRound(t, p)
	got, ok := activeOf(sp.layout(vol))
	if !ok || got.Epoch != rb.Epoch || got.Done != rb.Ordered {
		t.Fatalf("the new leader did not advance: %+v, was %+v", got, rb)
	}
	st, _ := p.status(1)
	if st.ChunksDone != 128 || st.BytesDone != 128<<20 || st.MBPerSec <= 0 || st.ChunksTotal <= st.ChunksDone || st.ETASeconds <= 0 {
		t.Fatalf("status on the new leader: %+v", st)
	}
}

func TestRebuildWaitsWhenNothingIsEligibleAndHealthFails(t *testing.T) {
	sp, vol := rebuildFixture(t)
	p := testPlanner(sp, 1024)
	// Down every other SDS but one: the remaining chunks have no target, those whose last copy
	// is on a down SDS are unavailable.
	sp.ok(&fsm.SetNodeState{ID: "sds-2", State: fsm.NodeDown})
	sp.ok(&fsm.SetNodeState{ID: "sds-3", State: fsm.NodeDown})
	mustRound(t, p)
	if _, ok := activeOf(sp.layout(vol)); ok {
		t.Fatalf("a rebuild with no target: %+v", sp.layout(vol).Rebuilds)
	}
	st, err := p.status(1)
	if err != nil || st.State != RebuildWaiting || st.Health != HealthFailed || st.ETASeconds != -1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	if _, err := p.status(99); !isKind(err, fsm.KindNotFound) {
		t.Fatalf("unknown pool: %v", err)
	}
}

func TestRebuildReportValidation(t *testing.T) {
	good := api.RebuildReport{SDSID: 1, VolumeID: 2, Epoch: 3, Ordered: 4, Chunks: 1, Total: 2, Bytes: 5}
	if err := validateReport(good); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(r *api.RebuildReport){
		func(r *api.RebuildReport) { r.SDSID = 0 },
		func(r *api.RebuildReport) { r.VolumeID = -1 },
		func(r *api.RebuildReport) { r.Epoch = 0 },
		func(r *api.RebuildReport) { r.Ordered = 0 },
		func(r *api.RebuildReport) { r.Chunks = -1 },
		func(r *api.RebuildReport) { r.Bytes = -1 },
	} {
		r := good
		bad(&r)
		if err := validateReport(r); !isKind(err, fsm.KindInvalid) {
			t.Errorf("%+v: %v", r, err)
		}
	}
}

func activeOf(l layout.Layout) (layout.Rebuild, bool) { return l.ActiveRebuild() }
