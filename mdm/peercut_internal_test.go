package mdm

import "testing"

func TestPeerCutVictim(t *testing.T) {
	live := map[string]bool{"sds-1": true, "sds-2": true, "sds-3": true, "sds-4": true}
	for _, tc := range []struct {
		name    string
		reports map[string][]string
		want    string
	}{
		{"nobody cut", map[string][]string{}, ""},
		{"one SDS cut from all its peers", map[string][]string{"sds-1": {"sds-3"}, "sds-2": {"sds-3"}, "sds-4": {"sds-3"}, "sds-3": {"sds-1", "sds-2", "sds-4"}}, "sds-3"},
		{"one link: a tie goes to the greater id", map[string][]string{"sds-1": {"sds-2"}, "sds-2": {"sds-1"}}, "sds-2"},
		{"one direction: a tie", map[string][]string{"sds-4": {"sds-1"}}, "sds-4"},
		{"reaches no one, reached by all", map[string][]string{"sds-1": {"sds-2", "sds-3", "sds-4"}}, "sds-1"},
		{"reports of an SDS that is not live are ignored", map[string][]string{"sds-9": {"sds-1"}}, ""},
		{"an SDS that is not live is not picked", map[string][]string{"sds-1": {"sds-9"}}, ""},
		{"an SDS naming itself is ignored", map[string][]string{"sds-1": {"sds-1"}}, ""},
		{"an SDC's report is shown, not acted on", map[string][]string{"sdc-1": {"sds-2"}}, ""},
	} {
		if got := peerCutVictim(tc.reports, live); got != tc.want {
			t.Errorf("%s: victim %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestPeerCutHeld(t *testing.T) {
	live := map[string]bool{"sds-1": true, "sds-2": true}
	reports := map[string][]string{"sds-3": {"sds-1"}}
	if !peerCutHeld("sds-3", reports, live) {
		t.Fatal("sds-3 still names a live peer: held")
	}
	if peerCutHeld("sds-3", map[string][]string{"sds-3": {"sds-9"}}, live) {
		t.Fatal("sds-3 names only an SDS that is not live: not held")
	}
	if !peerCutHeld("sds-3", map[string][]string{"sds-2": {"sds-3"}}, live) {
		t.Fatal("a live peer names sds-3: held")
	}
	if peerCutHeld("sds-3", map[string][]string{"sds-9": {"sds-3"}}, live) {
		t.Fatal("only an SDS that is not live names sds-3: not held")
	}
}
