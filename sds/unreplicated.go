package sds

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"pflex/internal/layout"
	"pflex/internal/token"
	"pflex/internal/wire"
	"pflex/sds/chunkstore"
)

// Unreplicated writes (DESIGN.md, "Unreplicated writes"): the primary applies a write locally
// while it forwards it, so when a forward fails this SDS's copy holds bytes another replica
// lacks. Until they are on every replica of the layout (or the layout leaves this SDS the only
// one) the chunk is not read here: a read could return a write that is then lost with this SDS.

// maxUnreplicatedRanges bounds the ranges kept per chunk; beyond it the whole chunk is sent.
const maxUnreplicatedRanges = 16

type chunkRange struct{ off, n int64 }

type unreplicatedChunk struct {
	ranges    []chunkRange // within the chunk; nil with whole
	whole     bool
	tok       token.Token // the last writer's token, to send the bytes under
	resolving bool        // a resolveLoop runs for it
}

// unreplicated is the set of chunks holding writes not on all their replicas. Entries change
// under the chunk's write lock; count lets the read path skip the map when it is empty.
type unreplicated struct {
	count atomic.Int64
	mu    sync.Mutex
	m     map[chunkstore.Key]*unreplicatedChunk
}

func (u *unreplicated) add(k chunkstore.Key, off, n int64, tok token.Token) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[chunkstore.Key]*unreplicatedChunk{}
	}
	c := u.m[k]
	if c == nil {
		c = &unreplicatedChunk{}
		u.m[k] = c
		u.count.Add(1)
	}
	c.tok = tok
	if c.whole {
		return
	}
	if len(c.ranges) == maxUnreplicatedRanges {
		c.ranges, c.whole = nil, true
		return
	}
	c.ranges = append(c.ranges, chunkRange{off, n})
}

func (u *unreplicated) has(k chunkstore.Key) bool {
	if u.count.Load() == 0 {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.m[k] != nil
}

// get returns a copy of k's entry.
func (u *unreplicated) get(k chunkstore.Key) (unreplicatedChunk, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	c := u.m[k]
	if c == nil {
		return unreplicatedChunk{}, false
	}
	out := *c
	out.ranges = append([]chunkRange(nil), c.ranges...)
	return out, true
}

func (u *unreplicated) clear(k chunkstore.Key) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m[k] != nil {
		delete(u.m, k)
		u.count.Add(-1)
	}
}

// startResolving reports whether the caller should start k's resolveLoop (none runs yet).
func (u *unreplicated) startResolving(k chunkstore.Key) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	c := u.m[k]
	if c == nil || c.resolving {
		return false
	}
	c.resolving = true
	return true
}

func (u *unreplicated) stopResolving(k chunkstore.Key) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if c := u.m[k]; c != nil {
		c.resolving = false
	}
}

// settle sends t's chunk's unreplicated bytes to secs (the other replicas of t's layout) under
// tok; called under the chunk's write lock. It clears the entry when all took them, and
// otherwise answers as a failed forward does.
func (d *DataServer) settle(ctx context.Context, t target, secs []layout.Member, tok token.Token) (wire.Response, bool) {
	c, ok := d.unrepl.get(t.key)
	if !ok {
		return wire.Response{}, true
	}
	ranges := c.ranges
	if c.whole {
		ranges = []chunkRange{{0, t.l.ChunkSize}}
	}
	base := t.key.Chunk * t.l.ChunkSize
	for _, r := range ranges {
		buf := make([]byte, r.n)
		if err := d.cfg.Store.ReadAt(t.key, t.l.ChunkSize, buf, r.off); err != nil {
			d.log.Error("reading unreplicated bytes failed", "volume", t.key.VolumeID, "chunk", t.key.Chunk, "error", err)
			return statusResp(storeStatus(err), t.epoch, err.Error()), false
		}
		fwd := wire.Request{Op: wire.OpReplWrite, Flags: wire.FlagResync, VolumeID: t.key.VolumeID, Offset: base + r.off, Epoch: t.epoch, Data: buf}
		if resp, ok := d.forwardAll(ctx, t, secs, tok, fwd); !ok {
			return resp, false
		}
	}
	d.unrepl.clear(t.key)
	return wire.Response{}, true
}

// forwardAll sends fwd to every one of secs in parallel; on a failure it answers as
// secondaryFailed does, and marks the chunk for a maintenance re-sync.
func (d *DataServer) forwardAll(ctx context.Context, t target, secs []layout.Member, tok token.Token, fwd wire.Request) (wire.Response, bool) {
	resps := make([]wire.Response, len(secs))
	errs := make([]error, len(secs))
	var wg sync.WaitGroup
	for i, sec := range secs {
		wg.Go(func() { resps[i], errs[i] = d.replicas.forward(ctx, sec.Addr, tok, fwd) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			d.dirty.mark(t.key)
			return d.secondaryFailed(t, secs[i], resps[i], err), false
		}
	}
	return wire.Response{}, true
}

// readUnreplicated answers a read of a chunk with unreplicated writes: served when this SDS is
// the chunk's only replica now (nothing left to send), else refused with Retry while a
// resolveLoop sends the bytes.
func (d *DataServer) readUnreplicated(t target) (wire.Response, bool) {
	if len(t.replicas) == 1 {
		mu := d.lock(t.key)
		mu.Lock()
		d.unrepl.clear(t.key)
		mu.Unlock()
		return wire.Response{}, true
	}
	if d.unrepl.startResolving(t.key) {
		d.wg.Go(func() { d.resolveLoop(t.key) })
	}
	return statusResp(wire.StatusRetry, t.epoch, fmt.Sprintf("chunk %d holds a write not yet on its other replicas", t.key.Chunk)), false
}

// resolveLoop sends k's unreplicated bytes to its replicas until they take them, the layout
// no longer needs them, or the server closes.
func (d *DataServer) resolveLoop(k chunkstore.Key) {
	defer d.unrepl.stopResolving(k)
	backoff := 10 * time.Millisecond
	var seen *layout.Layout
	for d.ctx.Err() == nil {
		l, err := d.layouts.get(d.ctx, k.VolumeID)
		if err == nil && l == seen {
			l, err = d.layouts.refresh(d.ctx, k.VolumeID, l) // the last try failed: maybe it moved
		}
		if err == nil && d.resolveOnce(l, k) {
			return
		}
		seen = l
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// resolveOnce settles k against l, under the chunk's write lock; true when nothing is left.
func (d *DataServer) resolveOnce(l *layout.Layout, k chunkstore.Key) bool {
	mu := d.lock(k)
	mu.Lock()
	defer mu.Unlock()
	c, ok := d.unrepl.get(k)
	if !ok {
		return true
	}
	if !d.leaseValid() {
		return false
	}
	reps := l.Replicas(k.Chunk)
	if len(reps) < 2 || reps[0] != d.cfg.SelfID() {
		// This SDS is the only copy (nothing to send), or no longer the primary: it serves no
		// read of the chunk, and a copy it no longer holds is dropped as superseded.
		d.unrepl.clear(k)
		return true
	}
	secs := make([]layout.Member, 0, len(reps)-1)
	for _, id := range reps[1:] {
		m, ok := l.Member(id)
		if !ok || m.Addr == "" {
			return false
		}
		secs = append(secs, m)
	}
	t := target{l: l, key: k, epoch: l.ChunkEpoch(k.Chunk), replicas: reps}
	_, ok = d.settle(d.ctx, t, secs, c.tok)
	return ok
}
