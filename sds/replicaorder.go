package sds

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"pflex/internal/wire"
	"pflex/sds/chunkstore"
)

// Replica order (DESIGN.md "Replica order"). A primary holds a chunk's lock across each forward,
// so the chunk's replica writes leave it one after the other; but a forward it gave up on (it
// timed out, or the connection failed) may still be on its way, or waiting in the secondary,
// while the next one travels on a new connection and arrives first. Applied late, the old write
// would put back bytes the newer one replaced, and the two copies would differ with both
// acknowledged. A primary's request ids increase across all its peer connections (FlagOrdered),
// so a replica remembers, per chunk and primary, the newest write it applied from it and refuses
// an older one. It is checked and applied under the chunk's copy lock.
const (
	// DefaultOrderRetention is how long a chunk's newest replica write is remembered: far longer
	// than a primary waits for one (DefaultReplicaTimeout).
	DefaultOrderRetention = 60 * time.Second
	// DefaultOrderMax bounds the records (a chunk and a primary, about 150 bytes each); beyond
	// it the oldest are forgotten early.
	DefaultOrderMax = 1 << 18
)

// peerWrite is who sent a replica write: the sending SDS, its run and the request's id. A zero
// sender is a primary whose ids are not ordered (an older version): nothing is checked.
type peerWrite struct {
	from wire.PeerHello
	seq  uint64
}

// orderKey is a chunk and a primary that sent it replica writes: one in steady state, two while
// the layout hands the chunk from one primary to another.
type orderKey struct {
	chunk chunkstore.Key
	sds   int64
}

// orderRec is the newest replica write a chunk's copy took from a primary, and when.
type orderRec struct {
	from wire.PeerHello
	seq  uint64
	at   time.Time
}

// orderQueued is a record in the expiry queue, at the time of the write it was queued for. A
// record is queued once: a newer write only updates it, and expire queues it again at that
// write's time, so the queue holds chunks, not writes (a hot chunk costs one entry).
type orderQueued struct {
	key orderKey
	at  time.Time
}

// peerRun is what is known of a sending SDS: its current run (an earlier run's writes are
// stale), and the newest of its writes forgotten from the table (its floor): a write not newer
// than that is older than every write of the run still remembered, and is refused.
type peerRun struct {
	run   uint64
	floor uint64
}

type replicaOrder struct {
	retention time.Duration
	max       int
	now       func() time.Time
	refused   atomic.Int64 // replica writes refused as out of order

	mu    sync.Mutex
	runs  map[int64]peerRun // by sending SDS id
	recs  map[orderKey]orderRec
	queue []orderQueued // oldest first; queue[head:] is live
	head  int
}

func newReplicaOrder(retention time.Duration, max int, now func() time.Time) *replicaOrder {
	return &replicaOrder{retention: retention, max: max, now: now, runs: map[int64]peerRun{}, recs: map[orderKey]orderRec{}}
}

// hello records that SDS h.SDSID now runs as h.Run: writes still arriving from an earlier run
// are refused from now on.
func (o *replicaOrder) hello(h wire.PeerHello) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r, ok := o.runs[h.SDSID]; !ok || r.run != h.Run {
		o.runs[h.SDSID] = peerRun{run: h.Run}
	}
}

// admit decides whether w may be applied to k's copy now, and if so records it as the newest.
// Called under k's copy lock, so the write is applied before any later one is admitted.
func (o *replicaOrder) admit(k chunkstore.Key, w peerWrite) error {
	if w.from.SDSID == 0 {
		return nil
	}
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.expire(now)
	key := orderKey{chunk: k, sds: w.from.SDSID}
	err := o.check(key, w)
	if err != nil {
		o.refused.Add(1)
		return err
	}
	if _, ok := o.recs[key]; !ok {
		o.queue = append(o.queue, orderQueued{key: key, at: now})
	}
	o.recs[key] = orderRec{from: w.from, seq: w.seq, at: now}
	return nil
}

// check is admit's decision. Called with mu held.
func (o *replicaOrder) check(k orderKey, w peerWrite) error {
	r, ok := o.runs[w.from.SDSID]
	if !ok || r.run != w.from.Run {
		return fmt.Errorf("replica write from an earlier run of SDS %d", w.from.SDSID)
	}
	if w.seq <= r.floor {
		return fmt.Errorf("replica write %d from SDS %d is older than every write remembered from it", w.seq, w.from.SDSID)
	}
	if rec, ok := o.recs[k]; ok && rec.from.Run == w.from.Run && w.seq <= rec.seq {
		return fmt.Errorf("replica write %d from SDS %d arrived after its write %d of the same chunk", w.seq, w.from.SDSID, rec.seq)
	}
	return nil
}

// expire forgets records past retention, and the oldest while there is no room for one more
// under the cap, raising their sender's floor. Called with mu held.
func (o *replicaOrder) expire(now time.Time) {
	for o.head < len(o.queue) {
		q := o.queue[o.head]
		if now.Sub(q.at) <= o.retention && len(o.queue)-o.head < o.max {
			break
		}
		o.queue[o.head] = orderQueued{}
		o.head++
		rec := o.recs[q.key]
		if rec.at.After(q.at) { // written since it was queued: queued again, at that write
			o.queue = append(o.queue, orderQueued{key: q.key, at: rec.at})
			continue
		}
		delete(o.recs, q.key)
		if r := o.runs[rec.from.SDSID]; r.run == rec.from.Run && rec.seq > r.floor {
			r.floor = rec.seq
			o.runs[rec.from.SDSID] = r
		}
	}
	if o.head > 1024 && o.head*2 > len(o.queue) {
		o.queue = append(o.queue[:0], o.queue[o.head:]...)
		o.head = 0
	}
}

// size is the number of records (chunk and primary) remembered.
func (o *replicaOrder) size() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.recs)
}
