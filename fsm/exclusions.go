package fsm

import (
	"encoding/json"
	"fmt"
	"strconv"

	"pflex/internal/layout"
)

// Degraded layouts. When an SDS goes down (committed by the leader only after its lease has
// expired) or is failed by an operator, every layout that places chunks on it gets a new epoch
// and records the SDS as excluded: its chunks go on with the other copy alone (the layout
// package derives the replica sets). The record is one row per (volume, SDS), so a layout stays
// the same size whatever the volume's size. Marking the SDS up again does not take the row
// away: the SDS missed writes, so only a rebuild (which writes overrides) may give it chunks of
// that volume again; new layouts may use it at once.

// excludeSDS takes SDS id out of every layout it is a member of and not yet excluded from,
// each with a new epoch, and bumps the IO version so SDSs learn the new epochs with their next
// heartbeat.
func (t *applyTx) excludeSDS(h Header, id int64) error { return t.exclude(h, id, false) }

// exclude is excludeSDS; maintenance marks the exclusions as a planned outage.
func (t *applyTx) exclude(h Header, id int64, maintenance bool) error {
	type row struct {
		volumeID int64
		members  string
	}
	r := t.reader()
	rows, err := all(r, func(s scanner) (x row, err error) {
		err = s.Scan(&x.volumeID, &x.members)
		return
	}, `SELECT volume_id, members FROM volume_layouts
		WHERE volume_id NOT IN (SELECT volume_id FROM layout_exclusions WHERE sds_id = ? AND readmitted = 0) ORDER BY volume_id`, id)
	if err != nil {
		return err
	}
	changed := false
	for _, x := range rows {
		var members []layout.Member
		if err := json.Unmarshal([]byte(x.members), &members); err != nil {
			return fmt.Errorf("fsm: layout of volume %d: %w", x.volumeID, err)
		}
		member := false
		for _, m := range members {
			member = member || m.SDSID == id
		}
		if !member {
			continue
		}
		var epoch int64
		if err := t.tx.QueryRow(`UPDATE volume_layouts SET epoch = epoch + 1 WHERE volume_id = ? RETURNING epoch`, x.volumeID).Scan(&epoch); err != nil {
			return fmt.Errorf("fsm: entry %d: bump layout epoch of volume %d: %w", t.index, x.volumeID, err)
		}
		if _, err := t.exec(`INSERT INTO layout_exclusions(volume_id, sds_id, epoch, maintenance, created_at) VALUES (?, ?, ?, ?, ?)`,
			x.volumeID, id, epoch, maintenance, h.Time); err != nil {
			return err
		}
		// A batch being copied may have this SDS as a source or a target: it is cut short (its
		// pending targets fall back, ReplicaSet) and the planner begins a new rebuild.
		if _, err := t.exec(`UPDATE layout_rebuilds SET ordered = done WHERE volume_id = ? AND done < ordered`, x.volumeID); err != nil {
			return err
		}
		changed = true
	}
	if !changed {
		return nil
	}
	return t.bumpIOVersion()
}

// readmitSDS records that SDS id is up again in every layout it is excluded from, at each
// layout's current epoch: rebuilds that begin later may place copies on it. Its old copies stay
// superseded.
func (t *applyTx) readmitSDS(id int64) error {
	_, err := t.exec(`UPDATE layout_exclusions SET readmitted =
		(SELECT epoch FROM volume_layouts v WHERE v.volume_id = layout_exclusions.volume_id)
		WHERE sds_id = ? AND readmitted = 0 AND maintenance = 0`, id)
	return err
}

// sdsIDsOfNode lists the SDSs a registered node serves that are in state.
func (r *Reader) sdsIDsOfNode(node, state string) ([]int64, error) {
	return all(r, func(s scanner) (id int64, err error) {
		err = s.Scan(&id)
		return
	}, `SELECT id FROM sds WHERE node_id = ? AND state = ? ORDER BY id`, node, state)
}

// Exclusions lists the SDSs taken out of a volume's layout, oldest first.
func (r *Reader) Exclusions(volumeID int64) ([]layout.Exclusion, error) {
	return all(r, func(s scanner) (x layout.Exclusion, err error) {
		err = s.Scan(&x.SDSID, &x.Epoch, &x.Readmitted, &x.Maintenance)
		return
	}, `SELECT sds_id, epoch, readmitted, maintenance != 0 FROM layout_exclusions WHERE volume_id = ? ORDER BY epoch, sds_id`, volumeID)
}

// Rebuilds lists a volume's rebuilds in the order they began.
func (r *Reader) Rebuilds(volumeID int64) ([]layout.Rebuild, error) {
	return all(r, func(s scanner) (x layout.Rebuild, err error) {
		err = s.Scan(&x.Epoch, &x.Done, &x.Ordered, &x.Returning, &x.From, &x.To)
		return
	}, `SELECT epoch, done, ordered, returning_sds, from_sds, to_sds FROM layout_rebuilds WHERE volume_id = ? ORDER BY epoch`, volumeID)
}

// LayoutEpochs maps every volume that has a layout to its epoch (keys are decimal volume ids,
// as in IOState). SDSs compare it with the layouts they cache.
func (r *Reader) LayoutEpochs() (map[string]int64, error) {
	type pair struct{ id, epoch int64 }
	rows, err := all(r, func(s scanner) (p pair, err error) {
		err = s.Scan(&p.id, &p.epoch)
		return
	}, `SELECT volume_id, epoch FROM volume_layouts`)
	out := make(map[string]int64, len(rows))
	for _, p := range rows {
		out[strconv.FormatInt(p.id, 10)] = p.epoch
	}
	return out, err
}
