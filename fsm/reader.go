package fsm

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// Reader answers queries against one consistent view of the state: a read transaction for API
// reads, or the apply transaction while a command validates itself.
type Reader struct {
	q queryer
}

type scanner interface{ Scan(dest ...any) error }

func scanInt64(s scanner) (n int64, err error) {
	err = s.Scan(&n)
	return
}

// one scans a single row, turning "no rows" into a not-found rejection.
func one[T any](r *Reader, scan func(scanner) (T, error), what string, id any, query string, args ...any) (T, error) {
	v, err := scan(r.q.QueryRow(query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return v, notFound("%s %v not found", what, id)
	}
	if err != nil {
		return v, fmt.Errorf("fsm: read %s %v: %w", what, id, err)
	}
	return v, nil
}

func all[T any](r *Reader, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := r.q.Query(query, args...)
	if err != nil {
		return nil, fmt.Errorf("fsm: query: %w", err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("fsm: scan: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

const pdCols = `id, name, created_at`

func scanPD(s scanner) (p ProtectionDomain, err error) {
	err = s.Scan(&p.ID, &p.Name, &p.CreatedAt)
	return
}

func (r *Reader) PD(id int64) (ProtectionDomain, error) {
	return one(r, scanPD, "protection domain", id, `SELECT `+pdCols+` FROM protection_domains WHERE id = ?`, id)
}

func (r *Reader) PDs() ([]ProtectionDomain, error) {
	return all(r, scanPD, `SELECT `+pdCols+` FROM protection_domains ORDER BY id`)
}

const fsCols = `id, name, pd_id, created_at`

func scanFaultSet(s scanner) (f FaultSet, err error) {
	err = s.Scan(&f.ID, &f.Name, &f.PDID, &f.CreatedAt)
	return
}

func (r *Reader) FaultSet(id int64) (FaultSet, error) {
	return one(r, scanFaultSet, "fault set", id, `SELECT `+fsCols+` FROM fault_sets WHERE id = ?`, id)
}

func (r *Reader) FaultSets() ([]FaultSet, error) {
	return all(r, scanFaultSet, `SELECT `+fsCols+` FROM fault_sets ORDER BY id`)
}

const poolCols = `p.id, p.name, p.pd_id, p.protection_policy, p.total_capacity_gb, p.chunk_size_mb, p.created_at,
	COALESCE((SELECT SUM(size_gb) FROM volumes v WHERE v.pool_id = p.id AND v.provisioning = 'thick'), 0),
	COALESCE((SELECT SUM(size_gb) FROM volumes v WHERE v.pool_id = p.id), 0),
	(SELECT COUNT(*) FROM volumes v WHERE v.pool_id = p.id)`

func scanPool(s scanner) (p Pool, err error) {
	err = s.Scan(&p.ID, &p.Name, &p.PDID, &p.ProtectionPolicy, &p.TotalCapacityGB, &p.ChunkSizeMB, &p.CreatedAt,
		&p.ThickReservedGB, &p.ProvisionedGB, &p.VolumeCount)
	return
}

func (r *Reader) Pool(id int64) (Pool, error) {
	return one(r, scanPool, "storage pool", id, `SELECT `+poolCols+` FROM pools p WHERE p.id = ?`, id)
}

func (r *Reader) Pools() ([]Pool, error) {
	return all(r, scanPool, `SELECT `+poolCols+` FROM pools p ORDER BY p.id`)
}

const sdsCols = `id, name, pd_id, fault_set_id, address, devices, total_capacity_gb, state, state_changed_at, created_at, COALESCE(node_id, '')`

func scanSDS(s scanner) (d SDS, err error) {
	var fs sql.NullInt64
	var devices string
	if err = s.Scan(&d.ID, &d.Name, &d.ProtectionDomainID, &fs, &d.Address, &devices, &d.TotalCapacityGB,
		&d.State, &d.StateChangedAt, &d.CreatedAt, &d.NodeID); err != nil {
		return
	}
	if fs.Valid {
		d.FaultSetID = &fs.Int64
	}
	err = json.Unmarshal([]byte(devices), &d.Devices)
	return
}

func (r *Reader) SDS(id int64) (SDS, error) {
	return one(r, scanSDS, "SDS", id, `SELECT `+sdsCols+` FROM sds WHERE id = ?`, id)
}

func (r *Reader) SDSs() ([]SDS, error) {
	return all(r, scanSDS, `SELECT `+sdsCols+` FROM sds ORDER BY id`)
}

const sdcCols = `id, name, address, state, created_at, COALESCE(node_id, '')`

func scanSDC(s scanner) (c SDC, err error) {
	err = s.Scan(&c.ID, &c.Name, &c.Address, &c.State, &c.CreatedAt, &c.NodeID)
	return
}

func (r *Reader) SDC(id int64) (SDC, error) {
	return one(r, scanSDC, "SDC", id, `SELECT `+sdcCols+` FROM sdc WHERE id = ?`, id)
}

func (r *Reader) SDCs() ([]SDC, error) {
	return all(r, scanSDC, `SELECT `+sdcCols+` FROM sdc ORDER BY id`)
}

const volCols = `id, name, pool_id, size_gb, provisioning, map_generation, created_at`

func scanVolume(s scanner) (v Volume, err error) {
	err = s.Scan(&v.ID, &v.Name, &v.PoolID, &v.SizeGB, &v.Provisioning, &v.MapGeneration, &v.CreatedAt)
	return
}

// Volume returns a volume with its mappings.
func (r *Reader) Volume(id int64) (Volume, error) {
	v, err := one(r, scanVolume, "volume", id, `SELECT `+volCols+` FROM volumes WHERE id = ?`, id)
	if err != nil {
		return v, err
	}
	v.Mappings, err = r.Mappings(id)
	return v, err
}

// Volumes lists every volume with its mappings.
func (r *Reader) Volumes() ([]Volume, error) {
	vols, err := all(r, scanVolume, `SELECT `+volCols+` FROM volumes ORDER BY id`)
	if err != nil {
		return nil, err
	}
	maps, err := all(r, scanMapping, `SELECT `+mapCols+` FROM mappings ORDER BY volume_id, sdc_id`)
	if err != nil {
		return nil, err
	}
	byVol := map[int64][]Mapping{}
	for _, m := range maps {
		byVol[m.VolumeID] = append(byVol[m.VolumeID], m)
	}
	for i := range vols {
		vols[i].Mappings = byVol[vols[i].ID]
		if vols[i].Mappings == nil {
			vols[i].Mappings = []Mapping{}
		}
	}
	return vols, nil
}

const mapCols = `volume_id, sdc_id, access_mode, iops_limit, bandwidth_limit_mbps, generation, created_at`

func scanMapping(s scanner) (m Mapping, err error) {
	err = s.Scan(&m.VolumeID, &m.SDCID, &m.AccessMode, &m.IOPSLimit, &m.BandwidthLimitMBps, &m.Generation, &m.CreatedAt)
	return
}

// Mappings lists the SDCs a volume is mapped to.
func (r *Reader) Mappings(volumeID int64) ([]Mapping, error) {
	return all(r, scanMapping, `SELECT `+mapCols+` FROM mappings WHERE volume_id = ? ORDER BY sdc_id`, volumeID)
}

// Label returns one volume label; a missing key is a not-found rejection.
func (r *Reader) Label(volumeID int64, key string) (Label, error) {
	return one(r, func(s scanner) (l Label, err error) {
		err = s.Scan(&l.VolumeID, &l.Key, &l.Value, &l.Version, &l.UpdatedAt)
		return
	}, "label", fmt.Sprintf("%q on volume %d", key, volumeID),
		`SELECT volume_id, key, value, version, updated_at FROM labels WHERE volume_id = ? AND key = ?`, volumeID, key)
}

// MDMNodes lists the MDM replicas the FSM knows addresses for.
func (r *Reader) MDMNodes() ([]MDMNode, error) {
	return all(r, func(s scanner) (n MDMNode, err error) {
		err = s.Scan(&n.ID, &n.RaftAddr, &n.APIAddr)
		return
	}, `SELECT id, raft_addr, api_addr FROM mdm_nodes ORDER BY id`)
}

// Counts counts every kind of object.
func (r *Reader) Counts() (c Counts, err error) {
	err = r.q.QueryRow(`SELECT
		(SELECT COUNT(*) FROM protection_domains), (SELECT COUNT(*) FROM fault_sets),
		(SELECT COUNT(*) FROM pools), (SELECT COUNT(*) FROM sds),
		(SELECT COUNT(*) FROM sds WHERE state = 'up'), (SELECT COUNT(*) FROM sdc),
		(SELECT COUNT(*) FROM volumes), (SELECT COUNT(*) FROM mappings)`).Scan(
		&c.ProtectionDomains, &c.FaultSets, &c.Pools, &c.SDS, &c.SDSUp, &c.SDC, &c.Volumes, &c.Mappings)
	if err != nil {
		err = fmt.Errorf("fsm: count objects: %w", err)
	}
	return
}

// count runs a COUNT query.
func (r *Reader) count(query string, args ...any) (int64, error) {
	var n int64
	if err := r.q.QueryRow(query, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("fsm: count: %w", err)
	}
	return n, nil
}

// AppliedIndex is the applied index as recorded in this view.
func (r *Reader) AppliedIndex() (uint64, error) {
	v, err := metaValue(r.q, "applied_index")
	return uint64(v), err
}

const nodeCols = `id, capabilities, version, api_addr, mgmt_addr, data_addr, nbd_addr, gossip_addr, state, registered_at, state_changed_at`

func scanNode(s scanner) (n Node, err error) {
	var caps string
	err = s.Scan(&n.ID, &caps, &n.Version, &n.APIAddr, &n.MgmtAddr, &n.DataAddr, &n.NBDAddr, &n.GossipAddr,
		&n.State, &n.RegisteredAt, &n.StateChangedAt)
	n.Capabilities = splitCaps(caps)
	return
}

// Node returns a registered node.
func (r *Reader) Node(id string) (Node, error) {
	return one(r, scanNode, "node", fmt.Sprintf("%q", id), `SELECT `+nodeCols+` FROM nodes WHERE id = ?`, id)
}

// Nodes lists every registered node.
func (r *Reader) Nodes() ([]Node, error) {
	return all(r, scanNode, `SELECT `+nodeCols+` FROM nodes ORDER BY id`)
}

// sdsByNode finds the SDS a node serves (by node id, else an unclaimed SDS of that name).
func (r *Reader) sdsByNode(id string) (SDS, bool, error) {
	d, err := one(r, scanSDS, "SDS", id, `SELECT `+sdsCols+` FROM sds WHERE node_id = ? OR (node_id IS NULL AND name = ?) ORDER BY node_id IS NULL LIMIT 1`, id, id)
	return notFoundAsMissing(d, err)
}

func (r *Reader) sdcByNode(id string) (SDC, bool, error) {
	c, err := one(r, scanSDC, "SDC", id, `SELECT `+sdcCols+` FROM sdc WHERE node_id = ? OR (node_id IS NULL AND name = ?) ORDER BY node_id IS NULL LIMIT 1`, id, id)
	return notFoundAsMissing(c, err)
}

func notFoundAsMissing[T any](v T, err error) (T, bool, error) {
	if e, ok := AsError(err); ok && e.Kind == KindNotFound {
		return v, false, nil
	}
	return v, err == nil, err
}
