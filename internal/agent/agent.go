// Package agent is the runtime SDS and SDC share: it joins the gossip pool, follows the MDM
// leader, registers with it and heartbeats to it.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/gossip"
	"pflex/internal/api"
	"pflex/internal/leader"
)

// Backoff between attempts against a leader that keeps failing.
const (
	retryStart = 50 * time.Millisecond
	retryCap   = 500 * time.Millisecond
)

// Agent is a running member: gossip pool, leader tracker and the register/heartbeat loop.
type Agent struct {
	cfg     Config
	log     hclog.Logger
	pool    *gossip.Pool // nil without gossip
	tracker *leader.Tracker
	reg     fsm.RegisterNode
	started time.Time

	mu sync.Mutex
	st state

	ioVersion atomic.Int64 // version of the IOState last passed to OnIOState
	sdsID     atomic.Int64 // from the last registration; 0 before
	// leaseEnd is when the SDS lease ends, as time since started (monotonic); 0: never held.
	leaseEnd atomic.Int64

	cancel context.CancelFunc
	done   chan struct{}
}

// state is what Status reports; guarded by Agent.mu.
type state struct {
	registered    bool
	sdsID, sdcID  int64
	lastHB        time.Time
	lastHBLeader  string
	heartbeats    uint64
	relayed       uint64 // heartbeats another MDM passed on to the leader
	failures      int
	switches      int
	registrations int
	lastError     string
}

// Start joins the gossip pool (when configured), starts the leader tracker and the
// register/heartbeat loop. Close stops them.
func Start(cfg Config) (*Agent, error) {
	cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, started: time.Now(), done: make(chan struct{})}
	var view leader.Gossip
	gossipAddr := ""
	if cfg.Gossip != nil {
		pc := *cfg.Gossip
		pc.Meta = gossip.Meta{
			ID: cfg.ID, Caps: cfg.Caps, Version: cfg.Version,
			API: cfg.APIAddr, Mgmt: cfg.MgmtAddr, Data: cfg.DataAddr, NBD: cfg.NBDAddr,
		}
		pc.Logger = cfg.Logger // the pool names its own sub-logger
		pool, err := gossip.Start(pc)
		if err != nil {
			return nil, fmt.Errorf("agent: join gossip: %w", err)
		}
		a.pool = pool
		view = leader.PoolView(pool)
		gossipAddr = pool.Addr()
	}
	a.tracker = leader.New(view, cfg.MDM, leader.Options{
		Logger:     cfg.Logger.Named("leader"),
		ClusterKey: cfg.ClusterKey,
		HTTPClient: cfg.HTTPClient,
	})
	a.reg = fsm.RegisterNode{
		ID: cfg.ID, Capabilities: cfg.Caps, Version: cfg.Version,
		APIAddr: cfg.APIAddr, MgmtAddr: cfg.MgmtAddr, DataAddr: cfg.DataAddr, NBDAddr: cfg.NBDAddr,
		GossipAddr: gossipAddr,
	}
	if slices.Contains(cfg.Caps, gossip.CapSDS) {
		a.reg.SDS = cfg.SDS
		if a.reg.SDS == nil {
			a.reg.SDS = &fsm.SDSRegistration{}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() {
		defer close(a.done)
		a.run(ctx)
	}()
	return a, nil
}

// Close stops heartbeating, leaves the gossip pool (so peers see "left", not "dead") and
// releases everything.
func (a *Agent) Close() error {
	a.cancel()
	<-a.done
	a.tracker.Close()
	if a.pool == nil {
		return nil
	}
	err := a.pool.Leave(time.Second)
	return errors.Join(err, a.pool.Shutdown())
}

// Pool is the gossip pool, nil when the agent runs without gossip.
func (a *Agent) Pool() *gossip.Pool { return a.pool }

// Tracker is the agent's leader tracker.
func (a *Agent) Tracker() *leader.Tracker { return a.tracker }

// run is the register/heartbeat loop. It always talks to the leader the tracker names:
// registration when the node is not registered or the leader changed (it is idempotent),
// heartbeats otherwise.
func (a *Agent) run(ctx context.Context) {
	var (
		used         string // API address of the leader in use
		needRegister = true
		backoff      = retryStart
	)
	for ctx.Err() == nil {
		ld, err := a.tracker.Wait(ctx)
		if err != nil {
			return
		}
		changed := a.tracker.Changed()
		if ld.API != used {
			a.follow(used, ld)
			used = ld.API
			needRegister = true
			backoff = retryStart
		}
		var wait time.Duration
		if needRegister {
			wait = a.register(ctx, ld)
			if wait == 0 {
				needRegister = false
				backoff = retryStart
				continue // heartbeat at once: it also confirms the leader
			}
		} else {
			var notRegistered bool
			wait, notRegistered = a.heartbeat(ctx, ld)
			if notRegistered {
				needRegister = true
				continue
			}
		}
		if wait < 0 { // the attempt failed: back off unless the leader already changed
			wait = backoff
			backoff = min(backoff*2, retryCap, a.cfg.HeartbeatInterval)
		} else if wait == a.cfg.HeartbeatInterval {
			backoff = retryStart
		}
		if cur, ok := a.tracker.Current(); !ok || cur.API != used {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-changed:
			t.Stop()
		case <-t.C:
		}
	}
}

// follow records a switch to the leader ld (from the one at prev, "" at start).
func (a *Agent) follow(prev string, ld leader.Leader) {
	name := ld.ID
	if name == "" {
		name = "(id unknown)"
	}
	a.mu.Lock()
	if prev != "" {
		a.st.switches++
	}
	a.mu.Unlock()
	if prev == "" {
		a.log.Info("found MDM leader "+name+" at "+ld.API, "via", ld.Via)
	} else {
		a.log.Info("following new MDM leader "+name+" at "+ld.API, "previous", prev, "via", ld.Via)
	}
}

// register registers with the leader ld. It returns 0 on success, -1 to retry soon (the
// leader failed or moved) and a longer wait when the MDM refused the registration.
func (a *Agent) register(ctx context.Context, ld leader.Leader) time.Duration {
	var resp api.RegisterResponse
	sent := time.Now()
	ans := call(ctx, a.cfg.HTTPClient, a.cfg.ClusterKey, a.cfg.HeartbeatTimeout, ld.API, PathRegister, &a.reg, &resp)
	if ans.err == nil {
		a.mu.Lock()
		first := !a.st.registered
		a.st.registered = true
		a.st.sdsID, a.st.sdcID = resp.SDSID, resp.SDCID
		a.st.registrations++
		a.st.lastError = ""
		a.mu.Unlock()
		a.sdsID.Store(resp.SDSID)
		a.applyIO(resp.IO)
		a.extendLease(sent, resp.LeaseMs)
		lvl := hclog.Debug
		if first {
			lvl = hclog.Info
		}
		a.log.Log(lvl, "registered with MDM leader", "leader", ld.API, "sds_id", resp.SDSID, "sdc_id", resp.SDCID)
		a.reportLeader(resp.LeaderID, resp.LeaderAPI, ans.leader)
		return 0
	}
	if ctx.Err() != nil {
		return -1
	}
	a.noteError(ans.err)
	if e := ans.apiError(); e != nil && !ans.unavailable() {
		a.tracker.Report("", ans.leader)
		a.log.Log(a.refusalLevel(ans.err), a.refusal(e), "leader", ld.API)
		return a.cfg.RegisterRetry
	}
	a.log.Debug("registration failed", "leader", ld.API, "error", ans.err)
	a.leaderFailed(ld, ans)
	return -1
}

// heartbeat sends one heartbeat to ld. It returns the wait before the next one (-1: retry
// soon) and whether the MDM no longer knows this node.
func (a *Agent) heartbeat(ctx context.Context, ld leader.Leader) (time.Duration, bool) {
	var resp api.HeartbeatResponse
	sent := time.Now()
	req := api.HeartbeatRequest{ID: a.cfg.ID, IOVersion: a.ioVersion.Load()}
	if a.cfg.UnreachablePeers != nil {
		req.UnreachablePeers = a.cfg.UnreachablePeers()
	}
	ans := call(ctx, a.cfg.HTTPClient, a.cfg.ClusterKey, a.cfg.HeartbeatTimeout, ld.API, PathHeartbeat, req, &resp)
	via := ld.API
	if ans.err != nil && ans.status == 0 && ctx.Err() == nil {
		// No answer from the leader: it may be down, or only our link to it. Another MDM
		// forwards the heartbeat to the leader it follows.
		if r, rsent, rans, ok := a.relayHeartbeat(ctx, ld, req, &resp); ok {
			via, sent, ans = r, rsent, rans
		}
	}
	if ans.err == nil {
		a.mu.Lock()
		a.st.lastHB, a.st.lastHBLeader = time.Now(), ld.API
		a.st.heartbeats++
		if via != ld.API {
			a.st.relayed++
		}
		if a.st.failures > 0 {
			a.log.Info("heartbeats resumed", "leader", ld.API, "after_failures", a.st.failures)
		}
		a.st.failures = 0
		a.st.lastError = ""
		a.mu.Unlock()
		a.applyIO(resp.IO) // first: the lease below is valid only with this state
		a.extendLease(sent, resp.LeaseMs)
		// A follower that forwarded the heartbeat names the real leader: go there directly.
		a.reportLeader(resp.LeaderID, resp.LeaderAPI, ans.leader)
		return a.cfg.HeartbeatInterval, false
	}
	if ctx.Err() != nil {
		return -1, false
	}
	a.mu.Lock()
	a.st.failures++
	n := a.st.failures
	a.mu.Unlock()
	a.noteError(ans.err)
	if e := ans.apiError(); e != nil && e.Status == http.StatusNotFound && e.Code == "not_found" {
		a.mu.Lock()
		a.st.registered = false
		a.mu.Unlock()
		a.log.Info("MDM does not know this node (any more); registering again", "leader", ld.API)
		return -1, true
	}
	lvl := hclog.Debug
	if n == 3 {
		lvl = hclog.Warn
	}
	a.log.Log(lvl, "heartbeat failed", "leader", ld.API, "consecutive_failures", n, "error", ans.err)
	if e := ans.apiError(); e != nil && !ans.unavailable() {
		a.tracker.Report("", ans.leader)
		return a.cfg.HeartbeatInterval, false
	}
	a.leaderFailed(ld, ans)
	return -1, false
}

// relayHeartbeat sends req through the other MDMs at once, after the leader ld did not answer,
// and takes the first answer given for ld: a follower that still reaches ld forwards it, and ld
// grants the lease as for a direct heartbeat. So an SDS cut from the leader alone, which its
// peers, the SDCs and the followers still reach, keeps its lease instead of being taken out and
// rebuilt (internal/agent/DESIGN.md "Relayed heartbeats"). All at once, so that a leader that
// hangs every forward (paused) costs one timeout, not one per follower. An answer from another
// leader is passed to the tracker and not taken: the loop registers with the new leader first.
// It returns the MDM that relayed it, when the request left, and the answer.
func (a *Agent) relayHeartbeat(ctx context.Context, ld leader.Leader, req api.HeartbeatRequest, resp *api.HeartbeatResponse) (string, time.Time, answer, bool) {
	others := a.tracker.Others(ld.API)
	if len(others) == 0 {
		return "", time.Time{}, answer{}, false
	}
	type relayed struct {
		via  string
		ans  answer
		resp api.HeartbeatResponse
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sent := time.Now()
	got := make(chan relayed, len(others))
	for _, r := range others {
		go func() {
			var hr api.HeartbeatResponse
			ans := call(ctx, a.cfg.HTTPClient, a.cfg.ClusterKey, a.cfg.HeartbeatTimeout, r, PathHeartbeat, req, &hr)
			got <- relayed{r, ans, hr}
		}()
	}
	newLeader := false
	for range others {
		g := <-got
		if g.ans.err != nil {
			continue
		}
		switch by := cmp.Or(g.resp.LeaderAPI, g.ans.leader); {
		case by == ld.API:
			*resp = g.resp
			return g.via, sent, g.ans, true
		case by != "" && !newLeader:
			newLeader = true
			a.reportLeader(g.resp.LeaderID, g.resp.LeaderAPI, g.ans.leader)
		}
	}
	return "", time.Time{}, answer{}, false
}

// leaderFailed tells the tracker what a failed call taught: another leader named in the
// answer, or that ld cannot serve. A 503 from ld naming itself (a commit whose outcome is
// unknown) is only retried.
func (a *Agent) leaderFailed(ld leader.Leader, ans answer) {
	switch {
	case ans.leader != "" && ans.leader != ld.API:
		a.tracker.Report("", ans.leader)
	case ans.leader == ld.API && ans.status != 0:
	default:
		a.tracker.Failed(ld.API)
	}
}

func (a *Agent) noteError(err error) {
	a.mu.Lock()
	a.st.lastError = err.Error()
	a.mu.Unlock()
}

// refusal is the log line for a registration the MDM refused, with what the operator can do.
func (a *Agent) refusal(e *api.APIError) string {
	msg := "registration refused: " + e.Error()
	if e.Status == http.StatusNotFound && !strings.Contains(e.Message, "pflex ") { // the MDM may name the fix itself
		sds := a.reg.SDS
		low := strings.ToLower(e.Message)
		switch {
		case sds != nil && sds.FaultSet != "" && strings.Contains(strings.ReplaceAll(low, "_", " "), "fault set"):
			msg = fmt.Sprintf("registration refused: fault set %q not found — create it with `pflex faultset create %s -pd %s` (%s)",
				sds.FaultSet, sds.FaultSet, sds.ProtectionDomain, e.Message)
		case sds != nil:
			msg = fmt.Sprintf("registration refused: protection domain %q not found — create it with `pflex pd create %s` (%s)",
				sds.ProtectionDomain, sds.ProtectionDomain, e.Message)
		}
	}
	if e.Status == http.StatusUnauthorized {
		msg = "registration refused: the MDM does not accept this cluster_key (" + e.Error() + ")"
	}
	return msg + "; retrying every " + a.cfg.RegisterRetry.String()
}

// refusalLevel: a missing protection domain is an expected start-up order (warn); a bad key
// or bad input is a configuration error.
func (a *Agent) refusalLevel(err error) hclog.Level {
	var e *api.APIError
	if errors.As(err, &e) && e.Status == http.StatusNotFound {
		return hclog.Warn
	}
	return hclog.Error
}

// reportLeader passes what a successful answer says about the leader to the tracker: the body's
// leader_id and leader_api, or else the X-Pflex-Leader header.
func (a *Agent) reportLeader(id, apiAddr, header string) {
	if apiAddr == "" {
		id, apiAddr = "", header
	}
	a.tracker.Report(id, apiAddr)
}

// applyIO passes an IOState from the MDM to the hook and remembers its version.
func (a *Agent) applyIO(io *api.IOState) {
	if io == nil {
		return
	}
	if a.cfg.OnIOState != nil {
		a.cfg.OnIOState(io)
	}
	a.ioVersion.Store(io.Version)
}

// extendLease takes the lease an answer granted: leaseMs from sent, the moment the request
// left (the leader counts from when it received it, which is later). 0 grants nothing.
func (a *Agent) extendLease(sent time.Time, leaseMs int64) {
	if leaseMs <= 0 {
		return
	}
	end := int64(sent.Sub(a.started) + time.Duration(leaseMs)*time.Millisecond)
	for {
		cur := a.leaseEnd.Load()
		if end <= cur || a.leaseEnd.CompareAndSwap(cur, end) {
			return
		}
	}
}

// LeaseValid reports whether this node holds an SDS lease from the MDM leader now: an SDS
// serves IO only then.
func (a *Agent) LeaseValid() bool { return a.LeaseRemaining() > 0 }

// LeaseRemaining is how long the current lease still runs (<= 0: none).
func (a *Agent) LeaseRemaining() time.Duration {
	end := a.leaseEnd.Load()
	if end == 0 {
		return 0
	}
	return time.Duration(end) - time.Since(a.started)
}

// IOVersion is the version of the last IOState received (0: none yet).
func (a *Agent) IOVersion() int64 { return a.ioVersion.Load() }

// SDSID is the SDS id the MDM gave this node at its last registration (0: not registered yet,
// or not an SDS).
func (a *Agent) SDSID() int64 { return a.sdsID.Load() }

// LeaderDo sends one JSON request to the MDM leader the tracker names (body nil: none) and
// decodes a 2xx answer into out. requestID, when not "", is sent as X-Pflex-Request-Id (the MDM
// answers a retry with the first outcome). Transport failures and "no leader / not the leader"
// answers are retried against the leader the tracker names next, with backoff, until ctx ends;
// any other refusal (4xx) is returned at once as an *api.APIError.
func (a *Agent) LeaderDo(ctx context.Context, method, path, requestID string, body, out any) error {
	backoff := retryStart
	var last error
	for {
		ld, err := a.tracker.Wait(ctx)
		if err != nil {
			return errors.Join(last, err)
		}
		ans := callMethod(ctx, a.cfg.HTTPClient, a.cfg.ClusterKey, a.cfg.HeartbeatTimeout, method, ld.API, path, requestID, body, out)
		if ans.err == nil {
			if ans.leader != "" && ans.leader != ld.API {
				a.tracker.Report("", ans.leader)
			}
			return nil
		}
		last = ans.err
		if e := ans.apiError(); e != nil && !ans.unavailable() && e.Status != http.StatusTemporaryRedirect &&
			e.Status != http.StatusMisdirectedRequest {
			if ans.leader != "" && ans.leader != ld.API {
				a.tracker.Report("", ans.leader) // a follower refused it: the header names the leader
				continue
			}
			return ans.err
		}
		if ctx.Err() != nil {
			return last
		}
		a.leaderFailed(ld, ans)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return last
		case <-t.C:
		}
		backoff = min(backoff*2, retryCap)
	}
}
