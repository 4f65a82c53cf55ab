package sds

import (
	"context"
	"slices"
	"strconv"
	"time"

	"pflex/internal/layout"
	"pflex/sds/chunkstore"
)

// Copies superseded while this SDS was away. When the MDM commits an SDS down it takes it out
// of the replica sets of every layout (a new epoch); the SDS's copies of those chunks are then
// older than what the surviving copy has. An SDS that returns (restarted, resumed after a
// pause, reconnected) learns the new epochs with its first heartbeat or registration answer —
// before the lease of that answer lets it serve — and from then on:
//   - a cached layout older than its volume's epoch is fetched again before use, so requests
//     under the old epoch get StaleEpoch and requests for chunks it no longer holds NotPrimary;
//   - every volume it holds copies of whose epoch moved is checked against the new layout, and
//     the copies of chunks it is no longer a replica of are dropped (their extents freed).
// Marking the SDS up again does not make it a replica of those chunks: only a rebuild will.

// reconcileRetry is the wait before checking a volume again after its layout fetch failed.
const reconcileRetry = 500 * time.Millisecond

// LayoutEpochs takes the layout epochs the MDM sent with an IO state. It must run before the
// lease of the same answer is taken (the agent calls OnIOState first), so that no request served
// under that lease uses an older layout.
func (d *DataServer) LayoutEpochs(epochs map[string]int64) {
	// An IO state comes when keys, map generations or layouts changed: read grants, which
	// rest on all three, are asked for again.
	d.grants.revoke(func(*readGrant) bool { return true })
	if len(epochs) == 0 {
		return
	}
	parsed := make(map[int64]int64, len(epochs))
	for vol, e := range epochs {
		id, err := strconv.ParseInt(vol, 10, 64)
		if err != nil {
			d.log.Error("IO state: bad volume id in layout epochs", "volume", vol)
			continue
		}
		parsed[id] = e
		d.layouts.raise(id, e)
	}
	d.epochs.Store(&parsed)
	d.recMu.Lock()
	for _, id := range d.cfg.Store.Volumes() {
		if e, ok := parsed[id]; ok && e > d.reconciled[id] && e > d.recPending[id] {
			d.recPending[id] = e
		}
	}
	n := len(d.recPending)
	d.recMu.Unlock()
	if n > 0 {
		select {
		case d.recWake <- struct{}{}:
		default:
		}
	}
}

// reconcileLoop checks the volumes LayoutEpochs queued, one at a time.
func (d *DataServer) reconcileLoop() {
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.recWake:
		}
		for d.ctx.Err() == nil {
			d.recMu.Lock()
			pending := d.recPending
			d.recPending = map[int64]int64{}
			d.recMu.Unlock()
			if len(pending) == 0 {
				break
			}
			var failed bool
			for vol, epoch := range pending {
				if err := d.reconcile(vol); err != nil {
					d.log.Warn("checking copies against the new layout failed; will retry", "volume", vol, "epoch", epoch, "error", err)
					d.recMu.Lock()
					d.recPending[vol] = max(d.recPending[vol], epoch)
					d.recMu.Unlock()
					failed = true
					continue
				}
				d.recMu.Lock()
				d.reconciled[vol] = max(d.reconciled[vol], epoch)
				d.recMu.Unlock()
			}
			if failed {
				select {
				case <-d.ctx.Done():
					return
				case <-time.After(reconcileRetry):
				}
			}
		}
	}
}

// reconcile fetches volumeID's current layout (if the cached one is older than the MDM's) and
// drops the copies it no longer places here.
func (d *DataServer) reconcile(volumeID int64) error {
	if d.cfg.SelfID() == 0 {
		return errNotRegistered
	}
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	l, err := d.layouts.get(ctx, volumeID)
	if err != nil {
		return err
	}
	d.dropSuperseded(l)
	return nil
}

// dropSuperseded frees this SDS's copies of volume l.VolumeID's chunks that l does not place
// here, each under its chunk's write lock.
func (d *DataServer) dropSuperseded(l *layout.Layout) {
	self := d.cfg.SelfID()
	if self == 0 {
		return
	}
	dropped := 0
	for _, c := range d.cfg.Store.Chunks(l.VolumeID) {
		if c.Chunk >= l.Chunks() || slices.Contains(l.Replicas(c.Chunk), self) || l.MaintenanceCopy(c.Chunk, self) {
			continue // still a replica, or kept through this SDS's maintenance
		}
		k := chunkstore.Key{VolumeID: l.VolumeID, Chunk: c.Chunk}
		mu, cmu := d.lock(k), d.copyLock(k)
		mu.Lock()
		cmu.Lock()
		err := d.cfg.Store.Drop(k)
		cmu.Unlock()
		d.writeIDs.replaced(k)
		d.unrepl.clear(k)
		mu.Unlock()
		if err != nil {
			d.log.Error("dropping a superseded copy failed", "volume", l.VolumeID, "chunk", c.Chunk, "error", err)
			continue
		}
		dropped++
	}
	if dropped > 0 {
		d.stats.dropped.Add(int64(dropped))
		d.log.Info("dropped copies a newer layout placed elsewhere", "volume", l.VolumeID, "epoch", l.Epoch, "copies", dropped)
	}
}
