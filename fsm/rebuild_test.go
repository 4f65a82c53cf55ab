package fsm

import (
	"testing"

	"pflex/internal/layout"
)

// volumeOnSDSs registers SDSs by node name in pool 1 of pd1 and lays a 1 GiB volume over all
// of them; it returns their ids, the volume and a reader of its layout.
func volumeOnSDSs(a *applier, names ...string) (ids []int64, vol int64, layoutOf func() layout.Layout) {
	a.ok(&CreatePD{Name: "pd1"})
	a.ok(&CreatePool{Name: "p", PDID: 1, TotalCapacityGB: 100})
	for _, n := range names {
		ids = append(ids, a.ok(sdsNode(n)).(Registration).SDSID)
	}
	vol = a.ok(&CreateVolume{Name: "v1", SizeGB: 1, PoolID: 1}).(Volume).ID
	var members []layout.Member
	for _, id := range ids {
		members = append(members, layout.Member{SDSID: id, Weight: 1})
	}
	a.ok(&SetLayout{VolumeID: vol, Members: members})
	return ids, vol, func() (l layout.Layout) {
		a.read(func(r *Reader) (err error) { l, _, err = r.Layout(vol); return })
		return l
	}
}

func TestRebuildOrdersAdvanceAndAreCutShort(t *testing.T) {
	a := newApplier(t)
	_, v, layoutOf := volumeOnSDSs(a, "sds-1", "sds-2", "sds-3", "sds-4")
	degraded := func(l layout.Layout) (n int) {
		for c := range l.Chunks() {
			if l.Degraded(c) {
				n++
			}
		}
		return n
	}

	a.ok(&SetNodeState{ID: "sds-1", State: NodeDown})
	l := layoutOf()
	if l.Epoch != 2 || degraded(l) == 0 {
		t.Fatalf("after sds-1 down: epoch %d, %d degraded", l.Epoch, degraded(l))
	}
	a.reject(KindInvalid, &BeginRebuild{VolumeID: v, Ordered: 0})
	a.reject(KindInvalid, &BeginRebuild{VolumeID: v, Ordered: l.Chunks() + 1})
	a.reject(KindNotFound, &BeginRebuild{VolumeID: 99, Ordered: 1})

	a.ok(&BeginRebuild{VolumeID: v, Ordered: 512})
	l = layoutOf()
	rb, ok := l.ActiveRebuild()
	if !ok || rb != (layout.Rebuild{Epoch: 3, Done: 0, Ordered: 512}) || l.Epoch != 3 {
		t.Fatalf("begun: %+v %+v", l.Rebuilds, l)
	}
	a.reject(KindConflict, &BeginRebuild{VolumeID: v, Ordered: 10})
	// Compare-and-set on the batch.
	a.reject(KindPrecondition, &AdvanceRebuild{VolumeID: v, Epoch: 3, Done: 100, Ordered: 600})
	a.reject(KindNotFound, &AdvanceRebuild{VolumeID: v, Epoch: 7, Done: 512, Ordered: 600})
	a.reject(KindInvalid, &AdvanceRebuild{VolumeID: v, Epoch: 3, Done: 512, Ordered: l.Chunks() + 1})
	a.ok(&AdvanceRebuild{VolumeID: v, Epoch: 3, Done: 512, Ordered: l.Chunks()})
	a.reject(KindPrecondition, &AdvanceRebuild{VolumeID: v, Epoch: 3, Done: 512, Ordered: l.Chunks()}) // a retry
	a.ok(&AdvanceRebuild{VolumeID: v, Epoch: 3, Done: l.Chunks(), Ordered: l.Chunks()})
	l = layoutOf()
	if _, ok := l.ActiveRebuild(); ok || degraded(l) != 0 || l.Epoch != 5 {
		t.Fatalf("after the rebuild: epoch %d, %d degraded, %+v", l.Epoch, degraded(l), l.Rebuilds)
	}

	// An exclusion cuts the batch being copied short.
	a.ok(&SetNodeState{ID: "sds-2", State: NodeDown})
	a.ok(&BeginRebuild{VolumeID: v, Ordered: 100})
	a.ok(&SetNodeState{ID: "sds-3", State: NodeDown})
	l = layoutOf()
	if _, ok := l.ActiveRebuild(); ok {
		t.Fatalf("the batch survived an exclusion: %+v", l.Rebuilds)
	}

	// Cancel: cuts the batch short, refuses new ones until started again.
	a.ok(&SetNodeState{ID: "sds-3", State: NodeUp})
	a.ok(&BeginRebuild{VolumeID: v, Ordered: 100})
	a.ok(&SetRebuildPaused{PoolID: 1, Paused: true})
	l = layoutOf()
	if _, ok := l.ActiveRebuild(); ok {
		t.Fatalf("cancel left a batch: %+v", l.Rebuilds)
	}
	a.reject(KindConflict, &BeginRebuild{VolumeID: v, Ordered: 100})
	a.reject(KindNotFound, &SetRebuildPaused{PoolID: 9, Paused: true})
	a.ok(&SetRebuildPaused{PoolID: 1, Paused: false})
	a.ok(&BeginRebuild{VolumeID: v, Ordered: 100})

	a.ok(&DeleteVolume{ID: v})
	var rbs []layout.Rebuild
	a.read(func(r *Reader) (err error) { rbs, err = r.Rebuilds(v); return })
	if len(rbs) != 0 {
		t.Fatalf("rebuilds of a deleted volume: %+v", rbs)
	}
}

func TestMaintenanceEnterExitAndFailure(t *testing.T) {
	a := newApplier(t)
	ids, v, layoutOf := volumeOnSDSs(a, "sds-1", "sds-2", "sds-3")
	state := func(id int64) string {
		var s SDS
		a.read(func(r *Reader) (err error) { s, err = r.SDS(id); return })
		return s.State
	}

	a.reject(KindNotFound, &SetMaintenance{SDSID: 99, Enter: true})
	a.ok(&SetMaintenance{SDSID: ids[1], Enter: true})
	a.ok(&SetMaintenance{SDSID: ids[1], Enter: true}) // repeated
	l := layoutOf()
	if state(ids[1]) != SDSMaintenance || len(l.Excluded) != 1 || !l.Excluded[0].Maintenance || l.Epoch != 2 {
		t.Fatalf("after enter: %s %+v", state(ids[1]), l)
	}
	// Another SDS holding the last copy of chunks that lost their other copy to maintenance
	// may not enter too.
	a.reject(KindConflict, &SetMaintenance{SDSID: ids[0], Enter: true})
	// Liveness does not bring it back, nor does an operator "recover".
	a.ok(&SetNodeState{ID: "sds-2", State: NodeDown})
	a.ok(&SetNodeState{ID: "sds-2", State: NodeUp})
	if state(ids[1]) != SDSMaintenance {
		t.Fatalf("liveness moved a maintenance SDS to %s", state(ids[1]))
	}
	a.reject(KindConflict, &SetSDSState{ID: ids[1], State: SDSUp})
	// Exit: not while its node is down.
	a.ok(&SetNodeState{ID: "sds-2", State: NodeDown})
	a.reject(KindConflict, &SetMaintenance{SDSID: ids[1], Enter: false})
	a.ok(&SetNodeState{ID: "sds-2", State: NodeUp})
	before := layoutOf()
	a.ok(&SetMaintenance{SDSID: ids[1], Enter: false})
	l = layoutOf()
	rb, ok := l.ActiveRebuild()
	if state(ids[1]) != SDSUp || !ok || rb.Returning != ids[1] || rb.Done != 0 || rb.Ordered != l.Chunks() || l.Excluded[0].Readmitted != before.Epoch {
		t.Fatalf("after exit: %s %+v", state(ids[1]), l)
	}
	for c := range l.Chunks() {
		if before.Degraded(c) {
			if ids2, pending := l.ReplicaSet(c); !pending || ids2[1] != ids[1] {
				t.Fatalf("chunk %d not returning to its SDS: %v", c, ids2)
			}
		}
	}

	// Maintenance that ends in failure: the exclusions become ordinary, rebuilds go elsewhere.
	a.ok(&AdvanceRebuild{VolumeID: v, Epoch: rb.Epoch, Done: l.Chunks(), Ordered: l.Chunks()})
	a.ok(&SetMaintenance{SDSID: ids[2], Enter: true})
	a.ok(&SetSDSState{ID: ids[2], State: SDSFailed})
	l = layoutOf()
	for _, x := range l.Excluded {
		if x.SDSID == ids[2] && x.Maintenance {
			t.Fatalf("a failed SDS is still in maintenance: %+v", l.Excluded)
		}
	}
	if state(ids[2]) != SDSFailed {
		t.Fatalf("state %s", state(ids[2]))
	}
}

func TestMoveJoinsTheTargetToTheLayout(t *testing.T) {
	a := newApplier(t)
	a.ok(&CreatePD{Name: "pd1"})
	a.ok(&CreatePool{Name: "p", PDID: 1, TotalCapacityGB: 100})
	var ids []int64
	for _, n := range []string{"sds-1", "sds-2", "sds-3"} {
		ids = append(ids, a.ok(sdsNode(n)).(Registration).SDSID)
	}
	v := a.ok(&CreateVolume{Name: "v1", SizeGB: 1, PoolID: 1}).(Volume).ID
	a.ok(&SetLayout{VolumeID: v, Members: []layout.Member{{SDSID: ids[0], Weight: 1}, {SDSID: ids[1], Weight: 1}}})
	a.reject(KindInvalid, &BeginRebuild{VolumeID: v, Ordered: 10, From: ids[0]})
	a.reject(KindInvalid, &BeginRebuild{VolumeID: v, Ordered: 10, From: ids[0], To: ids[0]})
	a.reject(KindInvalid, &BeginRebuild{VolumeID: v, Ordered: 10, From: ids[2], To: ids[1]})
	a.reject(KindNotFound, &BeginRebuild{VolumeID: v, Ordered: 10, From: ids[0], To: 99})
	a.ok(&SetNodeState{ID: "sds-3", State: NodeDown})
	a.reject(KindConflict, &BeginRebuild{VolumeID: v, Ordered: 10, From: ids[0], To: ids[2]})
	a.ok(&SetNodeState{ID: "sds-3", State: NodeUp})

	a.ok(&BeginRebuild{VolumeID: v, Ordered: 1024, From: ids[0], To: ids[2]})
	var l layout.Layout
	a.read(func(r *Reader) (err error) { l, _, err = r.Layout(v); return })
	m, ok := l.Member(ids[2])
	if !ok || m.Joined != l.Epoch || len(l.Rebuilds) != 1 || l.Rebuilds[0].From != ids[0] || l.Rebuilds[0].To != ids[2] {
		t.Fatalf("after the move began: %+v", l)
	}
	moving := 0
	for c := range l.Chunks() {
		if ids2, pending := l.ReplicaSet(c); pending {
			moving++
			if len(ids2) != 3 || ids2[2] != ids[2] {
				t.Fatalf("chunk %d: %v", c, ids2)
			}
		}
	}
	if moving != int(l.Chunks()) { // every chunk has a copy on SDS 1 (two members)
		t.Fatalf("%d of %d chunks moving", moving, l.Chunks())
	}
	a.ok(&AdvanceRebuild{VolumeID: v, Epoch: l.Rebuilds[0].Epoch, Done: 1024, Ordered: 1024})
	a.read(func(r *Reader) (err error) { l, _, err = r.Layout(v); return })
	for c := range l.Chunks() {
		if ids2 := l.Replicas(c); len(ids2) != 2 || ids2[0] == ids[0] || ids2[1] == ids[0] {
			t.Fatalf("chunk %d after the move: %v", c, ids2)
		}
	}
}
