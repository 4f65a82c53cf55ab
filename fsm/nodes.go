package fsm

import (
	"encoding/json"
	"sort"
	"strings"
)

// Commands of the discovery registry: components register themselves and the leader commits
// their liveness.

// RegisterNode records (or refreshes) a component and the SDS / SDC objects its capabilities
// make it. Registration is idempotent: the same node registering again updates its addresses.
type RegisterNode struct {
	ID           string           `json:"id"`
	Capabilities []string         `json:"capabilities"`
	Version      string           `json:"version"`
	APIAddr      string           `json:"api_addr"`
	MgmtAddr     string           `json:"mgmt_addr"`
	DataAddr     string           `json:"data_addr"`
	NBDAddr      string           `json:"nbd_addr"`
	GossipAddr   string           `json:"gossip_addr"`
	SDS          *SDSRegistration `json:"sds,omitempty"`
}

// SDSRegistration is what an SDS-capable node contributes.
type SDSRegistration struct {
	ProtectionDomain string  `json:"protection_domain"`
	FaultSet         string  `json:"fault_set"`
	Devices          Devices `json:"devices"`
	TotalCapacityGB  int64   `json:"total_capacity_gb"`
}

// Registration is the answer to a registration.
type Registration struct {
	Node  Node  `json:"node"`
	SDSID int64 `json:"sds_id"`
	SDCID int64 `json:"sdc_id"`
}

// SetNodeState commits a node's liveness (up/down) as the leader judged it, and carries it to
// the node's SDS and SDC. An SDS an operator failed stays failed.
type SetNodeState struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

const (
	TypeRegisterNode CommandType = 22
	TypeSetNodeState CommandType = 23
)

func (*RegisterNode) Type() CommandType { return TypeRegisterNode }
func (*SetNodeState) Type() CommandType { return TypeSetNodeState }

func init() {
	register("register_node", applyRegisterNode)
	register("set_node_state", applySetNodeState)
}

var knownCaps = map[string]bool{CapMDM: true, CapSDS: true, CapSDC: true, CapMGMT: true}

func joinCaps(caps []string) string {
	c := append([]string(nil), caps...)
	sort.Strings(c)
	return strings.Join(c, ",")
}

func splitCaps(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, ",")
}

func applyRegisterNode(t *applyTx, h Header, c *RegisterNode) (any, error) {
	if err := validName("node", c.ID); err != nil {
		return nil, err
	}
	caps := map[string]bool{}
	for _, cp := range c.Capabilities {
		if !knownCaps[cp] {
			return nil, invalid("capability %q is not one of MDM, SDS, SDC, MGMT", cp)
		}
		caps[cp] = true
	}
	if len(caps) == 0 {
		return nil, invalid("node %q registers no capability", c.ID)
	}
	var list []string
	for cp := range caps {
		list = append(list, cp)
	}
	for field, addr := range map[string]string{"api_addr": c.APIAddr, "mgmt_addr": c.MgmtAddr, "data_addr": c.DataAddr,
		"nbd_addr": c.NBDAddr, "gossip_addr": c.GossipAddr} {
		if err := validAddress(field, addr); err != nil {
			return nil, err
		}
	}
	if caps[CapSDS] && c.SDS == nil {
		return nil, invalid("node %q has the SDS capability but sent no sds section", c.ID)
	}
	if !caps[CapSDS] && c.SDS != nil {
		return nil, invalid("node %q sent an sds section without the SDS capability", c.ID)
	}
	r := t.reader()
	reg := Registration{}
	if caps[CapSDS] {
		id, err := t.registerSDS(r, h, c)
		if err != nil {
			return nil, err
		}
		reg.SDSID = id
	}
	if caps[CapSDC] {
		id, err := t.registerSDC(r, h, c)
		if err != nil {
			return nil, err
		}
		reg.SDCID = id
	}
	if _, err := t.exec(`INSERT INTO nodes(id, capabilities, version, api_addr, mgmt_addr, data_addr, nbd_addr, gossip_addr, state, registered_at, state_changed_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'up', ?, ?)
		ON CONFLICT(id) DO UPDATE SET capabilities = excluded.capabilities, version = excluded.version,
			api_addr = excluded.api_addr, mgmt_addr = excluded.mgmt_addr, data_addr = excluded.data_addr,
			nbd_addr = excluded.nbd_addr, gossip_addr = excluded.gossip_addr,
			state_changed_at = CASE WHEN nodes.state = 'up' THEN nodes.state_changed_at ELSE excluded.state_changed_at END,
			state = 'up'`,
		c.ID, joinCaps(list), c.Version, c.APIAddr, c.MgmtAddr, c.DataAddr, c.NBDAddr, c.GossipAddr, h.Time, h.Time); err != nil {
		return nil, err
	}
	n, err := r.Node(c.ID)
	if err != nil {
		return nil, err
	}
	reg.Node = n
	return reg, nil
}

// registerSDS creates the node's SDS, or refreshes it (a registration also means "I am alive").
func (t *applyTx) registerSDS(r *Reader, h Header, c *RegisterNode) (int64, error) {
	s := c.SDS
	if err := validCapacity("sds.total_capacity_gb", s.TotalCapacityGB); err != nil {
		return 0, err
	}
	devices := cleanDevices(s.Devices)
	if len(devices) == 0 {
		return 0, invalid("SDS %q needs at least one device", c.ID)
	}
	if c.DataAddr == "" {
		return 0, invalid("SDS %q needs a data_addr", c.ID)
	}
	pd, err := one(r, scanPD, "protection domain", "\""+s.ProtectionDomain+"\"", `SELECT `+pdCols+` FROM protection_domains WHERE name = ?`, s.ProtectionDomain)
	if err != nil {
		if e, ok := AsError(err); ok && e.Kind == KindNotFound {
			return 0, notFound("protection domain %q not found; create it with `pflex pd create %s`", s.ProtectionDomain, s.ProtectionDomain)
		}
		return 0, err
	}
	var fsID *int64
	if s.FaultSet != "" {
		fs, err := one(r, scanFaultSet, "fault set", "\""+s.FaultSet+"\"", `SELECT `+fsCols+` FROM fault_sets WHERE name = ?`, s.FaultSet)
		if err != nil {
			return 0, err
		}
		if fs.PDID != pd.ID {
			return 0, invalid("fault set %q belongs to protection domain %d, not %q", fs.Name, fs.PDID, pd.Name)
		}
		fsID = &fs.ID
	}
	devJSON, _ := json.Marshal(devices)
	existing, found, err := r.sdsByNode(c.ID)
	if err != nil {
		return 0, err
	}
	if found {
		if existing.ProtectionDomainID != pd.ID {
			return 0, conflict("SDS %q is in protection domain %d; it cannot move to %q by registering", existing.Name, existing.ProtectionDomainID, pd.Name)
		}
		state, changed := existing.State, existing.StateChangedAt
		if state == SDSDown {
			state, changed = SDSUp, h.Time
			if err := t.readmitSDS(existing.ID); err != nil {
				return 0, err
			}
		}
		_, err := t.exec(`UPDATE sds SET node_id = ?, fault_set_id = ?, address = ?, devices = ?, total_capacity_gb = ?, state = ?, state_changed_at = ? WHERE id = ?`,
			c.ID, fsID, c.DataAddr, string(devJSON), s.TotalCapacityGB, state, changed, existing.ID)
		return existing.ID, err
	}
	if err := t.uniqueName("sds", "SDS", c.ID); err != nil {
		return 0, err
	}
	return t.insert(`INSERT INTO sds(name, pd_id, fault_set_id, address, devices, total_capacity_gb, state, state_changed_at, created_at, node_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, c.ID, pd.ID, fsID, c.DataAddr, string(devJSON), s.TotalCapacityGB, SDSUp, h.Time, h.Time, c.ID)
}

func (t *applyTx) registerSDC(r *Reader, h Header, c *RegisterNode) (int64, error) {
	existing, found, err := r.sdcByNode(c.ID)
	if err != nil {
		return 0, err
	}
	if found {
		_, err := t.exec(`UPDATE sdc SET node_id = ?, address = ?, state = 'up' WHERE id = ?`, c.ID, c.NBDAddr, existing.ID)
		return existing.ID, err
	}
	if err := t.uniqueName("sdc", "SDC", c.ID); err != nil {
		return 0, err
	}
	return t.insert(`INSERT INTO sdc(name, address, state, created_at, node_id) VALUES (?, ?, 'up', ?, ?)`, c.ID, c.NBDAddr, h.Time, c.ID)
}

func applySetNodeState(t *applyTx, h Header, c *SetNodeState) (any, error) {
	if c.State != NodeUp && c.State != NodeDown {
		return nil, invalid("node state %q is not up or down", c.State)
	}
	r := t.reader()
	n, err := r.Node(c.ID)
	if err != nil {
		return nil, err
	}
	if n.State == c.State {
		return n, nil
	}
	if _, err := t.exec(`UPDATE nodes SET state = ?, state_changed_at = ? WHERE id = ?`, c.State, h.Time, c.ID); err != nil {
		return nil, err
	}
	from, to := SDSUp, SDSDown
	if c.State == NodeUp {
		from, to = SDSDown, SDSUp
	}
	if c.State == NodeUp {
		ids, err := r.sdsIDsOfNode(c.ID, SDSDown)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			if err := t.readmitSDS(id); err != nil {
				return nil, err
			}
		}
	}
	if c.State == NodeDown {
		// The SDS leaves the replica sets of every layout in the same entry that marks it down:
		// its chunks go on, degraded, on their other copy under a new epoch.
		ids, err := r.sdsIDsOfNode(c.ID, SDSUp)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			if err := t.excludeSDS(h, id); err != nil {
				return nil, err
			}
		}
	}
	if _, err := t.exec(`UPDATE sds SET state = ?, state_changed_at = ? WHERE node_id = ? AND state = ?`, to, h.Time, c.ID, from); err != nil {
		return nil, err
	}
	if _, err := t.exec(`UPDATE sdc SET state = ? WHERE node_id = ?`, c.State, c.ID); err != nil {
		return nil, err
	}
	return r.Node(c.ID)
}
