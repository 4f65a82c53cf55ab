package gossip

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/hashicorp/memberlist"
)

// Capabilities a node advertises in Meta.Caps.
const (
	CapMDM  = "MDM"
	CapSDS  = "SDS"
	CapSDC  = "SDC"
	CapMGMT = "MGMT"
)

// MetaMaxSize is the largest encoded Meta memberlist will carry.
const MetaMaxSize = memberlist.MetaMaxSize

// Meta is a node's metadata, carried as JSON in memberlist node meta.
type Meta struct {
	ID      string   `json:"id"`
	Caps    []string `json:"caps"`
	Version string   `json:"v,omitempty"`
	API     string   `json:"api,omitempty"`    // HTTP API / control address host:port
	Mgmt    string   `json:"mgmt,omitempty"`   // management address host:port
	Raft    string   `json:"raft,omitempty"`   // MDM only: raft address
	Data    string   `json:"data,omitempty"`   // SDS data port
	NBD     string   `json:"nbd,omitempty"`    // SDC NBD port
	Leader  bool     `json:"ldr,omitempty"`    // MDM: this node is the raft leader
	Term    uint64   `json:"term,omitempty"`   // MDM: raft term of that leadership / current term
	Fresh   bool     `json:"fresh,omitempty"`  // MDM: raft log is empty (bootstrap_expect uses it)
	Expect  int      `json:"expect,omitempty"` // MDM: its bootstrap_expect
	// Leaving is set by Pool.Leave just before memberlist's leave, so that peers can
	// tell a graceful leave ("left") from a failure ("dead").
	Leaving bool `json:"leaving,omitempty"`
}

// Has reports whether the node advertises capability c.
func (m Meta) Has(c string) bool { return slices.Contains(m.Caps, c) }

// clone returns a copy that shares no slice with m.
func (m Meta) clone() Meta {
	m.Caps = slices.Clone(m.Caps)
	return m
}

// encodeMeta returns the wire form of m, or ErrMetaTooLarge naming the size.
func encodeMeta(m Meta) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("gossip: encode meta: %w", err)
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit is %d", ErrMetaTooLarge, len(b), MetaMaxSize)
	}
	return b, nil
}

// decodeMeta parses a peer's meta. Foreign or empty meta is an error; callers keep the
// node with an empty Meta.
func decodeMeta(b []byte) (Meta, error) {
	if len(b) == 0 {
		return Meta{}, fmt.Errorf("empty node meta")
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, err
	}
	return m, nil
}
