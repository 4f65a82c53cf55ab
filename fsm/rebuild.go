package fsm

import (
	"database/sql"
	"encoding/json"
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
//
// With From and To it begins a move instead (rebalance): chunks with a copy on From and none on
// To get To as a pending third copy, then To replaces From. To joins the layout's members (at
// the new epoch) if it is not one: an SDS added after the volume's layout was made.
type BeginRebuild struct {
	VolumeID int64 `json:"volume_id"`
	Ordered  int64 `json:"ordered"`
	From     int64 `json:"from,omitempty"`
	To       int64 `json:"to,omitempty"`
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
	if (c.From == 0) != (c.To == 0) || (c.From != 0 && c.From == c.To) {
		return nil, invalid("a move needs both from and to, and two different SDSs (got %d -> %d)", c.From, c.To)
	}
	var join *layout.Member
	if c.To != 0 {
		if join, err = t.moveTarget(l, v.PoolID, c.From, c.To); err != nil {
			return nil, err
		}
	}
	epoch, err := t.bumpLayoutEpoch(c.VolumeID)
	if err != nil {
		return nil, err
	}
	if join != nil {
		join.Joined = epoch
		members := append(l.Members, *join)
		for i := range members {
			members[i].Addr = "" // addresses are looked up when read
		}
		b, _ := json.Marshal(members)
		if _, err := t.exec(`UPDATE volume_layouts SET members = ? WHERE volume_id = ?`, string(b), c.VolumeID); err != nil {
			return nil, err
		}
	}
	if _, err := t.exec(`INSERT INTO layout_rebuilds(volume_id, epoch, done, ordered, from_sds, to_sds, created_at) VALUES (?, ?, 0, ?, ?, ?, ?)`,
		c.VolumeID, epoch, c.Ordered, c.From, c.To, h.Time); err != nil {
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

// moveTarget checks a move from SDS from to SDS to and returns the member to add when to is
// not one of the layout's yet.
func (t *applyTx) moveTarget(l layout.Layout, poolID, from, to int64) (*layout.Member, error) {
	r := t.reader()
	if _, ok := l.Member(from); !ok {
		return nil, invalid("SDS %d holds nothing of volume %d: it is not in its layout", from, l.VolumeID)
	}
	s, err := r.SDS(to)
	if err != nil {
		return nil, err
	}
	if s.State != SDSUp {
		return nil, conflict("SDS %q is %s: only an SDS that is up can take chunks", s.Name, s.State)
	}
	p, err := r.Pool(poolID)
	if err != nil {
		return nil, err
	}
	if s.ProtectionDomainID != p.PDID {
		return nil, invalid("SDS %q is not in the protection domain of pool %d", s.Name, poolID)
	}
	if _, ok := l.Member(to); ok {
		return nil, nil
	}
	m := &layout.Member{SDSID: to, Weight: max(s.TotalCapacityGB, 1)}
	if s.FaultSetID != nil {
		m.FaultSet = *s.FaultSetID
	}
	return m, nil
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

// PoolLayouts returns the layouts of a pool's volumes that have one, in volume order.
func (r *Reader) PoolLayouts(poolID int64) ([]layout.Layout, error) {
	chunkMB, err := r.chunkSizeMB(poolID)
	if err != nil {
		return nil, err
	}
	sdss, err := r.SDSs()
	if err != nil {
		return nil, err
	}
	addrs := make(map[int64]string, len(sdss))
	for _, s := range sdss {
		addrs[s.ID] = s.Address
	}
	// The volumes without their mappings: a layout needs neither.
	vols, err := all(r, scanVolume, `SELECT `+volCols+` FROM volumes WHERE pool_id = ? ORDER BY id`, poolID)
	if err != nil {
		return nil, err
	}
	var out []layout.Layout
	for _, v := range vols {
		l, ok, err := r.layoutOf(v, chunkMB, func(id int64) string { return addrs[id] })
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, l)
		}
	}
	return out, nil
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
