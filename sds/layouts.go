package sds

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"pflex/internal/layout"
)

// LayoutSource fetches a volume's current layout from the MDM leader.
type LayoutSource func(ctx context.Context, volumeID int64) (layout.Layout, error)

// minRefetch bounds how often a volume's layout is fetched again on behalf of requests that
// claim a newer epoch than the MDM has (a confused or hostile client cannot make the SDS hammer
// the leader).
const minRefetch = 50 * time.Millisecond

// layoutCache keeps the layout of each volume this SDS has served. A layout is fetched on the
// first request for its volume and again when a request carries a newer chunk epoch than the
// cached layout (or an offset beyond it: the volume may have grown). Safe for concurrent use;
// lookups take no lock once the volume is known.
type layoutCache struct {
	fetch LayoutSource
	// learned is called with every layout newly installed (thick allocation).
	learned func(*layout.Layout)

	mu   sync.Mutex
	vols map[int64]*volLayout
}

type volLayout struct {
	cur atomic.Pointer[layout.Layout]
	// minEpoch is the epoch the MDM last reported for the volume (IOState.LayoutEpochs): a
	// cached layout below it is stale and is fetched again before any use.
	minEpoch  atomic.Int64
	fetchMu   sync.Mutex // one fetch at a time
	uselessAt time.Time  // last refresh that brought nothing newer; guarded by fetchMu
}

func newLayoutCache(fetch LayoutSource, learned func(*layout.Layout)) *layoutCache {
	return &layoutCache{fetch: fetch, learned: learned, vols: map[int64]*volLayout{}}
}

func (c *layoutCache) entry(volumeID int64) *volLayout {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.vols[volumeID]
	if !ok {
		v = &volLayout{}
		c.vols[volumeID] = v
	}
	return v
}

// get returns the cached layout of volumeID, fetching it if there is none.
func (c *layoutCache) get(ctx context.Context, volumeID int64) (*layout.Layout, error) {
	v := c.entry(volumeID)
	l := v.cur.Load()
	if l != nil && l.Epoch >= v.minEpoch.Load() {
		return l, nil
	}
	return c.refresh(ctx, volumeID, l)
}

// raise records that volumeID's layout is at epoch (or later) at the MDM: a cached layout
// older than that is not used again. Only volumes already known are recorded (the others are
// fetched on first use anyway).
func (c *layoutCache) raise(volumeID, epoch int64) {
	c.mu.Lock()
	v := c.vols[volumeID]
	c.mu.Unlock()
	if v == nil {
		return
	}
	for {
		cur := v.minEpoch.Load()
		if epoch <= cur || v.minEpoch.CompareAndSwap(cur, epoch) {
			return
		}
	}
}

// refresh fetches volumeID's layout again, unless another request already replaced have (the
// layout the caller found wanting) or a refresh within the last minRefetch brought nothing
// newer. A fetched layout older than the cached one is ignored.
func (c *layoutCache) refresh(ctx context.Context, volumeID int64, have *layout.Layout) (*layout.Layout, error) {
	v := c.entry(volumeID)
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	cur := v.cur.Load()
	stale := cur != nil && cur.Epoch < v.minEpoch.Load()
	if cur != nil && !stale && (cur != have || time.Since(v.uselessAt) < minRefetch) {
		return cur, nil
	}
	l, err := c.fetch(ctx, volumeID)
	if err != nil {
		if cur != nil && !stale {
			return cur, fmt.Errorf("layout of volume %d: %w", volumeID, err)
		}
		return nil, fmt.Errorf("layout of volume %d: %w", volumeID, err)
	}
	if l.VolumeID != volumeID {
		return cur, fmt.Errorf("layout of volume %d: the MDM answered with volume %d", volumeID, l.VolumeID)
	}
	if err := l.Validate(); err != nil {
		return cur, fmt.Errorf("layout of volume %d: %w", volumeID, err)
	}
	if cur != nil && l.Epoch <= cur.Epoch && l.SizeBytes == cur.SizeBytes {
		v.uselessAt = time.Now()
		if l.Epoch < cur.Epoch {
			return cur, nil
		}
	}
	v.cur.Store(&l)
	if c.learned != nil {
		c.learned(&l)
	}
	return &l, nil
}

// count is how many volumes have a cached layout.
func (c *layoutCache) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.vols {
		if v.cur.Load() != nil {
			n++
		}
	}
	return n
}

// snapshot returns the cached layout of volumeID, or nil.
func (c *layoutCache) snapshot(volumeID int64) *layout.Layout {
	c.mu.Lock()
	v := c.vols[volumeID]
	c.mu.Unlock()
	if v == nil {
		return nil
	}
	return v.cur.Load()
}
