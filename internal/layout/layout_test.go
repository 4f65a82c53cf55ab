package layout

import (
	"math"
	"slices"
	"testing"
)

func members(n int, faultSets int) []Member {
	var ms []Member
	for i := 1; i <= n; i++ {
		fs := int64(0)
		if faultSets > 0 {
			fs = int64(i%faultSets) + 1
		}
		ms = append(ms, Member{SDSID: int64(i), Weight: 100, FaultSet: fs})
	}
	return ms
}

func TestReplicasAreTwoDistinctSDSsAndStable(t *testing.T) {
	l := &Layout{VolumeID: 7, ChunkSize: 1 << 20, SizeBytes: 1 << 30, Members: members(5, 0)}
	count := map[int64]int{}
	for c := int64(0); c < l.Chunks(); c++ {
		r := l.Replicas(c)
		if len(r) != 2 || r[0] == r[1] {
			t.Fatalf("chunk %d: %v", c, r)
		}
		again := (&Layout{VolumeID: 7, ChunkSize: 1 << 20, SizeBytes: 1 << 30, Members: members(5, 0)}).Replicas(c)
		if again[0] != r[0] || again[1] != r[1] {
			t.Fatalf("not deterministic")
		}
		count[r[0]]++
		count[r[1]]++
	}
	// Equal weights: each SDS holds about 2/5 of the 1024 chunks' copies.
	for id, n := range count {
		if math.Abs(float64(n)-2*1024/5.0) > 80 {
			t.Fatalf("SDS %d holds %d copies: %v", id, n, count)
		}
	}
}

func TestWeightsAndFaultSets(t *testing.T) {
	ms := members(4, 2)
	ms[0].Weight = 300 // SDS 1 is three times larger
	l := &Layout{VolumeID: 1, ChunkSize: 1 << 20, SizeBytes: 4 << 30, Members: ms}
	count := map[int64]int{}
	fsOf := map[int64]int64{}
	for _, m := range ms {
		fsOf[m.SDSID] = m.FaultSet
	}
	for c := int64(0); c < l.Chunks(); c++ {
		r := l.Replicas(c)
		if fsOf[r[0]] == fsOf[r[1]] {
			t.Fatalf("chunk %d: both copies in fault set %d", c, fsOf[r[0]])
		}
		count[r[0]]++
	}
	if count[1] < 2*count[2] {
		t.Fatalf("the bigger SDS is not primary more often: %v", count)
	}
}

func TestOverridesAndSplit(t *testing.T) {
	l := &Layout{VolumeID: 1, Epoch: 3, ChunkSize: 1 << 20, SizeBytes: 3 << 20, Members: members(3, 0),
		Overrides: map[int64][]int64{1: {3, 2}}, ChunkEpochs: map[int64]int64{1: 5}}
	if r := l.Replicas(1); r[0] != 3 || r[1] != 2 || l.ChunkEpoch(1) != 5 || l.ChunkEpoch(0) != 3 {
		t.Fatalf("override: %v", r)
	}
	spans, err := l.Split(1<<20-10, 20)
	if err != nil || len(spans) != 2 || spans[0].Length != 10 || spans[1].Chunk != 1 {
		t.Fatalf("split: %+v %v", spans, err)
	}
	if _, err := l.Split(3<<20-1, 2); err != ErrRange {
		t.Fatalf("range: %v", err)
	}
	if err := (&Layout{ChunkSize: 1, Members: members(1, 0)}).Validate(); err != ErrTooFewSDS {
		t.Fatalf("validate: %v", err)
	}
}

func TestExcludedSDSLeavesItsChunksWithTheSurvivor(t *testing.T) {
	base := &Layout{VolumeID: 3, Epoch: 1, ChunkSize: 1 << 20, SizeBytes: 256 << 20, Members: members(3, 0)}
	l := *base
	l.Epoch = 2
	l.Excluded = []Exclusion{{SDSID: 2, Epoch: 2}}
	degraded := 0
	for c := range l.Chunks() {
		before, after := base.Replicas(c), l.Replicas(c)
		switch {
		case before[0] == 2:
			if len(after) != 1 || after[0] != before[1] {
				t.Fatalf("chunk %d: %v -> %v: the secondary must become the only (primary) replica", c, before, after)
			}
			degraded++
		case before[1] == 2:
			if len(after) != 1 || after[0] != before[0] {
				t.Fatalf("chunk %d: %v -> %v", c, before, after)
			}
			degraded++
		default:
			if len(after) != 2 || after[0] != before[0] || after[1] != before[1] {
				t.Fatalf("chunk %d without SDS 2 changed: %v -> %v", c, before, after)
			}
		}
		if l.Degraded(c) != (len(after) == 1) {
			t.Fatalf("chunk %d: Degraded disagrees with %v", c, after)
		}
		if l.ChunkEpoch(c) != 2 {
			t.Fatalf("chunk %d epoch %d", c, l.ChunkEpoch(c))
		}
	}
	if degraded == 0 {
		t.Fatal("no chunk had SDS 2")
	}

	// A second SDS out: chunks that had both keep the one excluded last (it had every write
	// since the first went), never zero replicas.
	l.Epoch = 3
	l.Excluded = []Exclusion{{SDSID: 3, Epoch: 3}, {SDSID: 2, Epoch: 2}}
	for c := range l.Chunks() {
		before, after := base.Replicas(c), l.Replicas(c)
		if len(after) != 1 {
			t.Fatalf("chunk %d: %v -> %v", c, before, after)
		}
		has := func(id int64) bool { return before[0] == id || before[1] == id }
		want := int64(1)
		if has(2) && has(3) {
			want = 3
		}
		if after[0] != want {
			t.Fatalf("chunk %d: %v -> %v, want [%d]", c, before, after, want)
		}
	}
	if !l.IsExcluded(3) || l.IsExcluded(1) {
		t.Fatal("IsExcluded")
	}
}

func TestRebuildReprotectsDegradedChunks(t *testing.T) {
	l := &Layout{VolumeID: 3, Epoch: 1, ChunkSize: 1 << 20, SizeBytes: 64 << 20, Members: members(4, 0)}
	before := map[int64][]int64{}
	for c := range l.Chunks() {
		before[c] = l.Replicas(c)
	}
	l.Excluded = []Exclusion{{SDSID: 1, Epoch: 2}}
	l.Epoch = 2
	var hit []int64
	for c := range l.Chunks() {
		ids, pending := l.ReplicaSet(c)
		if pending {
			t.Fatalf("chunk %d pending without a rebuild", c)
		}
		if slices.Contains(before[c], 1) {
			hit = append(hit, c)
			if len(ids) != 1 || ids[0] == 1 || !l.Degraded(c) {
				t.Fatalf("chunk %d: %v after SDS 1 went", c, ids)
			}
		} else if !slices.Equal(ids, before[c]) {
			t.Fatalf("chunk %d moved without losing a copy: %v -> %v", c, before[c], ids)
		}
	}
	if len(hit) == 0 {
		t.Fatal("SDS 1 held nothing")
	}
	// The first half of the chunks is ordered: targets take writes (pending), reads stay put.
	l.Rebuilds = []Rebuild{{Epoch: 3, Done: 0, Ordered: 32}}
	l.Epoch = 3
	for _, c := range hit {
		ids, pending := l.ReplicaSet(c)
		if c >= 32 {
			if len(ids) != 1 || pending {
				t.Fatalf("chunk %d beyond the batch: %v pending=%v", c, ids, pending)
			}
			continue
		}
		if len(ids) != 2 || !pending || ids[1] == 1 || ids[0] == ids[1] || ids[0] != before[c][len(before[c])-1] && ids[0] != before[c][0] {
			t.Fatalf("chunk %d in the batch: %v pending=%v (was %v)", c, ids, pending, before[c])
		}
		if !l.Degraded(c) {
			t.Fatalf("chunk %d counts as protected while copying", c)
		}
	}
	// Batch done, the rest ordered; then everything done.
	l.Rebuilds[0] = Rebuild{Epoch: 3, Done: 32, Ordered: 64}
	for _, c := range hit {
		_, pending := l.ReplicaSet(c)
		if pending != (c >= 32) {
			t.Fatalf("chunk %d pending=%v", c, pending)
		}
	}
	l.Rebuilds[0] = Rebuild{Epoch: 3, Done: 64, Ordered: 64}
	targets := map[int64]int64{}
	for c := range l.Chunks() {
		ids, pending := l.ReplicaSet(c)
		if len(ids) != 2 || pending || slices.Contains(ids, 1) {
			t.Fatalf("chunk %d after rebuild: %v pending=%v", c, ids, pending)
		}
		targets[c] = ids[1]
	}
	if _, ok := l.ActiveRebuild(); ok {
		t.Fatal("a finished rebuild is still active")
	}
	// SDS 1 comes back (readmitted at 4): it gets nothing back by itself.
	l.Excluded[0].Readmitted = 4
	for c := range l.Chunks() {
		if ids := l.Replicas(c); slices.Contains(ids, 1) {
			t.Fatalf("chunk %d went back to the returned SDS: %v", c, ids)
		}
	}
	// Now SDS 2 goes at 5 and a rebuild begins at 6: SDS 1 is a target again.
	l.Excluded = append(l.Excluded, Exclusion{SDSID: 2, Epoch: 5})
	l.Rebuilds = append(l.Rebuilds, Rebuild{Epoch: 6, Done: 64, Ordered: 64})
	used1 := false
	for c := range l.Chunks() {
		ids, pending := l.ReplicaSet(c)
		if len(ids) != 2 || pending || slices.Contains(ids, 2) || ids[0] == ids[1] {
			t.Fatalf("chunk %d after the second rebuild: %v pending=%v", c, ids, pending)
		}
		used1 = used1 || slices.Contains(ids, 1)
	}
	if !used1 {
		t.Fatal("the readmitted SDS was never a rebuild target")
	}
}

func TestRebuildTargetLostOrSourceLost(t *testing.T) {
	l := &Layout{VolumeID: 9, Epoch: 3, ChunkSize: 1 << 20, SizeBytes: 32 << 20, Members: members(3, 0),
		Excluded: []Exclusion{{SDSID: 1, Epoch: 2}}, Rebuilds: []Rebuild{{Epoch: 3, Done: 0, Ordered: 32}}}
	src := map[int64]int64{}
	tgt := map[int64]int64{}
	for c := range l.Chunks() {
		if ids, pending := l.ReplicaSet(c); pending {
			src[c], tgt[c] = ids[0], ids[1]
		}
	}
	if len(src) == 0 {
		t.Fatal("nothing pending")
	}
	// The source of a pending chunk goes down: its only full copy stays (unavailable); the
	// target is not promoted.
	l.Excluded = append(l.Excluded, Exclusion{SDSID: 2, Epoch: 4})
	for c, s := range src {
		ids, _ := l.ReplicaSet(c)
		if ids[0] != s {
			t.Fatalf("chunk %d: source %d lost its place to %v", c, s, ids)
		}
		if s == 2 && tgt[c] == 3 && len(ids) == 2 {
			// SDS 2 was the source, 3 the target: 3 stays pending behind the down source.
			if _, pending := l.ReplicaSet(c); !pending {
				t.Fatalf("chunk %d: the target became a full copy without the copy", c)
			}
		}
		if tgt[c] == 2 && len(ids) != 1 {
			t.Fatalf("chunk %d: target 2 went but is still listed: %v", c, ids)
		}
	}
}

func TestMaintenanceKeepsCopiesAndReturnsThem(t *testing.T) {
	l := &Layout{VolumeID: 5, Epoch: 2, ChunkSize: 1 << 20, SizeBytes: 64 << 20, Members: members(4, 0),
		Excluded: []Exclusion{{SDSID: 2, Epoch: 2, Maintenance: true}}}
	var hit []int64
	for c := range l.Chunks() {
		if l.Degraded(c) {
			hit = append(hit, c)
			if !l.MaintenanceCopy(c, 2) || slices.Contains(l.Replicas(c), 2) {
				t.Fatalf("chunk %d: %v", c, l.Replicas(c))
			}
		} else if l.MaintenanceCopy(c, 2) {
			t.Fatalf("chunk %d never lost a copy to maintenance", c)
		}
	}
	if len(hit) == 0 {
		t.Fatal("SDS 2 held nothing")
	}
	// A rebuild during maintenance leaves those chunks alone.
	l.Rebuilds = []Rebuild{{Epoch: 3, Done: 64, Ordered: 64}}
	for _, c := range hit {
		if ids := l.Replicas(c); len(ids) != 1 || !l.MaintenanceCopy(c, 2) {
			t.Fatalf("chunk %d rebuilt during maintenance: %v", c, ids)
		}
	}
	// Exit at 4, returning rebuild at 5: SDS 2 gets exactly its chunks back, pending first.
	l.Excluded[0].Readmitted = 4
	l.Rebuilds = append(l.Rebuilds, Rebuild{Epoch: 5, Done: 0, Ordered: 64, Returning: 2})
	for _, c := range hit {
		ids, pending := l.ReplicaSet(c)
		if len(ids) != 2 || ids[1] != 2 || !pending || l.MaintenanceCopy(c, 2) {
			t.Fatalf("chunk %d returning: %v pending=%v", c, ids, pending)
		}
	}
	l.Rebuilds[1].Done = 64
	for c := range l.Chunks() {
		ids, pending := l.ReplicaSet(c)
		if len(ids) != 2 || pending {
			t.Fatalf("chunk %d after return: %v", c, ids)
		}
		if slices.Contains(hit, c) != slices.Contains(ids, 2) {
			t.Fatalf("chunk %d: SDS 2 got a chunk it did not have, or not its own: %v", c, ids)
		}
	}
	// Maintenance that turns into a failure (the exclusion is no longer maintenance): rebuilt
	// elsewhere.
	l2 := &Layout{VolumeID: 5, Epoch: 3, ChunkSize: 1 << 20, SizeBytes: 64 << 20, Members: members(4, 0),
		Excluded: []Exclusion{{SDSID: 2, Epoch: 2}}, Rebuilds: []Rebuild{{Epoch: 3, Done: 64, Ordered: 64}}}
	for _, c := range hit {
		if ids := l2.Replicas(c); len(ids) != 2 || slices.Contains(ids, 2) {
			t.Fatalf("chunk %d after a failure: %v", c, ids)
		}
	}
}

func TestMoveToAJoinedSDS(t *testing.T) {
	l := &Layout{VolumeID: 8, Epoch: 1, ChunkSize: 1 << 20, SizeBytes: 64 << 20, Members: members(3, 0)}
	before := map[int64][]int64{}
	for c := range l.Chunks() {
		before[c] = l.Replicas(c)
	}
	// SDS 4 joins at epoch 2: placement does not change by itself.
	l.Members = append(l.Members, Member{SDSID: 4, Weight: 100, Joined: 2})
	l.Epoch = 2
	for c := range l.Chunks() {
		if !slices.Equal(l.Replicas(c), before[c]) {
			t.Fatalf("chunk %d moved when SDS 4 joined", c)
		}
	}
	// Move from SDS 1 to SDS 4, first batch [0, 32).
	l.Rebuilds = []Rebuild{{Epoch: 2, Done: 0, Ordered: 32, From: 1, To: 4}}
	for c := range l.Chunks() {
		ids, pending := l.ReplicaSet(c)
		want := slices.Contains(before[c], 1) && c < 32
		if pending != want {
			t.Fatalf("chunk %d pending=%v (%v)", c, pending, ids)
		}
		if pending && (len(ids) != 3 || ids[2] != 4 || !slices.Equal(ids[:2], before[c]) || l.Degraded(c)) {
			t.Fatalf("chunk %d moving: %v", c, ids)
		}
	}
	l.Rebuilds[0].Done, l.Rebuilds[0].Ordered = 32, 32
	for c := range l.Chunks() {
		ids, pending := l.ReplicaSet(c)
		switch {
		case pending:
			t.Fatalf("chunk %d still pending", c)
		case slices.Contains(before[c], 1) && c < 32:
			i := slices.Index(before[c], 1)
			if ids[i] != 4 || len(ids) != 2 {
				t.Fatalf("chunk %d moved to %v, want 4 in place of 1 in %v", c, ids, before[c])
			}
		case !slices.Equal(ids, before[c]):
			t.Fatalf("chunk %d changed: %v -> %v", c, before[c], ids)
		}
	}
	// A move cut short by SDS 1 going down while [32, 64) is copying: the pending copies go.
	l.Rebuilds[0].Ordered = 64
	l.Excluded = []Exclusion{{SDSID: 4, Epoch: 3}}
	for c := int64(32); c < 64; c++ {
		if ids, pending := l.ReplicaSet(c); pending || slices.Contains(ids, 4) {
			t.Fatalf("chunk %d keeps the pending copy of a down SDS: %v", c, ids)
		}
	}
}
