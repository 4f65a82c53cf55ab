package ports

import "testing"

// Ports picked but not yet bound are not handed out again: components picked a moment apart
// (an SDS still starting when the next one's ports are chosen) never share one.
func TestPickNeverRepeatsUnboundPorts(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		ps, err := Pick(8)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p < low || p >= high {
				t.Fatalf("port %d outside %d-%d", p, low, high)
			}
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
		}
	}
}

// The memory is bounded: after the range has been cycled through, old ports come back.
func TestPickForgetsOldPorts(t *testing.T) {
	for range 2 * (high - low) / 100 {
		if _, err := Pick(100); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(given) > remember || len(recent) > remember {
		t.Fatalf("remembers %d/%d ports, cap %d", len(given), len(recent), remember)
	}
}
