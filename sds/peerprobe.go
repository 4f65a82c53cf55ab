package sds

import (
	"slices"

	"pflex/gossip"
)

// Peer probes. A broken link between two SDSs that both still heartbeat the MDMs would stall
// the writes of every chunk they share for as long as it lasts: each forward times out and is
// answered Retry, and nothing tells the MDMs. So an SDS probes the data address of every other
// SDS gossip knows (alive or suspect) with a reach.Prober, and its heartbeats name the peers it
// failed to reach twice in a row. The MDM leader takes one SDS of a pair that cannot reach each
// other out (mdm/DESIGN.md "Peer cuts"). A peer gossip no longer lists is forgotten: its down is
// the MDMs' own business.

// peerTargets lists the other SDSs of members (nil until the agent runs) by id, with their data
// addresses.
func peerTargets(self string, members func() []gossip.Member) map[string]string {
	peers := map[string]string{}
	if members == nil {
		return peers
	}
	for _, m := range members() {
		if m.Name != self && m.IsAlive() && m.Meta.Data != "" && slices.Contains(m.Meta.Caps, gossip.CapSDS) {
			peers[m.Name] = m.Meta.Data
		}
	}
	return peers
}
