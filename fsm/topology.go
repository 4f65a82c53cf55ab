package fsm

import (
	"encoding/json"
	"strings"
)

// Commands that shape the cluster: protection domains, fault sets, pools, SDSs, SDCs, MDMs.

type CreatePD struct {
	Name string `json:"name"`
}

type DeletePD struct {
	ID int64 `json:"id"`
}

type CreateFaultSet struct {
	Name string `json:"name"`
	PDID int64  `json:"pd_id"`
}

type DeleteFaultSet struct {
	ID int64 `json:"id"`
}

type CreatePool struct {
	Name             string `json:"name"`
	PDID             int64  `json:"pd_id"`
	ProtectionPolicy string `json:"protection_policy"`
	TotalCapacityGB  int64  `json:"total_capacity_gb"`
	ChunkSizeMB      int64  `json:"chunk_size_mb"`
}

type DeletePool struct {
	ID int64 `json:"id"`
}

type AddSDS struct {
	Name               string  `json:"name"`
	TotalCapacityGB    int64   `json:"total_capacity_gb"`
	Devices            Devices `json:"devices"`
	ProtectionDomainID int64   `json:"protection_domain_id"`
	FaultSetID         *int64  `json:"fault_set_id"`
	Address            string  `json:"address"`
}

type SetSDSState struct {
	ID    int64  `json:"id"`
	State string `json:"state"`
}

type RemoveSDS struct {
	ID int64 `json:"id"`
}

type AddSDC struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

type RemoveSDC struct {
	ID int64 `json:"id"`
}

type UpsertMDM MDMNode

type RemoveMDM struct {
	ID string `json:"id"`
}

func (*CreatePD) Type() CommandType       { return TypeCreatePD }
func (*DeletePD) Type() CommandType       { return TypeDeletePD }
func (*CreateFaultSet) Type() CommandType { return TypeCreateFaultSet }
func (*DeleteFaultSet) Type() CommandType { return TypeDeleteFaultSet }
func (*CreatePool) Type() CommandType     { return TypeCreatePool }
func (*DeletePool) Type() CommandType     { return TypeDeletePool }
func (*AddSDS) Type() CommandType         { return TypeAddSDS }
func (*SetSDSState) Type() CommandType    { return TypeSetSDSState }
func (*RemoveSDS) Type() CommandType      { return TypeRemoveSDS }
func (*AddSDC) Type() CommandType         { return TypeAddSDC }
func (*RemoveSDC) Type() CommandType      { return TypeRemoveSDC }
func (*UpsertMDM) Type() CommandType      { return TypeUpsertMDM }
func (*RemoveMDM) Type() CommandType      { return TypeRemoveMDM }

func init() {
	register("create_pd", applyCreatePD)
	register("delete_pd", applyDeletePD)
	register("create_fault_set", applyCreateFaultSet)
	register("delete_fault_set", applyDeleteFaultSet)
	register("create_pool", applyCreatePool)
	register("delete_pool", applyDeletePool)
	register("add_sds", applyAddSDS)
	register("set_sds_state", applySetSDSState)
	register("remove_sds", applyRemoveSDS)
	register("add_sdc", applyAddSDC)
	register("remove_sdc", applyRemoveSDC)
	register("upsert_mdm", applyUpsertMDM)
	register("remove_mdm", applyRemoveMDM)
}

func applyCreatePD(t *applyTx, h Header, c *CreatePD) (any, error) {
	if err := t.uniqueName("protection_domains", "protection domain", c.Name); err != nil {
		return nil, err
	}
	id, err := t.insert(`INSERT INTO protection_domains(name, created_at) VALUES (?, ?)`, c.Name, h.Time)
	if err != nil {
		return nil, err
	}
	return t.reader().PD(id)
}

func applyDeletePD(t *applyTx, _ Header, c *DeletePD) (any, error) {
	r := t.reader()
	pd, err := r.PD(c.ID)
	if err != nil {
		return nil, err
	}
	for _, dep := range []struct{ table, what string }{
		{"pools", "storage pools"}, {"sds", "SDSs"}, {"fault_sets", "fault sets"},
	} {
		n, err := r.count(`SELECT COUNT(*) FROM `+dep.table+` WHERE pd_id = ?`, c.ID)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			return nil, conflict("protection domain %q still has %d %s; remove them first", pd.Name, n, dep.what)
		}
	}
	if _, err := t.exec(`DELETE FROM protection_domains WHERE id = ?`, c.ID); err != nil {
		return nil, err
	}
	return pd, nil
}

func applyCreateFaultSet(t *applyTx, h Header, c *CreateFaultSet) (any, error) {
	if err := t.uniqueName("fault_sets", "fault set", c.Name); err != nil {
		return nil, err
	}
	if _, err := t.reader().PD(c.PDID); err != nil {
		return nil, err
	}
	id, err := t.insert(`INSERT INTO fault_sets(name, pd_id, created_at) VALUES (?, ?, ?)`, c.Name, c.PDID, h.Time)
	if err != nil {
		return nil, err
	}
	return t.reader().FaultSet(id)
}

func applyDeleteFaultSet(t *applyTx, _ Header, c *DeleteFaultSet) (any, error) {
	r := t.reader()
	fs, err := r.FaultSet(c.ID)
	if err != nil {
		return nil, err
	}
	n, err := r.count(`SELECT COUNT(*) FROM sds WHERE fault_set_id = ?`, c.ID)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		return nil, conflict("fault set %q still has %d SDSs; remove them first", fs.Name, n)
	}
	if _, err := t.exec(`DELETE FROM fault_sets WHERE id = ?`, c.ID); err != nil {
		return nil, err
	}
	return fs, nil
}

func applyCreatePool(t *applyTx, h Header, c *CreatePool) (any, error) {
	if err := t.uniqueName("pools", "storage pool", c.Name); err != nil {
		return nil, err
	}
	policy := c.ProtectionPolicy
	if policy == "" {
		policy = TwoCopies
	}
	if policy != TwoCopies {
		return nil, invalid("protection_policy %q is not supported (only %q)", policy, TwoCopies)
	}
	if err := validCapacity("total_capacity_gb", c.TotalCapacityGB); err != nil {
		return nil, err
	}
	chunk := c.ChunkSizeMB
	if chunk == 0 {
		chunk = 1
	}
	if chunk < 0 || chunk > MaxChunkSizeMB || chunk&(chunk-1) != 0 {
		return nil, invalid("chunk_size_mb must be a power of two from 1 to %d, got %d", MaxChunkSizeMB, c.ChunkSizeMB)
	}
	if _, err := t.reader().PD(c.PDID); err != nil {
		return nil, err
	}
	id, err := t.insert(`INSERT INTO pools(name, pd_id, protection_policy, total_capacity_gb, chunk_size_mb, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`, c.Name, c.PDID, policy, c.TotalCapacityGB, chunk, h.Time)
	if err != nil {
		return nil, err
	}
	return t.reader().Pool(id)
}

func applyDeletePool(t *applyTx, _ Header, c *DeletePool) (any, error) {
	p, err := t.reader().Pool(c.ID)
	if err != nil {
		return nil, err
	}
	if p.VolumeCount > 0 {
		return nil, conflict("storage pool %q still has %d volumes; delete them first", p.Name, p.VolumeCount)
	}
	if _, err := t.exec(`DELETE FROM pools WHERE id = ?`, c.ID); err != nil {
		return nil, err
	}
	return p, nil
}

func applyAddSDS(t *applyTx, h Header, c *AddSDS) (any, error) {
	if err := t.uniqueName("sds", "SDS", c.Name); err != nil {
		return nil, err
	}
	if err := validCapacity("total_capacity_gb", c.TotalCapacityGB); err != nil {
		return nil, err
	}
	devices := cleanDevices(c.Devices)
	if len(devices) == 0 {
		return nil, invalid("SDS %q needs at least one device", c.Name)
	}
	addr := strings.TrimSpace(c.Address)
	if err := validAddress("address", addr); err != nil {
		return nil, err
	}
	r := t.reader()
	if _, err := r.PD(c.ProtectionDomainID); err != nil {
		return nil, err
	}
	if c.FaultSetID != nil {
		fs, err := r.FaultSet(*c.FaultSetID)
		if err != nil {
			return nil, err
		}
		if fs.PDID != c.ProtectionDomainID {
			return nil, invalid("fault set %q belongs to protection domain %d, not %d", fs.Name, fs.PDID, c.ProtectionDomainID)
		}
	}
	devJSON, _ := json.Marshal(devices)
	id, err := t.insert(`INSERT INTO sds(name, pd_id, fault_set_id, address, devices, total_capacity_gb, state, state_changed_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, c.Name, c.ProtectionDomainID, c.FaultSetID, addr, string(devJSON),
		c.TotalCapacityGB, SDSUp, h.Time, h.Time)
	if err != nil {
		return nil, err
	}
	return r.SDS(id)
}

func applySetSDSState(t *applyTx, h Header, c *SetSDSState) (any, error) {
	switch c.State {
	case SDSUp, SDSDown, SDSFailed:
	default:
		return nil, invalid("SDS state %q is not one of up, down, failed", c.State)
	}
	r := t.reader()
	sds, err := r.SDS(c.ID)
	if err != nil {
		return nil, err
	}
	if sds.State == c.State {
		return sds, nil // already there: a repeated drill is not an error
	}
	if sds.State == SDSMaintenance {
		if c.State != SDSFailed {
			return nil, conflict("SDS %q is in maintenance: exit maintenance to bring it back", sds.Name)
		}
		// Failed during maintenance: its copies are given up, its chunks rebuilt elsewhere.
		if err := t.endMaintenance(h, c.ID, false); err != nil {
			return nil, err
		}
	}
	switch {
	case c.State == SDSDown || c.State == SDSFailed:
		if sds.State == SDSUp {
			if err := t.excludeSDS(h, c.ID); err != nil {
				return nil, err
			}
		}
	default: // up again, from down or failed
		if err := t.readmitSDS(c.ID); err != nil {
			return nil, err
		}
	}
	if _, err := t.exec(`UPDATE sds SET state = ?, state_changed_at = ? WHERE id = ?`, c.State, h.Time, c.ID); err != nil {
		return nil, err
	}
	return r.SDS(c.ID)
}

func applyRemoveSDS(t *applyTx, _ Header, c *RemoveSDS) (any, error) {
	sds, err := t.reader().SDS(c.ID)
	if err != nil {
		return nil, err
	}
	if _, err := t.exec(`DELETE FROM sds WHERE id = ?`, c.ID); err != nil {
		return nil, err
	}
	return sds, nil
}

func applyAddSDC(t *applyTx, h Header, c *AddSDC) (any, error) {
	if err := t.uniqueName("sdc", "SDC", c.Name); err != nil {
		return nil, err
	}
	addr := strings.TrimSpace(c.Address)
	if err := validAddress("address", addr); err != nil {
		return nil, err
	}
	id, err := t.insert(`INSERT INTO sdc(name, address, state, created_at) VALUES (?, ?, ?, ?)`, c.Name, addr, SDSUp, h.Time)
	if err != nil {
		return nil, err
	}
	return t.reader().SDC(id)
}

func applyRemoveSDC(t *applyTx, _ Header, c *RemoveSDC) (any, error) {
	r := t.reader()
	sdc, err := r.SDC(c.ID)
	if err != nil {
		return nil, err
	}
	n, err := r.count(`SELECT COUNT(*) FROM mappings WHERE sdc_id = ?`, c.ID)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		return nil, conflict("SDC %q still has %d volumes mapped; unmap them first", sdc.Name, n)
	}
	if _, err := t.exec(`DELETE FROM sdc WHERE id = ?`, c.ID); err != nil {
		return nil, err
	}
	return sdc, nil
}

func applyUpsertMDM(t *applyTx, _ Header, c *UpsertMDM) (any, error) {
	if c.ID == "" {
		return nil, invalid("MDM node id is required")
	}
	if c.RaftAddr == "" || c.APIAddr == "" {
		return nil, invalid("MDM %q needs raft_addr and api_addr", c.ID)
	}
	if err := validAddress("raft_addr", c.RaftAddr); err != nil {
		return nil, err
	}
	if err := validAddress("api_addr", c.APIAddr); err != nil {
		return nil, err
	}
	if _, err := t.exec(`INSERT OR REPLACE INTO mdm_nodes(id, raft_addr, api_addr) VALUES (?, ?, ?)`,
		c.ID, c.RaftAddr, c.APIAddr); err != nil {
		return nil, err
	}
	return MDMNode(*c), nil
}

func applyRemoveMDM(t *applyTx, _ Header, c *RemoveMDM) (any, error) {
	if _, err := t.exec(`DELETE FROM mdm_nodes WHERE id = ?`, c.ID); err != nil {
		return nil, err
	}
	return map[string]string{"removed": c.ID}, nil
}
