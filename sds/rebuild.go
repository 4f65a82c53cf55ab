package sds

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/internal/token"
	"pflex/internal/wire"
	"pflex/sds/chunkstore"
)

// Rebuild executor (DESIGN.md §8, sds/DESIGN.md "Rebuild"). The MDM leader orders a batch of
// a volume's degraded chunks by committing it into the layout: each chunk of the batch whose
// only full copy is here gets a pending target, which from then on takes every write of the
// chunk (writePrimary forwards to it like to any secondary). This SDS then copies each such
// chunk to its target under the chunk's write lock, so no write can slip between the copy and
// the writes that follow it; flushes the targets; and reports the batch done to the leader,
// which commits it. Copies are idempotent: a restarted SDS, a new leader or a repeated order
// just copies again.

// Rebuild defaults.
const (
	DefaultRebuildParallel = 4
	rebuildScanInterval    = 500 * time.Millisecond
	rebuildReportInterval  = time.Second
	rebuildTokenTTL        = 10 * time.Minute
	// rebuildPiece bounds one CHUNK_WRITE: chunks may be larger than a frame.
	rebuildPiece = 1 << 20
)

var errBatchMoved = errors.New("sds: the layout moved during the rebuild batch")

// RebuildPoster sends a progress report to the MDM leader.
type RebuildPoster func(ctx context.Context, r api.RebuildReport) error

// TokenSigner signs a token for the rebuild's own traffic to a target SDS (SDC id 0): SDSs hold
// the cluster's signing keys, and the target checks it like any token.
type TokenSigner func(volumeID int64, ttl time.Duration) (token.Token, error)

// batchKey names one ordered batch of one volume's rebuild.
type batchKey struct{ volume, epoch, ordered int64 }

// rebuildState is the executor's memory: batches finished here (reported until the layout
// moves on) and the counters /status shows.
type rebuildState struct {
	mu       sync.Mutex
	finished map[batchKey]api.RebuildReport
	lastSent map[batchKey]time.Time

	chunksOut, bytesOut, chunksIn, absentIn, batches atomic.Int64
}

// RebuildStats is what /status reports about rebuild traffic.
type RebuildStats struct {
	ChunksSent     int64 `json:"chunks_sent"`     // chunks copied to targets (with data or as absent)
	BytesSent      int64 `json:"bytes_sent"`      // data bytes copied to targets
	ChunksReceived int64 `json:"chunks_received"` // CHUNK_WRITE pieces taken as a target
	AbsentReceived int64 `json:"absent_received"` // chunks dropped as a target: the source held none
	Batches        int64 `json:"batches"`         // batches finished as a source
}

func (s *rebuildState) stats() RebuildStats {
	return RebuildStats{ChunksSent: s.chunksOut.Load(), BytesSent: s.bytesOut.Load(), ChunksReceived: s.chunksIn.Load(),
		AbsentReceived: s.absentIn.Load(), Batches: s.batches.Load()}
}

// rebuildScan looks for batches this SDS is a source of (every rebuildScanInterval).
func (d *DataServer) rebuildScan() {
	if d.cfg.SelfID() == 0 || !d.leaseValid() {
		return
	}
	epochs := d.epochs.Load()
	if epochs == nil {
		return
	}
	for _, vol := range slices.Sorted(maps.Keys(*epochs)) {
		if d.ctx.Err() != nil {
			return
		}
		if err := d.rebuildVolume(vol); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Warn("rebuild batch not finished; will try again", "volume", vol, "error", err)
		}
	}
}

// sourceChunks lists the chunks of l's active batch whose full copy is here, with targets.
func sourceChunks(l *layout.Layout, self int64) (rb layout.Rebuild, chunks []int64, targets []int64) {
	rb, ok := l.ActiveRebuild()
	if !ok {
		return rb, nil, nil
	}
	for c := rb.Done; c < rb.Ordered && c < l.Chunks(); c++ {
		ids, pending := l.ReplicaSet(c)
		if pending && ids[0] == self {
			chunks = append(chunks, c)
			targets = append(targets, ids[len(ids)-1])
		}
	}
	return rb, chunks, targets
}

// rebuildVolume copies this SDS's share of vol's active batch (or repeats the report of a
// batch it already finished).
func (d *DataServer) rebuildVolume(vol int64) error {
	ctx, cancel := context.WithTimeout(d.ctx, layoutFetchTimeout)
	l, err := d.layouts.get(ctx, vol)
	cancel()
	if err != nil {
		return err
	}
	if _, ok := l.ActiveRebuild(); !ok {
		d.forgetBatches(vol)
		return nil
	}
	self := d.cfg.SelfID()
	rb, chunks, targets := sourceChunks(l, self)
	if len(chunks) == 0 {
		return nil
	}
	key := batchKey{vol, rb.Epoch, rb.Ordered}
	d.rebuild.mu.Lock()
	rep, finished := d.rebuild.finished[key]
	d.rebuild.mu.Unlock()
	if finished {
		d.report(rep, false)
		return nil
	}
	rep = api.RebuildReport{SDSID: self, VolumeID: vol, Epoch: rb.Epoch, Ordered: rb.Ordered, Total: int64(len(chunks))}
	if err := d.copyBatch(l, chunks, targets, &rep); err != nil {
		return err
	}
	rep.Done = true
	d.rebuild.mu.Lock()
	d.rebuild.finished[key] = rep
	d.rebuild.mu.Unlock()
	d.rebuild.batches.Add(1)
	d.log.Info("rebuild batch copied", "volume", vol, "rebuild", rb.Epoch, "batch_end", rb.Ordered,
		"chunks", rep.Chunks, "bytes", rep.Bytes)
	d.report(rep, true)
	return nil
}

// forgetBatches drops what was kept about vol's batches once it has no active one.
func (d *DataServer) forgetBatches(vol int64) {
	d.rebuild.mu.Lock()
	defer d.rebuild.mu.Unlock()
	for k := range d.rebuild.finished {
		if k.volume == vol {
			delete(d.rebuild.finished, k)
			delete(d.rebuild.lastSent, k)
		}
	}
}

// report posts r, at most once per rebuildReportInterval per batch unless now is set.
func (d *DataServer) report(r api.RebuildReport, now bool) {
	if d.cfg.Rebuild == nil {
		return
	}
	key := batchKey{r.VolumeID, r.Epoch, r.Ordered}
	d.rebuild.mu.Lock()
	last := d.rebuild.lastSent[key]
	if !now && time.Since(last) < rebuildReportInterval {
		d.rebuild.mu.Unlock()
		return
	}
	d.rebuild.lastSent[key] = time.Now()
	d.rebuild.mu.Unlock()
	ctx, cancel := context.WithTimeout(d.ctx, ackPostTimeout)
	defer cancel()
	if err := d.cfg.Rebuild(ctx, r); err != nil {
		d.log.Debug("rebuild report not taken", "volume", r.VolumeID, "rebuild", r.Epoch, "error", err)
	}
}

// copyBatch copies chunks to their targets with RebuildParallel workers, throttled, then
// flushes every target. Any change of the layout's epoch ends it: the batch was cut short or
// moved on, and the next scan decides again.
func (d *DataServer) copyBatch(l *layout.Layout, chunks, targets []int64, rep *api.RebuildReport) error {
	ctx, cancel := context.WithCancel(d.ctx)
	defer cancel()
	tok, err := d.cfg.SignRebuild(l.VolumeID, rebuildTokenTTL)
	if err != nil {
		return fmt.Errorf("sign a rebuild token: %w", err)
	}
	delta := d.dirty.deltaOnly(l)
	var (
		next       atomic.Int64
		done, sent atomic.Int64
		firstErr   error
		errOnce    sync.Once
		wg         sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	progress := time.NewTicker(rebuildReportInterval)
	defer progress.Stop()
	workers := max(d.cfg.RebuildParallel, 1)
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(chunks)) {
					return
				}
				n, err := d.copyChunk(ctx, l, chunks[i], targets[i], tok, delta)
				if err != nil {
					fail(fmt.Errorf("chunk %d to SDS %d: %w", chunks[i], targets[i], err))
					return
				}
				done.Add(1)
				sent.Add(n)
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	for waiting := true; waiting; {
		select {
		case <-finished:
			waiting = false
		case <-progress.C:
			r := *rep
			r.Chunks, r.Bytes = done.Load(), sent.Load()
			d.report(r, true)
		}
	}
	rep.Chunks, rep.Bytes = done.Load(), sent.Load()
	if firstErr != nil {
		return firstErr
	}
	for _, id := range uniq(targets) {
		m, ok := l.Member(id)
		if !ok || m.Addr == "" {
			return fmt.Errorf("target SDS %d has no data address", id)
		}
		if _, err := d.replicas.forward(ctx, m.Addr, tok, wire.Request{Op: wire.OpFlush, VolumeID: l.VolumeID}); err != nil {
			return fmt.Errorf("flush target SDS %d: %w", id, err)
		}
	}
	if d.layoutMoved(l) {
		return errBatchMoved
	}
	return nil
}

func uniq(ids []int64) []int64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// layoutMoved reports whether the cached layout of l's volume is no longer l's epoch.
func (d *DataServer) layoutMoved(l *layout.Layout) bool {
	cur := d.layouts.snapshot(l.VolumeID)
	return cur == nil || cur.Epoch != l.Epoch || (d.minEpoch(l.VolumeID) > l.Epoch)
}

// minEpoch is the epoch the MDM last reported for vol (0: unknown).
func (d *DataServer) minEpoch(vol int64) int64 {
	if e := d.epochs.Load(); e != nil {
		return (*e)[vol]
	}
	return 0
}

// copyChunk copies one chunk to its target under the chunk's write lock: its data in pieces,
// or, when this SDS holds no copy (never written, or trimmed), an "absent" marker that makes
// the target drop whatever it holds. It returns the data bytes sent.
func (d *DataServer) copyChunk(ctx context.Context, l *layout.Layout, c, target int64, tok token.Token, delta bool) (int64, error) {
	m, ok := l.Member(target)
	if !ok || m.Addr == "" {
		return 0, fmt.Errorf("target SDS %d has no data address", target)
	}
	k := chunkstore.Key{VolumeID: l.VolumeID, Chunk: c}
	mu := d.lock(k)
	mu.Lock()
	defer mu.Unlock()
	// Under the lock: every write this SDS takes from now on for the chunk goes to the target too,
	// provided it still serves the layout the batch was ordered in.
	if d.layoutMoved(l) {
		return 0, errBatchMoved
	}
	if !d.leaseValid() {
		return 0, errors.New("no lease")
	}
	if delta && !d.dirty.has(k) {
		return 0, nil // not written since the target went into maintenance: its copy is current
	}
	epoch, base := l.ChunkEpoch(c), c*l.ChunkSize
	if !d.cfg.Store.Has(k) {
		req := wire.Request{Op: wire.OpChunkWrite, Flags: wire.FlagChunkAbsent, VolumeID: l.VolumeID, Offset: base, Epoch: epoch}
		if _, err := d.replicas.forward(ctx, m.Addr, tok, req); err != nil {
			return 0, err
		}
		d.rebuild.chunksOut.Add(1)
		d.dirty.clear(k)
		return 0, nil
	}
	piece := min(l.ChunkSize, rebuildPiece)
	buf := make([]byte, piece)
	var sent int64
	for off := int64(0); off < l.ChunkSize; off += piece {
		n := min(piece, l.ChunkSize-off)
		if err := d.cfg.Store.ReadAt(k, l.ChunkSize, buf[:n], off); err != nil {
			return sent, fmt.Errorf("read local copy: %w", err)
		}
		if err := d.throttle.WaitN(ctx, float64(n)); err != nil {
			return sent, err
		}
		req := wire.Request{Op: wire.OpChunkWrite, VolumeID: l.VolumeID, Offset: base + off, Epoch: epoch, Data: buf[:n]}
		if _, err := d.replicas.forward(ctx, m.Addr, tok, req); err != nil {
			return sent, err
		}
		sent += n
	}
	d.rebuild.chunksOut.Add(1)
	d.rebuild.bytesOut.Add(sent)
	d.dirty.clear(k)
	return sent, nil
}

// applyChunkCopy takes a CHUNK_WRITE as a chunk's pending rebuild target. The source holds the
// chunk's lock across the copy, as a primary does across a forwarded write; the copy lock
// orders it as a replica write (inOrder).
func (d *DataServer) applyChunkCopy(req *wire.Request, t target, w peerWrite) wire.Response {
	self := d.cfg.SelfID()
	ids, pending := t.l.ReplicaSet(t.key.Chunk)
	if !pending || ids[len(ids)-1] != self {
		return statusResp(wire.StatusNotPrimary, t.epoch, fmt.Sprintf("SDS %d is not the rebuild target of chunk %d (replicas %v, pending %v)", self, t.key.Chunk, ids, pending))
	}
	mu := d.copyLock(t.key)
	mu.Lock()
	defer mu.Unlock()
	if resp, ok := d.inOrder(t, w); !ok {
		return resp
	}
	// The copy replaces whatever this SDS held: the writes it remembers applying to it no longer
	// count (a retry of one is applied again; the source's copy may not have it).
	d.writeIDs.replaced(t.key)
	d.unrepl.clear(t.key)
	var err error
	switch {
	case req.Flags&wire.FlagChunkAbsent == 0:
		err = d.cfg.Store.WriteAt(t.key, t.l.ChunkSize, t.epoch, req.Data, t.inChunk, false)
		d.rebuild.chunksIn.Add(1)
	case t.l.Thick:
		err = d.cfg.Store.Zero(t.key, t.l.ChunkSize, t.epoch, 0, t.l.ChunkSize, true, false)
		d.rebuild.absentIn.Add(1)
	case d.cfg.Store.Has(t.key):
		err = d.cfg.Store.Drop(t.key)
		d.rebuild.absentIn.Add(1)
	default:
		d.rebuild.absentIn.Add(1)
	}
	if err != nil {
		d.log.Error("rebuild copy failed", "volume", t.key.VolumeID, "chunk", t.key.Chunk, "error", err)
		return statusResp(storeStatus(err), t.epoch, err.Error())
	}
	return wire.Response{Epoch: t.epoch}
}

// SignRebuildToken signs a rebuild token with the newest key held: SDC id 0, read-write, at the
// volume's current map generation.
func SignRebuildToken(keys *token.Keyring, v *token.Verifier, keyID func() (uint32, bool)) TokenSigner {
	return func(volumeID int64, ttl time.Duration) (token.Token, error) {
		return signNewest(keys, keyID, token.Claims{VolumeID: volumeID, Mode: token.ReadWrite,
			MapGeneration: v.Generation(volumeID), ExpiresAt: time.Now().Add(ttl).UnixMilli()})
	}
}

// SignPeerToken signs the Peer token an SDS presents to other SDSs, with the newest key held.
func SignPeerToken(keys *token.Keyring, keyID func() (uint32, bool)) func(ttl time.Duration) (token.Token, error) {
	return func(ttl time.Duration) (token.Token, error) {
		return signNewest(keys, keyID, token.Claims{Mode: token.Peer, ExpiresAt: time.Now().Add(ttl).UnixMilli()})
	}
}

// signNewest signs c with a random token id and the newest key held.
func signNewest(keys *token.Keyring, keyID func() (uint32, bool), c token.Claims) (token.Token, error) {
	id, ok := keyID()
	if !ok {
		return token.Token{}, errors.New("no token key from the MDM yet")
	}
	key, ok := keys.Key(id)
	if !ok {
		return token.Token{}, fmt.Errorf("token key %d not held", id)
	}
	var b [8]byte
	rand.Read(b[:])
	c.TokenID, c.KeyID = binary.BigEndian.Uint64(b[:]), id
	return token.Sign(c, key), nil
}

// dirtyChunks remembers the chunks this SDS wrote with a single copy (degraded, or the forward to
// the secondary failed), so that an SDS back from maintenance gets only those. It knows them
// only since this process first saw each volume's layout; a re-sync of a maintenance that began
// earlier copies everything.
type dirtyChunks struct {
	mu     sync.Mutex
	since  map[int64]int64 // volume -> epoch of the first layout this process installed
	chunks map[chunkstore.Key]struct{}
}

func (d *dirtyChunks) seen(l *layout.Layout) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.since == nil {
		d.since, d.chunks = map[int64]int64{}, map[chunkstore.Key]struct{}{}
	}
	if _, ok := d.since[l.VolumeID]; !ok {
		d.since[l.VolumeID] = l.Epoch
	}
}

func (d *dirtyChunks) mark(k chunkstore.Key) {
	d.mu.Lock()
	if d.chunks == nil {
		d.since, d.chunks = map[int64]int64{}, map[chunkstore.Key]struct{}{}
	}
	d.chunks[k] = struct{}{}
	d.mu.Unlock()
}

func (d *dirtyChunks) has(k chunkstore.Key) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.chunks[k]
	return ok
}

func (d *dirtyChunks) clear(k chunkstore.Key) {
	d.mu.Lock()
	delete(d.chunks, k)
	d.mu.Unlock()
}

// deltaOnly reports whether l's active rebuild returns an SDS from a maintenance this process
// watched from its start (it saw the volume's layout before the maintenance began), so that
// only the chunks marked dirty need copying.
func (d *dirtyChunks) deltaOnly(l *layout.Layout) bool {
	rb, ok := l.ActiveRebuild()
	if !ok || rb.Returning == 0 {
		return false
	}
	began := int64(0)
	for _, x := range l.Excluded {
		if x.SDSID == rb.Returning && x.Maintenance && x.Readmitted != 0 && x.Readmitted < rb.Epoch {
			began = max(began, x.Epoch)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	since, ok := d.since[l.VolumeID]
	return began != 0 && ok && since < began
}
