package mdm

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// balancedFixture is pool 1 with three up SDSs and a volume of sizeGB, evenly placed.
func balancedFixture(t testing.TB, sizeGB int64) (*storeProposer, int64) {
	sp := newStoreProposer(t)
	sp.ok(&fsm.CreatePD{Name: "pd1"})
	sp.ok(&fsm.CreatePool{Name: "pool1", PDID: 1, TotalCapacityGB: 1000})
	var members []layout.Member
	for _, n := range []string{"sds-1", "sds-2", "sds-3"} {
		reg := sp.ok(&fsm.RegisterNode{ID: n, Capabilities: []string{fsm.CapSDS}, Version: "t", APIAddr: "127.0.0.1:9101",
			DataAddr: "127.0.0.1:9701", GossipAddr: "127.0.0.1:7911",
			SDS: &fsm.SDSRegistration{ProtectionDomain: "pd1", Devices: fsm.Devices{"/d0"}, TotalCapacityGB: 1000}}).(fsm.Registration)
		members = append(members, layout.Member{SDSID: reg.SDSID, Weight: 1})
	}
	vol := sp.ok(&fsm.CreateVolume{Name: "v1", SizeGB: sizeGB, PoolID: 1}).(fsm.Volume).ID
	sp.ok(&fsm.SetLayout{VolumeID: vol, Members: members})
	return sp, vol
}

func TestRebalanceRemembersBalancedVolumes(t *testing.T) {
	sp, vol := balancedFixture(t, 1)
	p := newRebuildPlanner(sp, RebuildSettings{BatchChunks: 256, Rebalance: true}, hclog.NewNullLogger())
	mustRound(t, p)
	first, ok := p.balanced[1][vol]
	if !ok {
		t.Fatalf("a balanced volume is not remembered: %v", p.balanced)
	}
	mustRound(t, p)
	if p.balanced[1][vol] != first {
		t.Fatal("the digest of an unchanged volume changed")
	}
	// A change of the volume's layout is judged again: an extended volume is still balanced,
	// under a new digest.
	sp.ok(&fsm.ExtendVolume{VolumeID: vol, SizeGB: 2})
	mustRound(t, p)
	if d, ok := p.balanced[1][vol]; !ok || d == first {
		t.Fatalf("after the extend: remembered %v, same digest %v", ok, d == first)
	}
	// A fourth SDS changes the candidates: the volume is judged again and a move begins.
	sp.ok(&fsm.RegisterNode{ID: "sds-4", Capabilities: []string{fsm.CapSDS}, Version: "t", APIAddr: "127.0.0.1:9104",
		DataAddr: "127.0.0.1:9704", GossipAddr: "127.0.0.1:7914",
		SDS: &fsm.SDSRegistration{ProtectionDomain: "pd1", Devices: fsm.Devices{"/d0"}, TotalCapacityGB: 1000}})
	mustRound(t, p)
	if l := sp.layout(vol); func() bool { rb, ok := l.ActiveRebuild(); return !ok || rb.To == 0 }() {
		t.Fatalf("no move to the added SDS: %+v", l.Rebuilds)
	}
	if _, ok := p.balanced[1][vol]; ok {
		t.Fatal("a volume that is moving is remembered as balanced")
	}
}

// BenchmarkPlannerRoundAtRest is the leader's cost of one planner round (every
// rebuild_interval) over a balanced 64 GiB volume.
func BenchmarkPlannerRoundAtRest(b *testing.B) {
	sp, _ := balancedFixture(b, 64)
	p := newRebuildPlanner(sp, RebuildSettings{BatchChunks: 1024, Rebalance: true}, hclog.NewNullLogger())
	for b.Loop() {
		if err := p.round(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// A round that finds every pool protected and balanced is quiet, and the loop skips rounds
// until the applied index moves or a report or request wakes it; a round with work is not.
func TestPlannerSkipsRoundsOverAnUnchangedQuietState(t *testing.T) {
	sp, _ := balancedFixture(t, 1)
	p := newRebuildPlanner(sp, RebuildSettings{BatchChunks: 256, Rebalance: true}, hclog.NewNullLogger())
	if !p.due(7, false) {
		t.Fatal("the first round is not due")
	}
	mustRound(t, p)
	p.after(7, nil)
	if p.due(7, false) {
		t.Fatal("a quiet round over an unchanged state is due again")
	}
	if !p.due(8, false) || !p.due(7, true) {
		t.Fatal("a moved index or a wake-up does not make a round due")
	}
	p.after(7, errors.New("read failed"))
	if !p.due(7, false) {
		t.Fatal("a failed round counts as quiet")
	}
	// A fourth SDS: the round begins a move, so it is not quiet.
	sp.ok(&fsm.RegisterNode{ID: "sds-4", Capabilities: []string{fsm.CapSDS}, Version: "t", APIAddr: "127.0.0.1:9104",
		DataAddr: "127.0.0.1:9704", GossipAddr: "127.0.0.1:7914",
		SDS: &fsm.SDSRegistration{ProtectionDomain: "pd1", Devices: fsm.Devices{"/d0"}, TotalCapacityGB: 1000}})
	mustRound(t, p)
	p.after(9, nil)
	if !p.due(9, false) {
		t.Fatal("a round that began a move counts as quiet")
	}
	// A pool with a down SDS (degraded chunks) is never quiet.
	dp, _ := rebuildFixture(t)
	d := newRebuildPlanner(dp, RebuildSettings{BatchChunks: 256, Rebalance: true}, hclog.NewNullLogger())
	mustRound(t, d)
	if d.quiet {
		t.Fatal("a round over degraded chunks is quiet")
	}
}

// BenchmarkPlannerRoundManyVolumes is one planner round over 500 balanced 8 GiB volumes in one
// pool, after a first round that judged them.
func BenchmarkPlannerRoundManyVolumes(b *testing.B) {
	sp, vol := balancedFixture(b, 8)
	members := sp.layout(vol).Members
	for i := range 499 {
		v := sp.ok(&fsm.CreateVolume{Name: fmt.Sprintf("m%d", i), SizeGB: 8, PoolID: 1}).(fsm.Volume).ID
		sp.ok(&fsm.SetLayout{VolumeID: v, Members: slices.Clone(members)})
	}
	p := newRebuildPlanner(sp, RebuildSettings{BatchChunks: 1024, Rebalance: true}, hclog.NewNullLogger())
	if err := p.round(context.Background()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := p.round(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
