package layout

import (
	"math"
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
