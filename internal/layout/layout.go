// Package layout maps a volume's chunks to SDSs. A layout is compact: the list of SDSs the
// volume may use (pinned when the layout is made, with capacity weights and fault sets), the
// chunk size, an epoch, and per-chunk overrides written after rebuilds. Its size does not grow
// with the volume. The MDM, every SDC and every SDS compute the same replicas from it.
package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"sort"
)

// Copies is the protection policy two_copies.
const Copies = 2

// Member is an SDS a layout may place chunks on.
type Member struct {
	SDSID    int64  `json:"sds_id"`
	Weight   int64  `json:"weight"`              // capacity in GB: bigger SDSs get more chunks
	FaultSet int64  `json:"fault_set,omitempty"` // 0: none
	Addr     string `json:"addr"`                // data address, for clients
}

// Layout is a volume's placement.
type Layout struct {
	VolumeID    int64             `json:"volume_id"`
	Epoch       int64             `json:"epoch"`
	ChunkSize   int64             `json:"chunk_size"` // bytes
	SizeBytes   int64             `json:"size_bytes"`
	Thick       bool              `json:"thick,omitempty"` // SDSs allocate every chunk up front
	Members     []Member          `json:"members"`
	Overrides   map[int64][]int64 `json:"overrides,omitempty"` // chunk -> SDS ids, primary first
	ChunkEpochs map[int64]int64   `json:"chunk_epochs,omitempty"`
	// Excluded are members taken out of every replica set they were in (the SDS went down or
	// was failed), each with the layout epoch that took it out. A chunk loses an excluded SDS
	// only while another copy remains, so the last copy of a chunk is never excluded: it stays
	// the chunk's replica (unavailable while its SDS is down) rather than be forgotten.
	// Re-protecting degraded chunks (rebuild) writes overrides.
	Excluded []Exclusion `json:"excluded,omitempty"`
}

// Exclusion is an SDS taken out of a layout's replica sets at Epoch.
type Exclusion struct {
	SDSID int64 `json:"sds_id"`
	Epoch int64 `json:"epoch"`
}

// Errors.
var (
	ErrTooFewSDS = errors.New("layout: fewer than two SDSs to place two copies on")
	ErrRange     = errors.New("layout: offset beyond the volume")
)

// Validate checks a layout can place two copies.
func (l *Layout) Validate() error {
	if l.ChunkSize <= 0 {
		return fmt.Errorf("layout: chunk size %d", l.ChunkSize)
	}
	if len(l.Members) < Copies {
		return ErrTooFewSDS
	}
	return nil
}

// Chunks is how many chunks the volume has.
func (l *Layout) Chunks() int64 { return (l.SizeBytes + l.ChunkSize - 1) / l.ChunkSize }

// Replicas returns the SDS ids holding chunk c, primary first: the placed replicas (an
// override, or else the rendezvous choice) without the excluded SDSs, taken out in the order
// they were excluded while at least one copy remains. When the primary is excluded the
// secondary becomes the primary. A chunk with one replica is degraded.
func (l *Layout) Replicas(c int64) []int64 {
	placed := l.placed(c)
	if len(l.Excluded) == 0 {
		return placed
	}
	since := int64(0) // exclusions at or before an override's epoch are already reflected in it
	if _, ok := l.Overrides[c]; ok {
		since = l.ChunkEpochs[c]
	}
	out := placed
	for _, x := range l.exclusionOrder() {
		if x.Epoch <= since || len(out) <= 1 {
			continue
		}
		for i, id := range out {
			if id == x.SDSID {
				out = append(append([]int64(nil), out[:i]...), out[i+1:]...)
				break
			}
		}
	}
	return out
}

// exclusionOrder is Excluded sorted by epoch (then id): the order SDSs were taken out.
func (l *Layout) exclusionOrder() []Exclusion {
	if sort.SliceIsSorted(l.Excluded, func(i, j int) bool { return exclLess(l.Excluded[i], l.Excluded[j]) }) {
		return l.Excluded
	}
	xs := append([]Exclusion(nil), l.Excluded...)
	sort.Slice(xs, func(i, j int) bool { return exclLess(xs[i], xs[j]) })
	return xs
}

func exclLess(a, b Exclusion) bool {
	if a.Epoch != b.Epoch {
		return a.Epoch < b.Epoch
	}
	return a.SDSID < b.SDSID
}

// IsExcluded reports whether SDS id was taken out of the layout.
func (l *Layout) IsExcluded(id int64) bool {
	for _, x := range l.Excluded {
		if x.SDSID == id {
			return true
		}
	}
	return false
}

// Degraded reports whether chunk c has fewer than Copies replicas.
func (l *Layout) Degraded(c int64) bool { return len(l.Replicas(c)) < Copies }

// placed is where chunk c was put: its override, or weighted rendezvous hashing: each member
// scores -weight/ln(u) with u a hash of (volume, chunk, sds) in (0,1); the best is the primary,
// the best of another fault set (if the pool has fault sets) or another SDS is the secondary.
func (l *Layout) placed(c int64) []int64 {
	if r, ok := l.Overrides[c]; ok {
		return r
	}
	type scored struct {
		m     Member
		score float64
	}
	s := make([]scored, 0, len(l.Members))
	for _, m := range l.Members {
		s = append(s, scored{m, score(l.VolumeID, c, m)})
	}
	sort.Slice(s, func(i, j int) bool {
		if s[i].score != s[j].score {
			return s[i].score > s[j].score
		}
		return s[i].m.SDSID < s[j].m.SDSID
	})
	if len(s) == 0 {
		return nil
	}
	out := []int64{s[0].m.SDSID}
	for _, x := range s[1:] {
		if x.m.FaultSet != 0 && x.m.FaultSet == s[0].m.FaultSet {
			continue
		}
		out = append(out, x.m.SDSID)
		break
	}
	if len(out) < Copies && len(s) > 1 { // every other SDS shares the fault set: still two SDSs
		out = append(out, s[1].m.SDSID)
	}
	return out
}

func score(volume, chunk int64, m Member) float64 {
	h := fnv.New64a()
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], uint64(volume))
	binary.BigEndian.PutUint64(b[8:], uint64(chunk))
	binary.BigEndian.PutUint64(b[16:], uint64(m.SDSID))
	h.Write(b[:])
	x := h.Sum64()
	// Mix (fnv's high bits are weak for short inputs) and map to (0,1).
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	u := (float64(x>>11) + 0.5) / float64(1<<53)
	w := float64(max(m.Weight, 1))
	return -w / math.Log(u)
}

// Member returns the member with the given SDS id.
func (l *Layout) Member(id int64) (Member, bool) {
	for _, m := range l.Members {
		if m.SDSID == id {
			return m, true
		}
	}
	return Member{}, false
}

// ChunkEpoch is the epoch of chunk c: the layout's, or the epoch its override was written at.
func (l *Layout) ChunkEpoch(c int64) int64 {
	if e, ok := l.ChunkEpochs[c]; ok {
		return e
	}
	return l.Epoch
}

// Span is the part of an IO that falls in one chunk.
type Span struct {
	Chunk  int64
	Offset int64 // within the volume
	Length int64
}

// Split cuts [off, off+length) at chunk boundaries.
func (l *Layout) Split(off, length int64) ([]Span, error) {
	if off < 0 || length < 0 || off+length > l.SizeBytes {
		return nil, ErrRange
	}
	var out []Span
	for length > 0 {
		c := off / l.ChunkSize
		n := min(length, (c+1)*l.ChunkSize-off)
		out = append(out, Span{Chunk: c, Offset: off, Length: n})
		off += n
		length -= n
	}
	return out, nil
}
