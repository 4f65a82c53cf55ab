package shm

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Read grants (sdc/DESIGN.md and sds/DESIGN.md "Local reads"): an SDS lets an SDC on its host
// read a chunk from the SDS's device itself. The grant's state lives in an entry of the SDC's
// region, which the SDS changes and the SDC checks around every read, like a sequence lock:
// the entry names the grant's generation, is odd while the SDS writes the chunk, and carries
// the monotonic time the grant expires at.
const (
	// GrantEntrySize is the size of one entry: state (generation << 32 | write counter) and
	// expiry (CLOCK_MONOTONIC nanoseconds), both 8-byte words.
	GrantEntrySize = 16
	// GrantEntries is the number of entries in a region's grant table (1 MiB after the header).
	GrantEntries   = 64 << 10
	grantTableSize = GrantEntries * GrantEntrySize
	slotsStart     = headerSize + grantTableSize
)

// GrantEntry is one grant's shared state.
type GrantEntry struct {
	state   atomic.Uint64
	expires atomic.Int64
}

// Grant (SDS) starts grant gen (never 0), valid until expires (Now() time).
func (e *GrantEntry) Grant(gen uint32, expires int64) {
	e.expires.Store(expires)
	e.state.Store(uint64(gen) << 32)
}

// Extend (SDS) sets the grant's expiry (it may also come earlier).
func (e *GrantEntry) Extend(expires int64) { e.expires.Store(expires) }

// Revoke (SDS) ends the grant at once: generation 0 is never granted.
func (e *GrantEntry) Revoke() { e.state.Store(0) }

// Begin and End (SDS) bracket a write of the chunk: the state is odd in between, and differs
// afterwards from what it was before.
func (e *GrantEntry) Begin() { e.state.Add(1) }
func (e *GrantEntry) End()   { e.state.Add(1) }

// Load (SDC) reads the state, before and after reading the chunk.
func (e *GrantEntry) Load() uint64 { return e.state.Load() }

// Usable (SDC) reports whether state s, loaded before a read, lets the read start under grant
// gen at time now. The read's data is good only if Load still returns s after it.
func (e *GrantEntry) Usable(s uint64, gen uint32, now int64) bool {
	return gen != 0 && s>>32 == uint64(gen) && s&1 == 0 && now < e.expires.Load()
}

// Expires (SDC) is the grant's expiry (Now() time).
func (e *GrantEntry) Expires() int64 { return e.expires.Load() }

// Now is CLOCK_MONOTONIC in nanoseconds, the clock of grant expiries: the same for every
// process on the host (unlike time.Time's monotonic reading, which counts from process start)
// and never stepped.
func Now() int64 { return nanotime() }

//go:linkname nanotime runtime.nanotime
func nanotime() int64

// grantTable hands out the owner's grant entries.
type grantTable struct {
	mu   sync.Mutex
	free []int // entry indices
}

// GrantEntry returns entry i of the owner's table and its offset in the region, for a peer.
func (r *Region) GrantEntry(i int) (*GrantEntry, uint64) {
	off := headerSize + i*GrantEntrySize
	return entryAt(r.mem, off), uint64(off)
}

// AllocGrant takes a free entry index; ok is false when all are in use.
func (r *Region) AllocGrant() (i int, ok bool) {
	g := &r.grants
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.free) == 0 {
		return 0, false
	}
	i = g.free[len(g.free)-1]
	g.free = g.free[:len(g.free)-1]
	return i, true
}

// FreeGrant returns entry i; the peer that granted on it may still change it until it learns
// that the grant is gone, which harms no one: only the grant the owner asked for last on an
// entry is trusted.
func (r *Region) FreeGrant(i int) {
	r.grants.mu.Lock()
	r.grants.free = append(r.grants.free, i)
	r.grants.mu.Unlock()
}

// GrantEntry returns the entry at offset off of the owner's grant table (a peer's view).
func (m *Mapping) GrantEntry(off uint64) (*GrantEntry, error) {
	if off < headerSize || off >= slotsStart || (off-headerSize)%GrantEntrySize != 0 {
		return nil, fmt.Errorf("%w: %d is not a grant entry", ErrBadDesc, off)
	}
	return entryAt(m.mem, int(off)), nil
}

func entryAt(mem []byte, off int) *GrantEntry {
	return (*GrantEntry)(unsafe.Pointer(&mem[off]))
}
