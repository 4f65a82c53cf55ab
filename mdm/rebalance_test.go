package mdm

import (
	"testing"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/internal/layout"
)

// copiesPerSDS counts the full copies each SDS holds in l.
func copiesPerSDS(t *testing.T, l layout.Layout) map[int64]int64 {
	t.Helper()
	out := map[int64]int64{}
	for c := range l.Chunks() {
		ids, pending := l.ReplicaSet(c)
		if pending || len(ids) != layout.Copies {
			t.Fatalf("chunk %d not fully protected: %v pending=%v", c, ids, pending)
		}
		for _, id := range ids {
			out[id]++
		}
	}
	return out
}

// settle runs planner rounds, answering every batch with Done reports, until nothing is active
// after a round (or fails after max rounds).
func settle(t *testing.T, sp *storeProposer, p *rebuildPlanner, vol int64, max int) (moves int) {
	t.Helper()
	for range max {
		mustRound(t, p)
		l := sp.layout(vol)
		rb, ok := l.ActiveRebuild()
		if !ok {
			mustRound(t, p) // the round that completed a batch plans nothing new: one more
			l = sp.layout(vol)
			if rb, ok = l.ActiveRebuild(); !ok {
				return moves
			}
		}
		if rb.To != 0 && rb.Done == 0 {
			moves++
		}
		reportDone(p, l, 0)
	}
	t.Fatalf("still copying after %d rounds", max)
	return moves
}

func TestRebalanceFillsAReturnedAndAnAddedSDS(t *testing.T) {
	sp, vol := rebuildFixture(t) // four SDSs, sds-1 down, a 1 GiB volume
	p := newRebuildPlanner(sp, RebuildSettings{BatchChunks: 256, Rebalance: true}, hclog.NewNullLogger())
	settle(t, sp, p, vol, 50)
	l := sp.layout(vol)
	if n := copiesPerSDS(t, l)[1]; n != 0 {
		t.Fatalf("the down SDS holds %d copies after the rebuild", n)
	}
	// sds-1 comes back: readmitted, empty; rebalance fills it in bounded moves.
	sp.ok(&fsm.SetNodeState{ID: "sds-1", State: fsm.NodeUp})
	moves := settle(t, sp, p, vol, 100)
	counts := copiesPerSDS(t, sp.layout(vol))
	share := int64(2*1024) / 4
	if moves < 2 || counts[1] < share-share/5 {
		t.Fatalf("after %d moves the returned SDS holds %d copies (share %d): %v", moves, counts[1], share, counts)
	}
	// A fifth SDS registers: it joins the layout through moves.
	sp.ok(&fsm.RegisterNode{ID: "sds-5", Capabilities: []string{fsm.CapSDS}, Version: "t", APIAddr: "127.0.0.1:9105",
		DataAddr: "127.0.0.1:9705", GossipAddr: "127.0.0.1:7915",
		SDS: &fsm.SDSRegistration{ProtectionDomain: "pd1", Devices: fsm.Devices{"/d0"}, TotalCapacityGB: 100}})
	moves = settle(t, sp, p, vol, 100)
	l = sp.layout(vol)
	counts = copiesPerSDS(t, l)
	share = int64(2*1024) / 5
	if m, ok := l.Member(5); !ok || m.Joined == 0 || moves == 0 || counts[5] < share-share/5 {
		t.Fatalf("the added SDS: member %+v, %d moves, %d copies (share %d): %v", m, moves, counts[5], share, counts)
	}
	// Balanced now: another round begins nothing.
	mustRound(t, p)
	if l := sp.layout(vol); func() bool { _, ok := l.ActiveRebuild(); return ok }() {
		t.Fatal("a balanced pool keeps moving")
	}
	// Switched off: nothing moves.
	sp.ok(&fsm.SetNodeState{ID: "sds-2", State: fsm.NodeDown})
	off := newRebuildPlanner(sp, RebuildSettings{BatchChunks: 256}, hclog.NewNullLogger())
	settle(t, sp, off, vol, 50) // the rebuild still runs
	sp.ok(&fsm.SetNodeState{ID: "sds-2", State: fsm.NodeUp})
	mustRound(t, off)
	if l := sp.layout(vol); func() bool { _, ok := l.ActiveRebuild(); return ok }() {
		t.Fatal("rebalance disabled, yet a move began")
	}
}
