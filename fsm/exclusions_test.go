package fsm

import (
	"slices"
	"testing"

	"pflex/internal/layout"
)

func TestDownSDSLeavesLayoutsWithANewEpochAndStaysOut(t *testing.T) {
	a := newApplier(t)
	a.ok(&CreatePD{Name: "pd1"})
	a.ok(&CreatePool{Name: "p", PDID: 1, TotalCapacityGB: 100})
	var ids []int64
	for _, n := range []string{"sds-1", "sds-2", "sds-3"} {
		ids = append(ids, a.ok(sdsNode(n)).(Registration).SDSID)
	}
	v1 := a.ok(&CreateVolume{Name: "v1", SizeGB: 1, PoolID: 1}).(Volume).ID
	v2 := a.ok(&CreateVolume{Name: "v2", SizeGB: 1, PoolID: 1}).(Volume).ID
	all3 := []layout.Member{{SDSID: ids[0], Weight: 1}, {SDSID: ids[1], Weight: 1}, {SDSID: ids[2], Weight: 1}}
	a.ok(&SetLayout{VolumeID: v1, Members: all3})
	a.ok(&SetLayout{VolumeID: v2, Members: all3[:2]})
	var v0 int64
	a.read(func(r *Reader) (err error) { v0, err = r.IOVersion(); return })

	a.ok(&SetNodeState{ID: "sds-3", State: NodeDown})
	var l1, l2 layout.Layout
	var epochs map[string]int64
	var v int64
	read := func() {
		a.read(func(r *Reader) (err error) {
			if l1, _, err = r.Layout(v1); err != nil {
				return err
			}
			if l2, _, err = r.Layout(v2); err != nil {
				return err
			}
			if epochs, err = r.LayoutEpochs(); err != nil {
				return err
			}
			v, err = r.IOVersion()
			return err
		})
	}
	read()
	if l1.Epoch != 2 || len(l1.Excluded) != 1 || l1.Excluded[0] != (layout.Exclusion{SDSID: ids[2], Epoch: 2}) {
		t.Fatalf("v1 after sds-3 down: %+v", l1)
	}
	if l2.Epoch != 1 || len(l2.Excluded) != 0 {
		t.Fatalf("v2 never had sds-3: %+v", l2)
	}
	if epochs["1"] != 2 || epochs["2"] != 1 || v != v0+1 {
		t.Fatalf("epochs %v io_version %d (was %d)", epochs, v, v0)
	}
	for c := range l1.Chunks() {
		for _, id := range l1.Replicas(c) {
			if id == ids[2] {
				t.Fatalf("chunk %d still on the down SDS: %v", c, l1.Replicas(c))
			}
		}
	}

	// Up again (re-registration or liveness): still out of v1's replica sets (it missed
	// writes), readmitted as a rebuild target at v1's epoch; no new epoch.
	a.ok(&SetNodeState{ID: "sds-3", State: NodeUp})
	a.ok(sdsNode("sds-3"))
	read()
	if l1.Epoch != 2 || len(l1.Excluded) != 1 || l1.Excluded[0].Readmitted != 2 || l1.IsExcluded(ids[2]) {
		t.Fatalf("v1 after sds-3 up: %+v", l1)
	}
	for c := range l1.Chunks() {
		if slices.Contains(l1.Replicas(c), ids[2]) {
			t.Fatalf("chunk %d went back to sds-3: %v", c, l1.Replicas(c))
		}
	}
	// Down again: out again, a second record (it may have become a rebuild target meanwhile).
	a.ok(&SetNodeState{ID: "sds-3", State: NodeDown})
	read()
	if l1.Epoch != 3 || len(l1.Excluded) != 2 || !l1.IsExcluded(ids[2]) {
		t.Fatalf("v1 after sds-3 down again: %+v", l1)
	}
	// An operator failing an SDS excludes it too.
	a.ok(&SetSDSState{ID: ids[0], State: SDSFailed})
	read()
	if l1.Epoch != 4 || len(l1.Excluded) != 3 || l2.Epoch != 2 || len(l2.Excluded) != 1 {
		t.Fatalf("after failing sds-1: %+v / %+v", l1, l2)
	}
	for c := range l2.Chunks() {
		if r := l2.Replicas(c); len(r) != 1 || r[0] != ids[1] {
			t.Fatalf("v2 chunk %d: %v", c, r)
		}
	}
	a.ok(&DeleteVolume{ID: v2})
	var xs []layout.Exclusion
	a.read(func(r *Reader) (err error) { xs, err = r.Exclusions(v2); return })
	if len(xs) != 0 {
		t.Fatalf("exclusions of a deleted volume: %+v", xs)
	}
}
