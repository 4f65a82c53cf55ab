// Package ports picks loopback ports for test and chaos clusters. They come from below the
// kernel's ephemeral range, so the outgoing connections of processes already running (raft,
// gossip, HTTP clients) can never have taken one between the pick and its use — the race that
// asking the kernel for port 0 leaves open.
//
// A port is free when picked but is bound only later, by a process still starting; so the
// package never hands a port out twice in one process (not until `remember` more have been
// handed out since), or two components picked a moment apart could be given the same port.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

const (
	low  = 20000
	high = 32000 // the Linux ephemeral range starts at 32768

	// remember is how many of the latest handed-out ports a pick avoids: most of the range,
	// leaving room for ports other processes hold.
	remember = 8000
)

var (
	mu     sync.Mutex
	given  = map[int]bool{}
	recent []int // handed out, oldest first
)

// Pick returns n distinct free loopback ports below the ephemeral range, none of which this
// process has been given recently.
func Pick(n int) ([]int, error) {
	mu.Lock()
	defer mu.Unlock()
	seen := map[int]bool{}
	var out []int
	for tries := 0; len(out) < n; tries++ {
		if tries > 100*n+1000 {
			return nil, fmt.Errorf("ports: no %d free ports in %d-%d", n, low, high)
		}
		p := low + rand.IntN(high-low)
		if seen[p] || given[p] {
			continue
		}
		seen[p] = true
		if free(p) {
			out = append(out, p)
		}
	}
	for _, p := range out {
		given[p] = true
		recent = append(recent, p)
	}
	for len(recent) > remember {
		delete(given, recent[0])
		recent = recent[1:]
	}
	return out, nil
}

// free reports whether p can be bound on loopback for TCP and for UDP (gossip uses both).
func free(p int) bool {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		return false
	}
	ln.Close()
	pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		return false
	}
	pc.Close()
	return true
}
