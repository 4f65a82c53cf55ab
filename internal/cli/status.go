package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
)

// statusTimeout bounds the wait for one replica in `pflex status`: a paused or partitioned
// MDM must show up as unreachable quickly, not hold the whole report.
const statusTimeout = 3 * time.Second

// replicaReport is one MDM replica as `pflex status` saw it.
type replicaReport struct {
	NodeID    string          `json:"node_id"`
	APIAddr   string          `json:"api_addr"`
	Suffrage  string          `json:"suffrage,omitempty"`
	Member    bool            `json:"member"` // in the Raft configuration
	Reachable bool            `json:"reachable"`
	Status    json.RawMessage `json:"status,omitempty"`
	Error     string          `json:"error,omitempty"`

	st  *api.ClusterStatus
	via string // the endpoint that answered: the advertised APIAddr may not resolve from here
}

type statusAnswer struct {
	st  *api.ClusterStatus
	raw json.RawMessage
	err error
	ep  string // the endpoint asked
}

func statusVerb() verb {
	return verb{path: "status", summary: "cluster health: quorum, every MDM replica's view, digests, object counts, pool health and rebuild progress",
		maxArgs: 0,
		define: func(fs *flag.FlagSet) runFunc {
			return func(ctx context.Context, s *session, _ []string) error {
				reps := s.surveyReplicas(ctx)
				var pools []poolHealth
				var poolsErr error
				if l := leaderOf(reps); l != nil {
					pools, poolsErr = s.poolHealths(ctx, l)
				}
				if s.json {
					if err := encodeJSON(s.stdout, map[string]any{"replicas": reps, "pools": healthJSON(pools, poolsErr)}); err != nil {
						return err
					}
				} else {
					renderStatus(s, reps)
					fmt.Fprintln(s.stdout, poolsLine(pools, poolsErr))
				}
				for _, r := range reps {
					if r.Reachable {
						return nil
					}
				}
				return errors.New("no MDM replica is reachable")
			}
		}}
}

// surveyReplicas asks every configured endpoint for its own view (?stale=1, no forwarding,
// no leader following), learns the Raft configuration from the best answer, then asks the
// members not reached yet. Every member appears once, reachable or not.
func (s *session) surveyReplicas(ctx context.Context) []*replicaReport {
	endpoints := s.api.Endpoints()
	answers := s.fetchStatuses(ctx, endpoints)

	var config *api.ClusterStatus // the answer whose peer list we trust
	for _, ep := range endpoints {
		a := answers[ep]
		if a.st != nil && (config == nil || betterView(a.st, config)) {
			config = a.st
		}
	}
	if config == nil {
		var out []*replicaReport
		for _, ep := range endpoints {
			out = append(out, &replicaReport{APIAddr: hostPort(ep), Member: true, Error: reason(answers[ep].err)})
		}
		return out
	}

	byNode := map[string]statusAnswer{}
	for _, ep := range endpoints {
		if a := answers[ep]; a.st != nil {
			byNode[a.st.NodeID] = a
		}
	}
	var missing []string
	for _, p := range config.Peers {
		if _, ok := byNode[p.ID]; ok {
			continue
		}
		ep, err := api.NormalizeEndpoint(p.APIAddr)
		if err != nil || p.APIAddr == "" {
			continue
		}
		if _, asked := answers[ep]; !asked {
			missing = append(missing, ep)
		}
	}
	for ep, a := range s.fetchStatuses(ctx, missing) {
		answers[ep] = a
		if a.st != nil {
			byNode[a.st.NodeID] = a
		}
	}

	var out []*replicaReport
	members := map[string]bool{}
	for _, p := range config.Peers {
		members[p.ID] = true
		r := &replicaReport{NodeID: p.ID, APIAddr: p.APIAddr, Suffrage: p.Suffrage, Member: true}
		a, ok := byNode[p.ID]
		if !ok {
			ep, _ := api.NormalizeEndpoint(p.APIAddr)
			a = answers[ep]
		}
		r.fill(a)
		out = append(out, r)
	}
	// Replicas that answered but are not in the configuration (removed, or a split brain of
	// configurations) are worth seeing too.
	for _, ep := range endpoints {
		if a := answers[ep]; a.st != nil && !members[a.st.NodeID] {
			members[a.st.NodeID] = true
			r := &replicaReport{NodeID: a.st.NodeID, APIAddr: hostPort(ep)}
			r.fill(a)
			out = append(out, r)
		}
	}
	if len(config.Peers) == 0 { // a replica that knows no configuration yet
		out = out[:0]
		for _, ep := range endpoints {
			r := &replicaReport{APIAddr: hostPort(ep), Member: true}
			if a := answers[ep]; a.st != nil {
				r.NodeID = a.st.NodeID
			}
			r.fill(answers[ep])
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Member != out[j].Member {
			return out[i].Member
		}
		return out[i].NodeID < out[j].NodeID
	})
	return out
}

func (r *replicaReport) fill(a statusAnswer) {
	switch {
	case a.st != nil:
		r.Reachable, r.Status, r.st, r.via = true, a.raw, a.st, a.ep
	case a.err != nil:
		r.Error = reason(a.err)
	default:
		r.Error = "not asked (no API address)"
	}
}

// betterView prefers a leader, then a higher term, then a longer log.
func betterView(a, b *api.ClusterStatus) bool {
	if (a.State == "leader") != (b.State == "leader") {
		return a.State == "leader"
	}
	if a.Term != b.Term {
		return a.Term > b.Term
	}
	return a.CommitIndex > b.CommitIndex
}

func (s *session) fetchStatuses(ctx context.Context, endpoints []string) map[string]statusAnswer {
	out := make(map[string]statusAnswer, len(endpoints))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, ep := range endpoints {
		wg.Go(func() {
			a := s.fetchStatus(ctx, ep)
			mu.Lock()
			out[ep] = a
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func (s *session) fetchStatus(ctx context.Context, endpoint string) statusAnswer {
	c, err := api.NewClient([]string{endpoint}, api.WithToken(s.g.token), api.WithRetryDeadline(0),
		api.WithoutLeaderFollowing(), api.WithRequestTimeout(min(s.g.timeout, statusTimeout)))
	if err != nil {
		return statusAnswer{err: err}
	}
	var raw json.RawMessage
	if err := c.Get(ctx, "/cluster/status", url.Values{"stale": {"1"}}, &raw); err != nil {
		return statusAnswer{err: err}
	}
	var st api.ClusterStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return statusAnswer{err: fmt.Errorf("unexpected answer: %w", err)}
	}
	return statusAnswer{st: &st, raw: raw, ep: endpoint}
}

// reason says in a few words why a replica did not answer.
func reason(err error) string {
	var apiErr *api.APIError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &apiErr):
		return apiErr.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return strings.TrimPrefix(err.Error(), api.ErrUnavailable.Error()+": ")
}

func hostPort(endpoint string) string {
	if i := strings.Index(endpoint, "://"); i >= 0 {
		return endpoint[i+3:]
	}
	return endpoint
}

func renderStatus(s *session, reps []*replicaReport) {
	w := s.stdout
	fmt.Fprintln(w, quorumLine(reps))
	fmt.Fprintln(w)
	t := newTable(w, "ID", "API", "STATE", "TERM", "COMMIT", "APPLIED", "DIGEST", "LAST CONTACT")
	for _, r := range reps {
		id := r.NodeID
		if id == "" {
			id = "?"
		}
		if r.st == nil {
			t.row(id, r.APIAddr, "unreachable", "", "", "", "", "")
			continue
		}
		state := r.st.State
		switch {
		case !r.Member:
			state += " (not a member)"
		case r.Suffrage != "" && r.Suffrage != "voter":
			state += " (" + r.Suffrage + ")"
		}
		contact := r.st.LastContact
		if r.st.State == "leader" {
			contact = ""
		}
		t.row(id, r.APIAddr, state, r.st.Term, r.st.CommitIndex, r.st.AppliedIndex, short(r.st.Digest, 12), contact)
	}
	t.flush()
	for _, r := range reps {
		if r.Error != "" {
			fmt.Fprintf(w, "  %s (%s): %s\n", orUnknown(r.NodeID), r.APIAddr, r.Error)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, digestLine(reps))
	fmt.Fprintln(w, countsLine(reps))
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

// leaderOf returns the reachable replica that leads at the highest term, or nil.
func leaderOf(reps []*replicaReport) *replicaReport {
	var best *replicaReport
	for _, r := range reps {
		if r.st != nil && r.st.State == "leader" && (best == nil || r.st.Term > best.st.Term) {
			best = r
		}
	}
	return best
}

func quorumLine(reps []*replicaReport) string {
	total, reachable := 0, 0
	var term uint64
	for _, r := range reps {
		if !r.Member {
			continue
		}
		total++
		if r.st != nil {
			reachable++
			term = max(term, r.st.Term)
		}
	}
	counted := fmt.Sprintf("%d/%d replicas reachable", reachable, total)
	if reachable == 0 {
		return "quorum: NO LEADER (" + counted + ")"
	}
	leader := leaderOf(reps)
	if leader == nil {
		return fmt.Sprintf("quorum: NO LEADER (%s, term %d)", counted, term)
	}
	health := "ok"
	if reachable < total {
		health = "DEGRADED"
	}
	return fmt.Sprintf("quorum: %s (%s, leader %s, term %d)", health, counted, leader.NodeID, leader.st.Term)
}

// digestLine compares the state digests of replicas that stand at the same FSM index: equal
// indexes must mean equal digests, or the replicas diverged.
func digestLine(reps []*replicaReport) string {
	groups := map[uint64][]*replicaReport{}
	var indexes []uint64
	for _, r := range reps {
		if r.st == nil || r.st.Digest == "" {
			continue
		}
		if _, ok := groups[r.st.FSMIndex]; !ok {
			indexes = append(indexes, r.st.FSMIndex)
		}
		groups[r.st.FSMIndex] = append(groups[r.st.FSMIndex], r)
	}
	sort.Slice(indexes, func(i, j int) bool { return indexes[i] > indexes[j] })
	var diverged, parts []string
	comparable := false
	for _, idx := range indexes {
		g := groups[idx]
		var ids []string
		for _, r := range g {
			ids = append(ids, r.NodeID)
		}
		parts = append(parts, fmt.Sprintf("%d: %s", idx, strings.Join(ids, ", ")))
		if len(g) < 2 {
			continue
		}
		comparable = true
		for _, r := range g[1:] {
			if r.st.Digest != g[0].st.Digest {
				var ds []string
				for _, r := range g {
					ds = append(ds, r.NodeID+" "+short(r.st.Digest, 12))
				}
				diverged = append(diverged, fmt.Sprintf("fsm index %d (%s)", idx, strings.Join(ds, ", ")))
				break
			}
		}
	}
	switch {
	case len(diverged) > 0:
		return "digests: DIVERGED at " + strings.Join(diverged, "; ")
	case len(indexes) == 0:
		return "digests: none reported"
	case len(indexes) == 1 && comparable:
		return fmt.Sprintf("digests: agree (%d replicas at fsm index %d)", len(groups[indexes[0]]), indexes[0])
	case comparable:
		return "digests: agree where comparable (fsm index " + strings.Join(parts, "; ") + ")"
	}
	return "digests: nothing to compare (fsm index " + strings.Join(parts, "; ") + ")"
}

// countsLine shows the object counts of the leader, or of the freshest replica that has them.
func countsLine(reps []*replicaReport) string {
	from := leaderOf(reps)
	if from == nil || from.st.Counts == nil {
		from = nil
		for _, r := range reps {
			if r.st != nil && r.st.Counts != nil && (from == nil || r.st.AppliedIndex > from.st.AppliedIndex) {
				from = r
			}
		}
	}
	if from == nil {
		return "objects: unknown"
	}
	c := from.st.Counts
	line := formatCounts(*c)
	if from.st.State != "leader" {
		line += " (stale, from " + from.NodeID + ")"
	}
	return line
}

func formatCounts(c fsm.Counts) string {
	return fmt.Sprintf("objects: %d protection domains, %d fault sets, %d pools, %d SDS (%d up), %d SDC, %d volumes, %d mappings",
		c.ProtectionDomains, c.FaultSets, c.Pools, c.SDS, c.SDSUp, c.SDC, c.Volumes, c.Mappings)
}
