package sds

import (
	"maps"
	"testing"

	"pflex/gossip"
)

// Only the other SDSs gossip lists alive or suspect are probed: not MDMs, SDCs or the SDS itself.
func TestPeerTargets(t *testing.T) {
	members := []gossip.Member{
		{Name: "sds-1", State: gossip.StateAlive, Meta: gossip.Meta{Caps: []string{gossip.CapSDS}, Data: "a1"}},
		{Name: "sds-2", State: gossip.StateAlive, Meta: gossip.Meta{Caps: []string{gossip.CapSDS}, Data: "a2"}},
		{Name: "sds-3", State: gossip.StateSuspect, Meta: gossip.Meta{Caps: []string{gossip.CapSDS}, Data: "a3"}},
		{Name: "sds-4", State: gossip.StateDead, Meta: gossip.Meta{Caps: []string{gossip.CapSDS}, Data: "a4"}},
		{Name: "sdc-1", State: gossip.StateAlive, Meta: gossip.Meta{Caps: []string{gossip.CapSDC}, Data: "c1"}},
		{Name: "mdm-1", State: gossip.StateAlive, Meta: gossip.Meta{Caps: []string{"MDM"}, Data: "m1"}},
	}
	got := peerTargets("sds-1", func() []gossip.Member { return members })
	if want := map[string]string{"sds-2": "a2", "sds-3": "a3"}; !maps.Equal(got, want) {
		t.Fatalf("targets %v, want %v", got, want)
	}
	if got := peerTargets("sds-1", nil); len(got) != 0 {
		t.Fatalf("before the agent runs: %v", got)
	}
}
