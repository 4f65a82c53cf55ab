package fsm

import (
	"fmt"
)

// Instant maintenance mode (PowerFlex's): a planned, short outage of one SDS without a
// rebuild. Entering takes the SDS out of every replica set it is in, like a failure, but the
// exclusions are marked maintenance: its chunks are not rebuilt elsewhere and it keeps its
// copies. Exiting readmits it and, in the same entry, begins a returning rebuild per volume that
// gives it back exactly those chunks; the sources copy only the chunks written meanwhile.

// SetMaintenance enters (Enter) or exits maintenance for an SDS.
type SetMaintenance struct {
	SDSID int64 `json:"sds_id"`
	Enter bool  `json:"enter"`
}

const TypeSetMaintenance CommandType = 33

func (*SetMaintenance) Type() CommandType { return TypeSetMaintenance }

func init() { register("set_maintenance", applySetMaintenance) }

func applySetMaintenance(t *applyTx, h Header, c *SetMaintenance) (any, error) {
	r := t.reader()
	sds, err := r.SDS(c.SDSID)
	if err != nil {
		return nil, err
	}
	if c.Enter {
		switch sds.State {
		case SDSMaintenance:
			return sds, nil // already in: a repeated call is not an error
		case SDSUp:
		default:
			return nil, conflict("SDS %q is %s: only an SDS that is up can enter maintenance", sds.Name, sds.State)
		}
		if err := t.soleCopies(c.SDSID); err != nil {
			return nil, err
		}
		if err := t.exclude(h, c.SDSID, true); err != nil {
			return nil, err
		}
		if _, err := t.exec(`UPDATE sds SET state = ?, state_changed_at = ? WHERE id = ?`, SDSMaintenance, h.Time, c.SDSID); err != nil {
			return nil, err
		}
		return r.SDS(c.SDSID)
	}
	switch sds.State {
	case SDSMaintenance:
	case SDSUp:
		return sds, nil // already out
	default:
		return nil, conflict("SDS %q is %s, not in maintenance", sds.Name, sds.State)
	}
	if sds.NodeID != "" {
		n, err := r.Node(sds.NodeID)
		if err != nil {
			return nil, err
		}
		if n.State != NodeUp {
			return nil, conflict("SDS %q is not heartbeating (node %s is %s): exit maintenance once it is back", sds.Name, n.ID, n.State)
		}
	}
	if err := t.endMaintenance(h, c.SDSID, true); err != nil {
		return nil, err
	}
	if _, err := t.exec(`UPDATE sds SET state = ?, state_changed_at = ? WHERE id = ?`, SDSUp, h.Time, c.SDSID); err != nil {
		return nil, err
	}
	return r.SDS(c.SDSID)
}

// soleCopies refuses maintenance for an SDS that holds the only available copy of some chunk
// (another SDS of the chunk is down or in maintenance): entering would leave it with none.
func (t *applyTx) soleCopies(id int64) error {
	r := t.reader()
	vols, err := all(r, func(s scanner) (v int64, err error) {
		err = s.Scan(&v)
		return
	}, `SELECT DISTINCT volume_id FROM layout_exclusions WHERE readmitted = 0 AND sds_id != ? ORDER BY volume_id`, id)
	if err != nil {
		return err
	}
	for _, v := range vols {
		l, ok, err := r.Layout(v)
		if err != nil || !ok {
			return err
		}
		if _, member := l.Member(id); !member {
			continue
		}
		for ch := range l.Chunks() {
			if ids, pending := l.ReplicaSet(ch); (len(ids) == 1 || pending) && ids[0] == id {
				return conflict("SDS %d holds the only copy of chunk %d of volume %d: entering maintenance would leave it with none (wait for the rebuild)", id, ch, v)
			}
		}
	}
	return nil
}

// endMaintenance ends SDS id's maintenance in every layout. returning: it comes back (readmitted
// at the layout's epoch, and a returning rebuild begins at the next, cutting short any batch
// being copied); otherwise it failed: its exclusions become ordinary ones and its chunks are
// rebuilt elsewhere.
func (t *applyTx) endMaintenance(h Header, id int64, returning bool) error {
	if !returning {
		_, err := t.exec(`UPDATE layout_exclusions SET maintenance = 0 WHERE sds_id = ? AND maintenance != 0 AND readmitted = 0`, id)
		return err
	}
	type row struct{ volume, epoch int64 }
	r := t.reader()
	rows, err := all(r, func(s scanner) (x row, err error) {
		err = s.Scan(&x.volume, &x.epoch)
		return
	}, `SELECT x.volume_id, v.epoch FROM layout_exclusions x JOIN volume_layouts v ON v.volume_id = x.volume_id
		WHERE x.sds_id = ? AND x.maintenance != 0 AND x.readmitted = 0 ORDER BY x.volume_id`, id)
	if err != nil {
		return err
	}
	for _, x := range rows {
		if _, err := t.exec(`UPDATE layout_exclusions SET readmitted = ? WHERE volume_id = ? AND sds_id = ? AND readmitted = 0`, x.epoch, x.volume, id); err != nil {
			return err
		}
		if _, err := t.exec(`UPDATE layout_rebuilds SET ordered = done WHERE volume_id = ? AND done < ordered`, x.volume); err != nil {
			return err
		}
		epoch, err := t.bumpLayoutEpoch(x.volume)
		if err != nil {
			return err
		}
		chunks, err := t.chunkCount(x.volume)
		if err != nil {
			return err
		}
		if _, err := t.exec(`INSERT INTO layout_rebuilds(volume_id, epoch, done, ordered, returning_sds, created_at) VALUES (?, ?, 0, ?, ?, ?)`,
			x.volume, epoch, chunks, id, h.Time); err != nil {
			return err
		}
	}
	if len(rows) > 0 {
		return t.bumpIOVersion()
	}
	return nil
}

// chunkCount is how many chunks a volume has now.
func (t *applyTx) chunkCount(volumeID int64) (int64, error) {
	l, _, err := t.reader().Layout(volumeID)
	if err != nil {
		return 0, fmt.Errorf("fsm: chunks of volume %d: %w", volumeID, err)
	}
	return l.Chunks(), nil
}
