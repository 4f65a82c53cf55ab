package fsm

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The object model as the API returns it. JSON names follow the user's prototype (seeds/).
// Times are Unix milliseconds stamped by the leader that proposed the change.

type ProtectionDomain struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	CreatedAt int64  `json:"created_at"`
}

type FaultSet struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	PDID      int64  `json:"pd_id"`
	CreatedAt int64  `json:"created_at"`
}

type Pool struct {
	ID               int64  `json:"id"`
	Name             string `json:"name"`
	PDID             int64  `json:"pd_id"`
	ProtectionPolicy string `json:"protection_policy"`
	TotalCapacityGB  int64  `json:"total_capacity_gb"`
	ChunkSizeMB      int64  `json:"chunk_size_mb"`
	// ThickReservedGB is the capacity promised to thick volumes; it can never exceed the total.
	ThickReservedGB int64 `json:"thick_reserved_gb"`
	ProvisionedGB   int64 `json:"provisioned_gb"`
	VolumeCount     int64 `json:"volume_count"`
	CreatedAt       int64 `json:"created_at"`
}

// SDS states.
const (
	SDSUp     = "up"
	SDSDown   = "down"   // detected dead (gossip / missed heartbeats)
	SDSFailed = "failed" // failed by an operator (drill)
	// SDSMaintenance: a planned outage (POST /sds/{id}/maintenance/enter): out of the replica
	// sets without a rebuild, its copies kept and re-synced (the delta) on exit.
	SDSMaintenance = "maintenance"
)

type SDS struct {
	ID                 int64   `json:"id"`
	Name               string  `json:"name"`
	ProtectionDomainID int64   `json:"protection_domain_id"`
	FaultSetID         *int64  `json:"fault_set_id"`
	Address            string  `json:"address"`
	Devices            Devices `json:"devices"`
	TotalCapacityGB    int64   `json:"total_capacity_gb"`
	State              string  `json:"state"`
	StateChangedAt     int64   `json:"state_changed_at"`
	CreatedAt          int64   `json:"created_at"`
	NodeID             string  `json:"node_id,omitempty"` // the registered node serving it
}

type SDC struct {
	ID        int64  `json:"id"`
	Name      string `json:"name"`
	Address   string `json:"address"`
	State     string `json:"state"`
	CreatedAt int64  `json:"created_at"`
	NodeID    string `json:"node_id,omitempty"`
}

// Node capabilities (the prototype's capability model: one node may carry several).
const (
	CapMDM  = "MDM"
	CapSDS  = "SDS"
	CapSDC  = "SDC"
	CapMGMT = "MGMT"
)

// Node liveness as committed by the leader.
const (
	NodeUp   = "up"
	NodeDown = "down"
)

// Node is a component that registered itself with the MDM.
type Node struct {
	ID             string   `json:"id"`
	Capabilities   []string `json:"capabilities"`
	Version        string   `json:"version"`
	APIAddr        string   `json:"api_addr"`
	MgmtAddr       string   `json:"mgmt_addr"`
	DataAddr       string   `json:"data_addr"`
	NBDAddr        string   `json:"nbd_addr"`
	GossipAddr     string   `json:"gossip_addr"`
	State          string   `json:"state"`
	RegisteredAt   int64    `json:"registered_at"`
	StateChangedAt int64    `json:"state_changed_at"`
}

// Has reports whether the node carries a capability.
func (n Node) Has(capability string) bool {
	for _, c := range n.Capabilities {
		if c == capability {
			return true
		}
	}
	return false
}

// Provisioning and access modes.
const (
	Thin      = "thin"
	Thick     = "thick"
	ReadWrite = "readWrite"
	ReadOnly  = "readOnly"
	TwoCopies = "two_copies"
)

type Volume struct {
	ID            int64     `json:"id"`
	Name          string    `json:"name"`
	PoolID        int64     `json:"pool_id"`
	SizeGB        int64     `json:"size_gb"`
	Provisioning  string    `json:"provisioning"`
	MapGeneration int64     `json:"map_generation"`
	CreatedAt     int64     `json:"created_at"`
	Mappings      []Mapping `json:"mappings"`
}

type Mapping struct {
	VolumeID           int64  `json:"volume_id"`
	SDCID              int64  `json:"sdc_id"`
	AccessMode         string `json:"access_mode"`
	IOPSLimit          int64  `json:"iops_limit"`
	BandwidthLimitMBps int64  `json:"bandwidth_limit_mbps"`
	Generation         int64  `json:"generation"`
	CreatedAt          int64  `json:"created_at"`
}

type Label struct {
	VolumeID  int64  `json:"volume_id"`
	Key       string `json:"key"`
	Value     string `json:"value"`
	Version   int64  `json:"version"`
	UpdatedAt int64  `json:"updated_at"`
}

// MDMNode is an MDM replica as the FSM knows it: enough to forward a request to it.
type MDMNode struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
}

// Counts summarizes the object model for `pflex status`.
type Counts struct {
	ProtectionDomains int64 `json:"protection_domains"`
	FaultSets         int64 `json:"fault_sets"`
	Pools             int64 `json:"pools"`
	SDS               int64 `json:"sds"`
	SDSUp             int64 `json:"sds_up"`
	SDC               int64 `json:"sdc"`
	Volumes           int64 `json:"volumes"`
	Mappings          int64 `json:"mappings"`
}

// Devices is an SDS's device list. The prototype sent one comma-separated string ("blk0"),
// so both a string and a JSON array are accepted.
type Devices []string

func (d *Devices) UnmarshalJSON(b []byte) error {
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		*d = cleanDevices(list)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("devices: want a string or a list of strings")
	}
	*d = cleanDevices(strings.Split(s, ","))
	return nil
}

func (d Devices) MarshalJSON() ([]byte, error) {
	if d == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]string(d))
}

func cleanDevices(in []string) Devices {
	out := Devices{}
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
