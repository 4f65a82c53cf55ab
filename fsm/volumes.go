package fsm

// Commands on volumes: create, extend, delete, map, unmap, mapping limits and labels.

import (
	"fmt"
	"strings"
)

type CreateVolume struct {
	Name         string `json:"name"`
	SizeGB       int64  `json:"size_gb"`
	Provisioning string `json:"provisioning"`
	PoolID       int64  `json:"pool_id"`
}

type DeleteVolume struct {
	ID int64 `json:"id"`
}

type ExtendVolume struct {
	VolumeID int64 `json:"volume_id"`
	SizeGB   int64 `json:"size_gb"`
}

type MapVolume struct {
	VolumeID           int64  `json:"volume_id"`
	SDCID              int64  `json:"sdc_id"`
	AccessMode         string `json:"access_mode"`
	IOPSLimit          int64  `json:"iops_limit"`
	BandwidthLimitMBps int64  `json:"bandwidth_limit_mbps"`
}

// SetMappingLimits changes the IOPS and bandwidth limits of a mapping in place (the SDC picks them
// up at its next poll; its tokens stay valid). A nil field keeps its limit; 0 means none.
type SetMappingLimits struct {
	VolumeID           int64  `json:"volume_id"`
	SDCID              int64  `json:"sdc_id"`
	IOPSLimit          *int64 `json:"iops_limit,omitempty"`
	BandwidthLimitMBps *int64 `json:"bandwidth_limit_mbps,omitempty"`
}

// TypeSetMappingLimits is SetMappingLimits's log entry type.
const TypeSetMappingLimits CommandType = 34

type UnmapVolume struct {
	VolumeID int64 `json:"volume_id"`
	SDCID    int64 `json:"sdc_id"`
}

// SetLabel writes a volume label. With Expect set it is a compare-and-set: it succeeds only if
// the current value equals *Expect, where a missing label counts as the empty string.
type SetLabel struct {
	VolumeID int64   `json:"volume_id"`
	Key      string  `json:"key"`
	Value    string  `json:"value"`
	Expect   *string `json:"expect,omitempty"`
}

func (*CreateVolume) Type() CommandType { return TypeCreateVolume }
func (*DeleteVolume) Type() CommandType { return TypeDeleteVolume }
func (*ExtendVolume) Type() CommandType { return TypeExtendVolume }
func (*MapVolume) Type() CommandType    { return TypeMapVolume }
func (*UnmapVolume) Type() CommandType  { return TypeUnmapVolume }
func (*SetLabel) Type() CommandType     { return TypeSetLabel }

func (*SetMappingLimits) Type() CommandType { return TypeSetMappingLimits }

func init() {
	register("create_volume", applyCreateVolume)
	register("delete_volume", applyDeleteVolume)
	register("extend_volume", applyExtendVolume)
	register("map_volume", applyMapVolume)
	register("unmap_volume", applyUnmapVolume)
	register("set_mapping_limits", applySetMappingLimits)
	register("set_label", applySetLabel, rejectsBeforeWriting)
}

// checkThick refuses a thick reservation that would promise more than the pool has.
func checkThick(p Pool, addGB int64) error {
	if p.ThickReservedGB+addGB > p.TotalCapacityGB {
		return conflict("storage pool %q cannot reserve %d GB more for thick volumes: %d of %d GB already reserved",
			p.Name, addGB, p.ThickReservedGB, p.TotalCapacityGB)
	}
	return nil
}

func applyCreateVolume(t *applyTx, h Header, c *CreateVolume) (any, error) {
	if err := t.uniqueName("volumes", "volume", c.Name); err != nil {
		return nil, err
	}
	if err := validCapacity("size_gb", c.SizeGB); err != nil {
		return nil, err
	}
	prov := c.Provisioning
	if prov == "" {
		prov = Thin
	}
	if prov != Thin && prov != Thick {
		return nil, invalid("provisioning %q must be %q or %q", prov, Thin, Thick)
	}
	r := t.reader()
	pool, err := r.Pool(c.PoolID)
	if err != nil {
		return nil, err
	}
	if prov == Thick {
		if err := checkThick(pool, c.SizeGB); err != nil {
			return nil, err
		}
	}
	id, err := t.insert(`INSERT INTO volumes(name, pool_id, size_gb, provisioning, map_generation, created_at)
		VALUES (?, ?, ?, ?, 0, ?)`, c.Name, c.PoolID, c.SizeGB, prov, h.Time)
	if err != nil {
		return nil, err
	}
	return r.Volume(id)
}

func applyDeleteVolume(t *applyTx, _ Header, c *DeleteVolume) (any, error) {
	v, err := t.reader().Volume(c.ID)
	if err != nil {
		return nil, err
	}
	if len(v.Mappings) > 0 {
		return nil, conflict("volume %q is mapped to %d SDCs; unmap it first", v.Name, len(v.Mappings))
	}
	if _, err := t.exec(`DELETE FROM labels WHERE volume_id = ?`, c.ID); err != nil {
		return nil, err
	}
	if _, err := t.exec(`DELETE FROM layout_exclusions WHERE volume_id = ?`, c.ID); err != nil {
		return nil, err
	}
	if _, err := t.exec(`DELETE FROM layout_rebuilds WHERE volume_id = ?`, c.ID); err != nil {
		return nil, err
	}
	if _, err := t.exec(`DELETE FROM volume_layouts WHERE volume_id = ?`, c.ID); err != nil {
		return nil, err
	}
	if _, err := t.exec(`DELETE FROM volumes WHERE id = ?`, c.ID); err != nil {
		return nil, err
	}
	return v, nil
}

func applyExtendVolume(t *applyTx, _ Header, c *ExtendVolume) (any, error) {
	if err := validCapacity("size_gb", c.SizeGB); err != nil {
		return nil, err
	}
	r := t.reader()
	v, err := r.Volume(c.VolumeID)
	if err != nil {
		return nil, err
	}
	if c.SizeGB <= v.SizeGB {
		return nil, invalid("volume %q is %d GB: extend only grows, and %d GB is not larger", v.Name, v.SizeGB, c.SizeGB)
	}
	if v.Provisioning == Thick {
		pool, err := r.Pool(v.PoolID)
		if err != nil {
			return nil, err
		}
		if err := checkThick(pool, c.SizeGB-v.SizeGB); err != nil {
			return nil, err
		}
	}
	if _, err := t.exec(`UPDATE volumes SET size_gb = ? WHERE id = ?`, c.SizeGB, c.VolumeID); err != nil {
		return nil, err
	}
	return r.Volume(c.VolumeID)
}

func applyMapVolume(t *applyTx, h Header, c *MapVolume) (any, error) {
	mode := c.AccessMode
	if mode == "" {
		mode = ReadWrite
	}
	if mode != ReadWrite && mode != ReadOnly {
		return nil, invalid("access_mode %q must be %q or %q", mode, ReadWrite, ReadOnly)
	}
	if err := checkLimits(c.IOPSLimit, c.BandwidthLimitMBps); err != nil {
		return nil, err
	}
	r := t.reader()
	v, err := r.Volume(c.VolumeID)
	if err != nil {
		return nil, err
	}
	sdc, err := r.SDC(c.SDCID)
	if err != nil {
		return nil, err
	}
	if sdc.NodeID != "" {
		// The capability model: only a node that carries the SDC capability can map volumes.
		if n, err := r.Node(sdc.NodeID); err == nil && !n.Has(CapSDC) {
			return nil, conflict("SDC %q is served by node %q, which no longer has the SDC capability (it has %s)",
				sdc.Name, n.ID, strings.Join(n.Capabilities, ", "))
		}
	}
	for _, m := range v.Mappings {
		if m.SDCID == c.SDCID {
			return nil, conflict("volume %q is already mapped to SDC %q", v.Name, sdc.Name)
		}
	}
	// The generation counts revocations (unmaps); a new mapping's tokens carry the current one.
	gen := v.MapGeneration
	if _, err := t.exec(`INSERT INTO mappings(volume_id, sdc_id, access_mode, iops_limit, bandwidth_limit_mbps, generation, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, v.ID, sdc.ID, mode, c.IOPSLimit, c.BandwidthLimitMBps, gen, h.Time); err != nil {
		return nil, err
	}
	return r.Volume(v.ID)
}

func checkLimits(iops, mbps int64) error {
	if iops < 0 || mbps < 0 {
		return invalid("iops_limit and bandwidth_limit_mbps must be 0 (unlimited) or positive")
	}
	return nil
}

func applySetMappingLimits(t *applyTx, _ Header, c *SetMappingLimits) (any, error) {
	if c.IOPSLimit == nil && c.BandwidthLimitMBps == nil {
		return nil, invalid("give iops_limit, bandwidth_limit_mbps or both")
	}
	r := t.reader()
	v, err := r.Volume(c.VolumeID)
	if err != nil {
		return nil, err
	}
	var m *Mapping
	for i := range v.Mappings {
		if v.Mappings[i].SDCID == c.SDCID {
			m = &v.Mappings[i]
		}
	}
	if m == nil {
		return nil, notFound("volume %q is not mapped to SDC %d", v.Name, c.SDCID)
	}
	iops, mbps := m.IOPSLimit, m.BandwidthLimitMBps
	if c.IOPSLimit != nil {
		iops = *c.IOPSLimit
	}
	if c.BandwidthLimitMBps != nil {
		mbps = *c.BandwidthLimitMBps
	}
	if err := checkLimits(iops, mbps); err != nil {
		return nil, err
	}
	if _, err := t.exec(`UPDATE mappings SET iops_limit = ?, bandwidth_limit_mbps = ? WHERE volume_id = ? AND sdc_id = ?`,
		iops, mbps, v.ID, c.SDCID); err != nil {
		return nil, err
	}
	return r.Volume(v.ID)
}

// applyUnmapVolume removes a mapping and bumps the volume's map generation, which is what later
// revokes the SDC's IO tokens.
func applyUnmapVolume(t *applyTx, _ Header, c *UnmapVolume) (any, error) {
	r := t.reader()
	v, err := r.Volume(c.VolumeID)
	if err != nil {
		return nil, err
	}
	mapped := false
	for _, m := range v.Mappings {
		mapped = mapped || m.SDCID == c.SDCID
	}
	if !mapped {
		return nil, notFound("volume %q is not mapped to SDC %d", v.Name, c.SDCID)
	}
	if _, err := t.exec(`DELETE FROM mappings WHERE volume_id = ? AND sdc_id = ?`, v.ID, c.SDCID); err != nil {
		return nil, err
	}
	if _, err := t.exec(`UPDATE volumes SET map_generation = map_generation + 1 WHERE id = ?`, v.ID); err != nil {
		return nil, err
	}
	if err := t.bumpIOVersion(); err != nil {
		return nil, err
	}
	return r.Volume(v.ID)
}

func applySetLabel(t *applyTx, h Header, c *SetLabel) (any, error) {
	if c.Key == "" || len(c.Key) > MaxLabelKeyLen {
		return nil, invalid("label key must be 1 to %d characters", MaxLabelKeyLen)
	}
	if len(c.Value) > MaxLabelValLen {
		return nil, invalid("label value is longer than %d bytes", MaxLabelValLen)
	}
	// Labels are the hot path: a plain write is one statement, an upsert that inserts nothing
	// (and so returns no row) when the volume does not exist. A compare-and-set first checks
	// the volume, then reads the current value. Nothing is written before a rejection, so the
	// command runs without a savepoint (rejectsBeforeWriting).
	if c.Expect != nil {
		r := t.reader()
		if n, err := r.count(`SELECT COUNT(*) FROM volumes WHERE id = ?`, c.VolumeID); err != nil {
			return nil, err
		} else if n == 0 {
			return nil, notFound("volume %d not found", c.VolumeID)
		}
		cur, err := r.Label(c.VolumeID, c.Key)
		if e, ok := AsError(err); err != nil && (!ok || e.Kind != KindNotFound) {
			return nil, err
		}
		if cur.Value != *c.Expect {
			return nil, newErr(KindPrecondition, "label %q on volume %d is %q, not the expected %q", c.Key, c.VolumeID, cur.Value, *c.Expect)
		}
	}
	res, err := t.exec(`INSERT INTO labels(volume_id, key, value, version, updated_at)
		SELECT id, ?, ?, 1, ? FROM volumes WHERE id = ?
		ON CONFLICT(volume_id, key) DO UPDATE SET value = excluded.value, version = version + 1, updated_at = excluded.updated_at`,
		c.Key, c.Value, h.Time, c.VolumeID)
	if err != nil {
		return nil, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, fmt.Errorf("fsm: entry %d: set label: %w", t.index, err)
	} else if n == 0 {
		return nil, notFound("volume %d not found", c.VolumeID)
	}
	l := Label{VolumeID: c.VolumeID, Key: c.Key, Value: c.Value, UpdatedAt: h.Time}
	if err := t.tx.QueryRow(`SELECT version FROM labels WHERE volume_id = ? AND key = ?`, c.VolumeID, c.Key).Scan(&l.Version); err != nil {
		return nil, fmt.Errorf("fsm: entry %d: set label: %w", t.index, err)
	}
	return l, nil
}
