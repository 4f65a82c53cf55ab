package sds

import (
	"sync"
	"time"
)

const (
	// reportIDRetention is how long a counted read report is remembered: longer than an SDC
	// goes on sending a report it got no answer to (sdc reportGiveUp, 5 minutes).
	reportIDRetention = 10 * time.Minute
	// reportIDMax bounds the memory (about 50 bytes a report). An SDC reports each volume at
	// most twice a second, so this is the reports of over a hundred SDC-volume pairs for the
	// whole retention.
	reportIDMax = 1 << 17
)

// reportIDs is the read reports (sds/DESIGN.md "Local reads") this SDS counted lately, by SDC
// and report id: an SDC that got no answer sends the report again, over a new connection if
// the old one broke, and it must not be counted twice.
type reportIDs struct {
	mu    sync.Mutex
	seen  map[reportID]struct{}
	queue []seenReport // in the order counted; queue[head:] is live
	head  int
}

type reportID struct {
	sdc int64
	id  uint64
}

type seenReport struct {
	id reportID
	at time.Time
}

// first reports whether report id of sdc is to be counted now, and notes that it is. A report
// without an id (0) is always counted.
func (r *reportIDs) first(sdc int64, id uint64, now time.Time) bool {
	if id == 0 {
		return true
	}
	k := reportID{sdc, id}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[reportID]struct{}{}
	}
	for r.head < len(r.queue) && (now.Sub(r.queue[r.head].at) > reportIDRetention || len(r.seen) >= reportIDMax) {
		delete(r.seen, r.queue[r.head].id)
		r.head++
	}
	if r.head > len(r.queue)/2 { // reuse the queue's front
		r.queue = append(r.queue[:0], r.queue[r.head:]...)
		r.head = 0
	}
	if _, dup := r.seen[k]; dup {
		return false
	}
	r.seen[k] = struct{}{}
	r.queue = append(r.queue, seenReport{k, now})
	return true
}
