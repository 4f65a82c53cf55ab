// Package layout maps a volume's chunks to SDSs. A layout is compact: the list of SDSs the
// volume may use (pinned when the layout is made, with capacity weights and fault sets), the
// chunk size, an epoch, and per-chunk overrides written after rebuilds. Its size does not grow
// with the volume. The MDM, every SDC and every SDS compute the same replicas from it.
package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
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
	// Joined is the epoch an SDS joined the layout after it was made (a rebalance onto an added
	// SDS): placement by rendezvous ignores it, so no chunk moves by itself; it receives chunks
	// only from moves and rebuilds that begin at or after Joined.
	Joined int64 `json:"joined,omitempty"`
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
	// Rebuilds re-protect the chunks exclusions left with one copy (ReplicaSet).
	Excluded []Exclusion `json:"excluded,omitempty"`
	// Rebuilds in the order they began (epoch); at most one is copying at a time.
	Rebuilds []Rebuild `json:"rebuilds,omitempty"`
}

// Rebuild re-protects, in batches of chunks, the chunks that stood with one copy on an SDS
// that was not excluded when it began. Each batch is [Done, Ordered): committed before the
// copy starts (the targets then take every write), advanced when every source SDS reported
// its copies durable. The record stays once done: the replicas it gave are part of the
// history ReplicaSet replays.
type Rebuild struct {
	Epoch   int64 `json:"epoch"`   // the layout epoch it began at
	Done    int64 `json:"done"`    // chunks below are re-protected
	Ordered int64 `json:"ordered"` // chunks in [Done, Ordered) are being copied
	// Returning is an SDS back from maintenance: this rebuild gives it back exactly the chunks
	// its maintenance took from it (the target is that SDS, not the rendezvous choice), and
	// sources copy only the chunks written meanwhile.
	Returning int64 `json:"returning,omitempty"`
	// From and To make it a move (rebalance): each chunk of [0, Ordered) with two full copies,
	// one on From and none on To, gets To as a pending third copy; below Done, To has replaced
	// From (in From's place, so a moved primary stays primary).
	From int64 `json:"from,omitempty"`
	To   int64 `json:"to,omitempty"`
}

// Exclusion is an SDS taken out of a layout's replica sets at Epoch.
type Exclusion struct {
	SDSID int64 `json:"sds_id"`
	Epoch int64 `json:"epoch"`
	// Readmitted is the layout epoch at which the SDS was marked up again (0: still out). It
	// does not give the SDS its old chunks back (they missed writes); it makes the SDS a
	// rebuild target again for rebuilds that begin later.
	Readmitted int64 `json:"readmitted,omitempty"`
	// Maintenance marks a planned outage (instant maintenance mode): the chunks it left with
	// one copy are not rebuilt elsewhere; the SDS keeps its copies and, when maintenance ends
	// (Readmitted), a returning Rebuild gives them back to it, re-syncing only what changed.
	Maintenance bool `json:"maintenance,omitempty"`
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

// Replicas returns the SDS ids holding chunk c, primary first: ReplicaSet without saying
// whether the secondary is still a rebuild target. The data path forwards writes to every id
// it returns and reads from the first.
func (l *Layout) Replicas(c int64) []int64 {
	ids, _ := l.ReplicaSet(c)
	return ids
}

// ReplicaSet derives chunk c's replicas, primary first, by replaying the layout's history in
// epoch order over where the chunk was placed (an override, or else the rendezvous choice):
//
//   - an exclusion takes its SDS out of the set while another full copy remains (when the
//     primary goes the secondary becomes the primary; a pending rebuild target is not a full
//     copy, so the last real copy is never dropped for it);
//   - a rebuild gives a chunk left with one copy, on an SDS not excluded at the rebuild's epoch,
//     a second replica: the target rule's choice. Below the rebuild's Done mark the copy is
//     complete; in [Done, Ordered) it is being copied, and pending is true: writes already go
//     to the target, reads do not, and the chunk still counts as degraded;
//   - a move (rebalance) gives a chunk with two copies a pending third on its new SDS, then
//     replaces the old one with it.
//
// A pending target is always the last id.
//
// A chunk with one full replica is degraded.
func (l *Layout) ReplicaSet(c int64) (ids []int64, pending bool) {
	ids, pending, _ = l.replay(c)
	return ids, pending
}

// MaintenanceCopy reports whether chunk c lost a copy to SDS id's maintenance and has not got
// it back yet: while id is in maintenance its copy is kept (not superseded), and a returning
// rebuild gives it back.
func (l *Layout) MaintenanceCopy(c, id int64) bool {
	_, _, m := l.replay(c)
	return m == id && id != 0
}

// replay is ReplicaSet, also returning the SDS whose maintenance took the chunk's other copy
// (0: none).
func (l *Layout) replay(c int64) (out []int64, pending bool, maint int64) {
	placed := l.placed(c)
	if len(l.Excluded) == 0 && len(l.Rebuilds) == 0 {
		return placed, false, 0
	}
	since := int64(0) // history at or before an override's epoch is already reflected in it
	if _, ok := l.Overrides[c]; ok {
		since = l.ChunkEpochs[c]
	}
	out = placed
	xs, rs := l.exclusionOrder(), l.Rebuilds
	for xi, ri := 0, 0; xi < len(xs) || ri < len(rs); {
		if ri == len(rs) || (xi < len(xs) && xs[xi].Epoch <= rs[ri].Epoch) {
			x := xs[xi]
			xi++
			i := slices.Index(out, x.SDSID)
			full := len(out)
			if pending {
				full--
			}
			switch {
			case x.Epoch <= since || i < 0:
			case pending && i == len(out)-1: // the pending target went away before its copy completed
				out, pending = out[:i:i], false
			case full <= 1: // the last full copy stays, unavailable while down
			default:
				out = slices.Delete(slices.Clone(out), i, i+1)
				if x.Maintenance {
					maint = x.SDSID
				}
			}
			continue
		}
		rb := rs[ri]
		ri++
		if rb.Epoch <= since || c >= rb.Ordered || pending {
			continue
		}
		if rb.To != 0 {
			if moved, ok := l.move(out, rb); ok {
				if c >= rb.Done {
					out, pending = append(slices.Clone(out), rb.To), true
				} else {
					out = moved
				}
			}
			continue
		}
		if len(out) != 1 || l.excludedAt(out[0], rb.Epoch) {
			continue
		}
		var t int64
		switch {
		case rb.Returning != 0:
			if maint != rb.Returning {
				continue
			}
			t = rb.Returning
		case maint != 0 && l.inMaintenanceAt(maint, rb.Epoch):
			continue // its copy comes back when the maintenance ends
		default:
			var ok bool
			if t, ok = l.rebuildTarget(c, out[0], rb.Epoch); !ok {
				continue
			}
		}
		out, pending, maint = []int64{out[0], t}, c >= rb.Done, 0
	}
	return out, pending, maint
}

// move returns out with rb.From replaced by rb.To, if the move applies to a chunk with those
// replicas: two full copies, one on From, none on To, To usable at the move's epoch and not in
// the fault set of the copy that stays.
func (l *Layout) move(out []int64, rb Rebuild) ([]int64, bool) {
	i := slices.Index(out, rb.From)
	if len(out) != Copies || i < 0 || slices.Contains(out, rb.To) || l.excludedAt(rb.To, rb.Epoch) {
		return nil, false
	}
	to, ok := l.Member(rb.To)
	if !ok || to.Joined > rb.Epoch {
		return nil, false
	}
	if stay, ok := l.Member(out[1-i]); ok && stay.FaultSet != 0 && stay.FaultSet == to.FaultSet {
		return nil, false
	}
	moved := slices.Clone(out)
	moved[i] = rb.To
	return moved, true
}

// inMaintenanceAt reports whether SDS id was in maintenance at epoch e.
func (l *Layout) inMaintenanceAt(id, e int64) bool {
	for _, x := range l.Excluded {
		if x.SDSID == id && x.Maintenance && x.Epoch <= e && (x.Readmitted == 0 || e <= x.Readmitted) {
			return true
		}
	}
	return false
}

// excludedAt reports whether SDS id stood excluded at epoch e: taken out at or before e and
// not readmitted (marked up again) before e.
func (l *Layout) excludedAt(id, e int64) bool {
	for _, x := range l.Excluded {
		if x.SDSID == id && x.Epoch <= e && (x.Readmitted == 0 || e <= x.Readmitted) {
			return true
		}
	}
	return false
}

// rebuildTarget is where a rebuild begun at epoch e puts the second copy of chunk c whose
// only copy is on SDS src: the member with the best rendezvous score for the chunk among those
// not excluded at e, in another fault set than src when one is available.
func (l *Layout) rebuildTarget(c, src, e int64) (int64, bool) {
	srcFS := int64(0)
	if m, ok := l.Member(src); ok {
		srcFS = m.FaultSet
	}
	best, bestOther := int64(0), int64(0)
	var bestScore, bestOtherScore float64
	for _, m := range l.Members {
		if m.SDSID == src || l.excludedAt(m.SDSID, e) || m.Joined > e {
			continue
		}
		s := score(l.VolumeID, c, m)
		if best == 0 || s > bestScore || (s == bestScore && m.SDSID < best) {
			best, bestScore = m.SDSID, s
		}
		if (srcFS == 0 || m.FaultSet != srcFS) && (bestOther == 0 || s > bestOtherScore || (s == bestOtherScore && m.SDSID < bestOther)) {
			bestOther, bestOtherScore = m.SDSID, s
		}
	}
	if bestOther != 0 {
		return bestOther, true
	}
	return best, best != 0
}

// ActiveRebuild returns the rebuild whose batch is being copied (Done < Ordered), if any.
func (l *Layout) ActiveRebuild() (Rebuild, bool) {
	for _, rb := range l.Rebuilds {
		if rb.Done < rb.Ordered {
			return rb, true
		}
	}
	return Rebuild{}, false
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

// IsExcluded reports whether SDS id is out of the layout now (excluded and not readmitted).
func (l *Layout) IsExcluded(id int64) bool {
	for _, x := range l.Excluded {
		if x.SDSID == id && x.Readmitted == 0 {
			return true
		}
	}
	return false
}

// Degraded reports whether chunk c has fewer than Copies complete replicas (a pending target,
// always the last of ReplicaSet, is not complete).
func (l *Layout) Degraded(c int64) bool {
	ids, pending := l.ReplicaSet(c)
	full := len(ids)
	if pending {
		full--
	}
	return full < Copies
}

// placed is where chunk c was put: its override, or weighted rendezvous hashing: each member
// scores -weight/ln(u) with u a hash of (volume, chunk, sds) in (0,1); the best is the primary,
// the best of another fault set (if the pool has fault sets) or another SDS is the secondary.
func (l *Layout) placed(c int64) []int64 {
	if r, ok := l.Overrides[c]; ok {
		return r
	}
	// Every IO computes this (SDC and SDS): no sort.Slice or hash.Hash allocations. An
	// insertion sort of the (few) members gives the same order as any sort: the order is total.
	var arr [16]scored
	s := arr[:0]
	for _, m := range l.Members {
		if m.Joined == 0 {
			x := scored{m.SDSID, m.FaultSet, score(l.VolumeID, c, m)}
			i := len(s)
			s = append(s, x)
			for ; i > 0 && x.before(s[i-1]); i-- {
				s[i] = s[i-1]
			}
			s[i] = x
		}
	}
	if len(s) == 0 {
		return nil
	}
	out := make([]int64, 1, Copies)
	out[0] = s[0].id
	for _, x := range s[1:] {
		if x.faultSet != 0 && x.faultSet == s[0].faultSet {
			continue
		}
		out = append(out, x.id)
		break
	}
	if len(out) < Copies && len(s) > 1 { // every other SDS shares the fault set: still two SDSs
		out = append(out, s[1].id)
	}
	return out
}

// scored is a member's rendezvous score for one chunk.
type scored struct {
	id, faultSet int64
	score        float64
}

// before orders by score, highest first, then by SDS id.
func (a scored) before(b scored) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.id < b.id
}

func score(volume, chunk int64, m Member) float64 {
	// FNV-1a (hash/fnv's New64a) over the big-endian (volume, chunk, sds), inline.
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], uint64(volume))
	binary.BigEndian.PutUint64(b[8:], uint64(chunk))
	binary.BigEndian.PutUint64(b[16:], uint64(m.SDSID))
	x := uint64(14695981039346656037)
	for _, c := range b {
		x ^= uint64(c)
		x *= 1099511628211
	}
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
