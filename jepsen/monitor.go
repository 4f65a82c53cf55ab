package jepsen

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"
)

// Observation is one poll of one node's /cluster/status.
type Observation struct {
	T       int64  `json:"t_ns"`
	Node    string `json:"node"`
	State   string `json:"state"`
	Term    uint64 `json:"term"`
	Leader  string `json:"leader_id,omitempty"`
	Applied uint64 `json:"applied_index"`
}

// StatusMonitor polls every node's status every interval and keeps who claimed leadership in
// which term. Changes of (state, term, leader) are written to a JSON-lines file.
type StatusMonitor struct {
	c        Cluster
	h        *History
	interval time.Duration

	mu      sync.Mutex
	leaders map[uint64]map[string]int64 // term -> node -> first time it said it was leader
	polls   int
	last    map[string]Observation
	w       *bufio.Writer
	f       *os.File
}

// NewStatusMonitor prepares a monitor; path (if not empty) receives the observations that
// changed something.
func NewStatusMonitor(c Cluster, h *History, interval time.Duration, path string) (*StatusMonitor, error) {
	m := &StatusMonitor{c: c, h: h, interval: interval, leaders: map[uint64]map[string]int64{}, last: map[string]Observation{}}
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return nil, err
		}
		m.f, m.w = f, bufio.NewWriter(f)
	}
	return m, nil
}

// Run polls until ctx is done; each node is polled by its own goroutine so a paused node does
// not delay the others.
func (m *StatusMonitor) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range m.c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(m.interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if m.c.State(i) != NodeRunning {
					continue
				}
				st, err := m.c.Status(ctx, i)
				if err != nil {
					continue
				}
				m.Observe(Observation{T: m.h.Now(), Node: st.NodeID, State: st.State, Term: st.Term, Leader: st.LeaderID, Applied: st.AppliedIndex})
			}
		}()
	}
	wg.Wait()
}

// Observe records one observation.
func (m *StatusMonitor) Observe(o Observation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.polls++
	if o.State == "leader" {
		if m.leaders[o.Term] == nil {
			m.leaders[o.Term] = map[string]int64{}
		}
		if _, ok := m.leaders[o.Term][o.Node]; !ok {
			m.leaders[o.Term][o.Node] = o.T
		}
	}
	prev, ok := m.last[o.Node]
	m.last[o.Node] = o
	if m.w != nil && (!ok || prev.State != o.State || prev.Term != o.Term || prev.Leader != o.Leader) {
		b, _ := json.Marshal(o)
		m.w.Write(append(b, '\n'))
	}
}

// Close flushes the observation file.
func (m *StatusMonitor) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.f == nil {
		return nil
	}
	m.w.Flush()
	err := m.f.Close()
	m.f = nil
	return err
}

// Check reports a violation when two nodes claimed leadership in the same term.
func (m *StatusMonitor) Check() CheckResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	res := CheckResult{Name: "one leader per term (status polled every " + m.interval.String() + ")", Valid: true}
	var terms []uint64
	for t := range m.leaders {
		terms = append(terms, t)
	}
	sort.Slice(terms, func(i, j int) bool { return terms[i] < terms[j] })
	for _, t := range terms {
		if len(m.leaders[t]) > 1 {
			res.Valid = false
			res.Details = append(res.Details, fmt.Sprintf("term %d: leaders %v (node -> first seen, ns)", t, m.leaders[t]))
		}
	}
	res.Summary = fmt.Sprintf("%d polls, %d terms with a leader observed", m.polls, len(terms))
	if !res.Valid {
		res.Summary += fmt.Sprintf(", %d terms with two leaders", len(res.Details))
	}
	return res
}

// CheckConverged waits (up to timeout) until every node reports the same applied index and
// fsm index, then compares their digests. Different digests at the same index is a violation;
// never reaching the same index is one too (replicas stuck apart).
func CheckConverged(ctx context.Context, c Cluster, timeout time.Duration) CheckResult {
	res := CheckResult{Name: "replica digests equal after recovery"}
	deadline := time.Now().Add(timeout)
	var last []string
	for {
		last = last[:0]
		var first *Observation
		var digest string
		var fsmIndex uint64
		same, all := true, true
		for i, n := range c.Nodes() {
			st, err := c.Status(ctx, i)
			if err != nil {
				all = false
				last = append(last, fmt.Sprintf("%s: %v", n.ID, err))
				continue
			}
			last = append(last, fmt.Sprintf("%s: applied %d fsm_index %d digest %s", st.NodeID, st.AppliedIndex, st.FSMIndex, st.Digest))
			if first == nil {
				first = &Observation{Applied: st.AppliedIndex}
				digest, fsmIndex = st.Digest, st.FSMIndex
				continue
			}
			if st.AppliedIndex != first.Applied || st.FSMIndex != fsmIndex {
				same = false
			} else if st.Digest != digest {
				res.Summary = fmt.Sprintf("DIVERGED: same applied index %d, different digests", st.AppliedIndex)
				res.Details = append([]string(nil), last...)
				return res
			}
		}
		if all && same && first != nil {
			res.Valid = true
			res.Summary = fmt.Sprintf("%d replicas at applied index %d, digest %s", len(c.Nodes()), first.Applied, digest)
			res.Details = append([]string(nil), last...)
			return res
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			res.Summary = fmt.Sprintf("replicas did not reach the same applied index within %s", timeout)
			res.Details = append([]string(nil), last...)
			return res
		}
		time.Sleep(200 * time.Millisecond)
	}
}
