package sds

import (
	"sync"
	"sync/atomic"
	"time"

	"pflex/sds/chunkstore"
)

// Retried writes (DESIGN.md, "Retried writes"): an SDC sends every attempt of a write with the
// same tag. The primary applies a write locally while it forwards it, so a write that is
// refused or abandoned after the local apply may still be sent again, possibly after newer
// writes to the same blocks were acknowledged; applying it a second time would bring old data
// back. writeIDs remembers which tagged writes this SDS's copies already hold.
const (
	// DefaultWriteIDRetention is how long an applied write is remembered: longer than an SDC
	// keeps retrying one (its io_timeout, 30 s by default).
	DefaultWriteIDRetention = 60 * time.Second
	// DefaultWriteIDMax bounds the memory (about 90 bytes a write): at a higher write rate the
	// oldest are forgotten early, which Stats reports as write_ids_evicted.
	DefaultWriteIDMax = 1 << 18
)

// writeID names a write: the SDC's tags are unique per SDC.
type writeID struct {
	sdc int64
	tag uint64
}

type writeRec struct {
	key     chunkstore.Key
	span    span
	seq     uint64 // when it was applied, in writeIDs.seq order
	counted bool   // in the token ledger already (firstCount)
}

// span is where in its chunk a write lies. Every attempt of a write covers the same span; a
// tag seen again with another span is a client reusing tags, refused rather than taken as a
// retry (which would acknowledge data that was never written).
type span struct{ off, n int64 }

type queued struct {
	id  writeID
	seq uint64
	at  time.Time
}

// writeIDs is the table of recently applied tagged writes. A record only vouches for the copy
// it was applied to: when a chunk's copy is replaced (dropped as superseded, or overwritten by
// a rebuild copy) its records stop counting, and a retry is applied again.
type writeIDs struct {
	retention time.Duration
	max       int
	now       func() time.Time
	evicted   atomic.Int64 // forgotten before retention, for the cap

	mu      sync.Mutex
	seq     uint64
	recs    map[writeID]writeRec
	queue   []queued // in seq order; queue[head:] is live
	head    int
	changed map[chunkstore.Key]uint64 // seq of the copy's last replacement
}

func newWriteIDs(retention time.Duration, max int, now func() time.Time) *writeIDs {
	return &writeIDs{retention: retention, max: max, now: now,
		recs: map[writeID]writeRec{}, changed: map[chunkstore.Key]uint64{}}
}

// applied reports whether this SDS's current copy of k holds the write (sdc, tag), and whether
// that tag was recorded there for a write of another span (reused: not a retry).
func (w *writeIDs) applied(sdc int64, tag uint64, k chunkstore.Key, s span) (held, reused bool) {
	if tag == 0 {
		return false, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.current(writeID{sdc, tag}, k)
	if !ok {
		return false, false
	}
	return r.span == s, r.span != s
}

// current returns id's record if it vouches for k's current copy: made for k, and after the
// copy's last replacement. Called with mu held.
func (w *writeIDs) current(id writeID, k chunkstore.Key) (writeRec, bool) {
	r, ok := w.recs[id]
	return r, ok && r.key == k && r.seq > w.changed[k]
}

// add records that the copy of k now holds the write (sdc, tag). Called under k's chunk lock
// (or, on a replica, while the primary holds its own), so records of a chunk follow its writes.
func (w *writeIDs) add(sdc int64, tag uint64, k chunkstore.Key, s span) {
	if tag == 0 {
		return
	}
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	id := writeID{sdc, tag}
	r, ok := w.current(id, k)
	w.recs[id] = writeRec{key: k, span: s, seq: w.seq, counted: ok && r.span == s && r.counted}
	w.queue = append(w.queue, queued{id: id, seq: w.seq, at: now})
	w.expire(now)
}

// firstCount reports whether the write (sdc, tag) of span s in k is to be counted in the token
// ledger now, and notes that it is: the first time for a write this copy holds, and always for
// a write it holds no record of (untagged, or forgotten). An SDC retries a write with its tag,
// and a retry of a write this copy has is a replay, not more IO: counted again, a write whose
// first attempt was refused after it was applied (the lease ran out meanwhile) would be counted
// twice by the copy that had counted the first forward.
func (w *writeIDs) firstCount(sdc int64, tag uint64, k chunkstore.Key, s span) bool {
	if tag == 0 {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	id := writeID{sdc, tag}
	r, ok := w.current(id, k)
	if !ok || r.span != s {
		return true
	}
	if r.counted {
		return false
	}
	r.counted = true
	w.recs[id] = r
	return true
}

// replaced records that the copy of k was replaced (or freed): no earlier record counts for it.
func (w *writeIDs) replaced(k chunkstore.Key) {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	w.changed[k] = w.seq
	if len(w.changed) > 1024 && len(w.changed)%1024 == 0 {
		w.pruneChanged(now)
	}
}

// expire forgets records past retention or over the cap. Called with mu held.
func (w *writeIDs) expire(now time.Time) {
	for w.head < len(w.queue) {
		q := w.queue[w.head]
		old := now.Sub(q.at) > w.retention
		if !old && len(w.queue)-w.head <= w.max {
			break
		}
		if !old {
			w.evicted.Add(1)
		}
		if r, ok := w.recs[q.id]; ok && r.seq == q.seq {
			delete(w.recs, q.id)
		}
		w.queue[w.head] = queued{}
		w.head++
	}
	if w.head > 1024 && w.head*2 > len(w.queue) {
		w.queue = append(w.queue[:0], w.queue[w.head:]...)
		w.head = 0
	}
}

// pruneChanged forgets replacements older than any live record: every record made before one
// of them has expired, so it no longer decides anything. Called with mu held.
func (w *writeIDs) pruneChanged(now time.Time) {
	w.expire(now)
	oldest := w.seq + 1
	if w.head < len(w.queue) {
		oldest = w.queue[w.head].seq
	}
	for k, seq := range w.changed {
		if seq < oldest {
			delete(w.changed, k)
		}
	}
}

// size is the number of remembered writes.
func (w *writeIDs) size() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.recs)
}
