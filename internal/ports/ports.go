// Package ports picks loopback ports for test and chaos clusters. They come from below the
// kernel's ephemeral range, so the outgoing connections of processes already running (raft,
// gossip, HTTP clients) can never have taken one between the pick and its use — the race that
// asking the kernel for port 0 leaves open.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
)

const (
	low  = 20000
	high = 32000 // the Linux ephemeral range starts at 32768
)

// Pick returns n distinct free loopback ports below the ephemeral range.
func Pick(n int) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for tries := 0; len(out) < n; tries++ {
		if tries > 100*n+1000 {
			return nil, fmt.Errorf("ports: no %d free ports in %d-%d", n, low, high)
		}
		p := low + rand.IntN(high-low)
		if seen[p] {
			continue
		}
		seen[p] = true
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		// Gossip also binds UDP on the same port.
		if pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			pc.Close()
			out = append(out, p)
		}
	}
	return out, nil
}
