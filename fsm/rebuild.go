package fsm

import (
	"database/sql"
	"errors"

	"pflex/internal/layout"
)

// Rebuild orders. The leader plans (which volume, how many chunks per batch) and the FSM
// records: a rebuild begins with its first batch, advances batch by batch once the sources
// reported their copies durable, and is cut short by any exclusion of the volume
// (excludeSDS). Every step is a new layout epoch, so SDCs and SDSs act on it at once: targets
// of an ordered batch take every write of their chunks before the copy starts.

// BeginRebuild starts re-protecting a volume's degraded chunks: chunks [0, Ordered) are the
// first batch.
type BeginRebuild struct {
	VolumeID int64 `json:"volume_id"`
	Ordered  int64 `json:"ordered"`
}

// AdvanceRebuild marks the batch [Done of the record, Done) re-protected and orders
// [Done, Ordered). It is a compare-and-set on the batch: Done must be the record's Ordered.
type AdvanceRebuild struct {
	VolumeID int64 `json:"volume_id"`
	Epoch    int64 `json:"epoch"` // the rebuild's (the epoch it began at)
	Done     int64 `json:"done"`
	Ordered  int64 `json:"ordered"`
}

// SetRebuildPaused cancels (Paused) or allows again the rebuilds of a pool's volumes. Cancelling
// cuts the batch being copied short.
type SetRebuildPaused struct {
	PoolID int64 `json:"pool_id"`
	Paused bool  `json:"paused"`
}

const (
	TypeBeginRebuild     CommandType = 30
	TypeAdvanceRebuild   CommandType = 31
	TypeSetRebuildPaused CommandType = 32
)

func (*BeginRebuild) Type() CommandType     { return TypeBeginRebuild }
func (*AdvanceRebuild) Type() CommandType   { return TypeAdvanceRebuild }
func (*SetRebuildPaused) Type() CommandType { return TypeSetRebuildPaused }

func init() {
	register("begin_rebuild", applyBeginRebuild)
	register("advance_rebuild", applyAdvanceRebuild)
	register("set_rebuild_paused", applySetRebuildPaused)
}

// rebuildLayout reads the layout a rebuild command works on.
func (t *applyTx) rebuildLayout(volumeID int64) (layout.Layout, error) {
	l, ok, err := t.reader().Layout(volumeID)
	if err != nil {
		return l, err
	}
	if !ok {
		return l, conflict("volume %d has no layout yet: nothing to rebuild", volumeID)
	}
	return l, nil
}

func applyBeginRebuild(t *applyTx, h Header, c *BeginRebuild) (any, error) {
	l, err := t.rebuildLayout(c.VolumeID)
	if err != nil {
		return nil, err
	}
	if c.Ordered <= 0 || c.Ordered > l.Chunks() {
		return nil, invalid("a rebuild batch must end within the volume's %d chunks, got %d", l.Chunks(), c.Ordered)
	}
	if rb, ok := l.ActiveRebuild(); ok {
		return nil, conflict("volume %d is already rebuilding chunks [%d, %d)", c.VolumeID, rb.Done, rb.Ordered)
	}
	v, err := t.reader().Volume(c.VolumeID)
	if err != nil {
		return nil, err
	}
	if paused, err := t.reader().RebuildPaused(v.PoolID); err != nil || paused {
		if err == nil {
			err = conflict("rebuild of pool %d is cancelled; start it again first", v.PoolID)
		}
		return nil, err
	}
	epoch, err := t.bumpLayoutEpoch(c.VolumeID)
	if err != nil {
		return nil, err
	}
	if _, err := t.exec(`INSERT INTO layout_rebuilds(volume_id, epoch, done, ordered, created_at) VALUES (?, ?, 0, ?, ?)`,
		c.VolumeID, epoch, c.Ordered, h.Time); err != nil {
		return nil, err
	}
	if err := t.bumpIOVersion(); err != nil {
		return nil, err
	}
	return t.layoutAfter(c.VolumeID)
}

func applyAdvanceRebuild(t *applyTx, _ Header, c *AdvanceRebuild) (any, error) {
	l, err := t.rebuildLayout(c.VolumeID)
	if err != nil {
		return nil, err
	}
	var rb *layout.Rebuild
	for i := range l.Rebuilds {
		if l.Rebuilds[i].Epoch == c.Epoch {
			rb = &l.Rebuilds[i]
		}
	}
	switch {
	case rb == nil:
		return nil, notFound("volume %d has no rebuild begun at epoch %d", c.VolumeID, c.Epoch)
	case rb.Done >= rb.Ordered || rb.Ordered != c.Done:
		return nil, newErr(KindPrecondition, "the rebuild of volume %d moved: batch [%d, %d), not ending at %d", c.VolumeID, rb.Done, rb.Ordered, c.Done)
	case c.Ordered < c.Done || c.Ordered > l.Chunks():
		return nil, invalid("the next batch [%d, %d) is not within the volume's %d chunks", c.Done, c.Ordered, l.Chunks())
	}
	if _, err := t.bumpLayoutEpoch(c.VolumeID); err != nil {
		return nil, err
	}
	if _, err := t.exec(`UPDATE layout_rebuilds SET done = ?, ordered = ? WHERE volume_id = ? AND epoch = ?`,
		c.Done, c.Ordered, c.VolumeID, c.Epoch); err != nil {
		return nil, err
	}
	if err := t.bumpIOVersion(); err != nil {
		return nil, err
	}
	return t.layoutAfter(c.VolumeID)
}

func applySetRebuildPaused(t *applyTx, h Header, c *SetRebuildPaused) (any, error) {
	r := t.reader()
	if _, err := r.Pool(c.PoolID); err != nil {
		return nil, err
	}
	if !c.Paused {
		_, err := t.exec(`DELETE FROM rebuild_paused WHERE pool_id = ?`, c.PoolID)
		return map[string]any{"pool_id": c.PoolID, "paused": false}, err
	}
	if _, err := t.exec(`INSERT INTO rebuild_paused(pool_id, created_at) VALUES (?, ?) ON CONFLICT(pool_id) DO NOTHING`, c.PoolID, h.Time); err != nil {
		return nil, err
	}
	active, err := all(r, func(s scanner) (id int64, err error) {
		err = s.Scan(&id)
		return
	}, `SELECT DISTINCT b.volume_id FROM layout_rebuilds b JOIN volumes v ON v.id = b.volume_id
		WHERE v.pool_id = ? AND b.done < b.ordered ORDER BY b.volume_id`, c.PoolID)
	if err != nil {
		return nil, err
	}
	for _, id := range active {
		if _, err := t.bumpLayoutEpoch(id); err != nil {
			return nil, err
		}
		if _, err := t.exec(`UPDATE layout_rebuilds SET ordered = done WHERE volume_id = ? AND done < ordered`, id); err != nil {
			return nil, err
		}
	}
	if len(active) > 0 {
		if err := t.bumpIOVersion(); err != nil {
			return nil, err
		}
	}
	return map[string]any{"pool_id": c.PoolID, "paused": true, "cut_short": len(active)}, nil
}

// bumpLayoutEpoch moves a volume's layout to a new epoch and returns it.
func (t *applyTx) bumpLayoutEpoch(volumeID int64) (int64, error) {
	var epoch int64
	err := t.tx.QueryRow(`UPDATE volume_layouts SET epoch = epoch + 1 WHERE volume_id = ? RETURNING epoch`, volumeID).Scan(&epoch)
	return epoch, err
}

func (t *applyTx) layoutAfter(volumeID int64) (any, error) {
	l, _, err := t.reader().Layout(volumeID)
	return l, err
}

// RebuildPaused reports whether an operator cancelled the rebuilds of a pool.
func (r *Reader) RebuildPaused(poolID int64) (bool, error) {
	var one int
	err := r.q.QueryRow(`SELECT 1 FROM rebuild_paused WHERE pool_id = ?`, poolID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}
