package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/gossip"
	"pflex/internal/api"
)

const testKey = "test-cluster-key"

// fakeMDM is one MDM's HTTP API, reduced to what the agent calls. Its behaviour is switched by
// the test: which leader it names, whether it serves (or answers 503), whether it knows the
// protection domain, and it can forget registrations.
type fakeMDM struct {
	t   *testing.T
	srv *httptest.Server

	mu         sync.Mutex
	id         string
	leaderID   string
	leaderAPI  string
	down       bool // answer 503 no_leader to register and heartbeat
	pdMissing  bool // refuse registrations with 404
	registered map[string]fsm.RegisterNode
	regs       int
	hbs        int
	badAuth    int
	io         *api.IOState // sent on registration, and on heartbeats reporting another version
	hbVersions []int64      // IOVersion of each heartbeat
	gets       int          // GET /vol/1/layout served
	leaseMs    int64        // granted in heartbeat answers
	cut        bool         // heartbeats get no answer (the agent's link to this MDM is cut)
}

func newFakeMDM(t *testing.T, id string) *fakeMDM {
	m := &fakeMDM{t: t, id: id, registered: map[string]fsm.RegisterNode{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *fakeMDM) addr() string { return strings.TrimPrefix(m.srv.URL, "http://") }

func (m *fakeMDM) serve(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	cut := m.cut
	m.mu.Unlock()
	if cut && r.URL.Path == PathHeartbeat {
		io.Copy(io.Discard, r.Body) // the server sees the client go only once the body is read
		select {
		case <-r.Context().Done(): // the agent gave up
		case <-time.After(5 * time.Second):
		}
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w.Header().Set("X-Pflex-Leader", m.leaderAPI)
	fail := func(status int, code, msg string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": msg, "code": code})
	}
	if r.Header.Get("Authorization") != "Bearer "+testKey {
		m.badAuth++
		fail(http.StatusUnauthorized, "unauthorized", "wrong key")
		return
	}
	switch r.URL.Path {
	case "/cluster/status":
		json.NewEncoder(w).Encode(map[string]any{"node_id": m.id, "leader_id": m.leaderID, "leader_api": m.leaderAPI})
	case PathRegister:
		if m.down {
			fail(http.StatusServiceUnavailable, "no_leader", "no leader")
			return
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		var req fsm.RegisterNode
		if err := dec.Decode(&req); err != nil {
			fail(http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		if m.pdMissing {
			fail(http.StatusNotFound, "not_found", `protection domain "pd1" not found`)
			return
		}
		m.registered[req.ID] = req
		m.regs++
		json.NewEncoder(w).Encode(map[string]any{"node": map[string]any{"id": req.ID}, "sds_id": 3,
			"leader_id": m.leaderID, "leader_api": m.leaderAPI, "io": m.io})
	case PathHeartbeat:
		if m.down {
			fail(http.StatusServiceUnavailable, "no_leader", "no leader")
			return
		}
		var req api.HeartbeatRequest
		json.NewDecoder(r.Body).Decode(&req)
		if _, ok := m.registered[req.ID]; !ok {
			fail(http.StatusNotFound, "not_found", "node "+req.ID+" is not registered")
			return
		}
		m.hbs++
		m.hbVersions = append(m.hbVersions, req.IOVersion)
		resp := api.HeartbeatResponse{LeaderID: m.leaderID, LeaderAPI: m.leaderAPI, Term: 1, State: "leader", LeaseMs: m.leaseMs}
		if m.io != nil && req.IOVersion != m.io.Version {
			resp.IO = m.io
		}
		json.NewEncoder(w).Encode(resp)
	case "/vol/1/layout":
		if m.leaderAPI != m.addr() {
			fail(http.StatusServiceUnavailable, "no_leader", "not the leader")
			return
		}
		if r.Method != http.MethodGet || r.Header.Get(api.HeaderRequestID) != "rid-1" {
			fail(http.StatusBadRequest, "bad_request", "want GET with request id rid-1")
			return
		}
		m.gets++
		json.NewEncoder(w).Encode(map[string]any{"volume_id": 1, "by": m.id})
	default:
		http.NotFound(w, r)
	}
}

func (m *fakeMDM) set(fn func(m *fakeMDM)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fn(m)
}

func (m *fakeMDM) counts() (regs, hbs int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.regs, m.hbs
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testConfig(t *testing.T, mdm ...string) Config {
	return Config{
		ID:                "sds-1",
		Caps:              []string{gossip.CapSDS},
		APIAddr:           "127.0.0.1:9101",
		MgmtAddr:          "127.0.0.1:9201",
		DataAddr:          "127.0.0.1:9701",
		ClusterKey:        testKey,
		HeartbeatInterval: 20 * time.Millisecond,
		HeartbeatTimeout:  500 * time.Millisecond,
		RegisterRetry:     30 * time.Millisecond,
		MDM:               mdm,
		SDS:               &fsm.SDSRegistration{ProtectionDomain: "pd1", Devices: []string{"/x/dev0.img"}, TotalCapacityGB: 100},
		Logger:            hclog.New(&hclog.LoggerOptions{Name: "sds-1", Level: hclog.Debug, Output: newTestWriter(t)}),
	}
}

// testWriter sends log lines to t.Log until the test ends: memberlist goroutines may still log
// a line after Shutdown, and t.Log after the test panics.
type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func newTestWriter(t *testing.T) *testWriter {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// pair is two fake MDMs, a the leader.
func pair(t *testing.T) (a, b *fakeMDM) {
	a, b = newFakeMDM(t, "mdm-1"), newFakeMDM(t, "mdm-2")
	for _, m := range []*fakeMDM{a, b} {
		m.set(func(m *fakeMDM) { m.leaderID, m.leaderAPI = "mdm-1", a.addr() })
	}
	return a, b
}

func startAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	ag, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Close() })
	return ag
}

func TestRegistersThenHeartbeatsToLeader(t *testing.T) {
	a, b := pair(t)
	ag := startAgent(t, testConfig(t, b.addr())) // only the follower is configured
	waitFor(t, "heartbeats at the leader", func() bool { _, hbs := a.counts(); return hbs >= 3 })
	st := ag.Status()
	if !st.Registered || st.SDSID != 3 || st.LeaderAPI != a.addr() || st.LastHeartbeatLeader != a.addr() || st.LastHeartbeatAgeMS < 0 {
		t.Fatalf("status: %+v", st)
	}
	a.mu.Lock()
	req := a.registered["sds-1"]
	a.mu.Unlock()
	if req.SDS == nil || req.SDS.ProtectionDomain != "pd1" || req.DataAddr != "127.0.0.1:9701" || req.Capabilities[0] != "SDS" {
		t.Fatalf("registration body: %+v", req)
	}
	if regs, hbs := b.counts(); regs != 0 || hbs != 0 {
		t.Fatalf("the follower got %d registrations and %d heartbeats", regs, hbs)
	}
}

func TestFollowsLeaderNamedBy503(t *testing.T) {
	a, b := pair(t)
	ag := startAgent(t, testConfig(t, a.addr(), b.addr()))
	waitFor(t, "heartbeats at mdm-1", func() bool { _, hbs := a.counts(); return hbs >= 2 })
	// mdm-1 loses leadership: it answers 503 and names mdm-2.
	for _, m := range []*fakeMDM{a, b} {
		m.set(func(m *fakeMDM) { m.leaderID, m.leaderAPI = "mdm-2", b.addr() })
	}
	a.set(func(m *fakeMDM) { m.down = true })
	waitFor(t, "heartbeats at mdm-2", func() bool { _, hbs := b.counts(); return hbs >= 3 })
	st := ag.Status()
	if st.LeaderAPI != b.addr() || st.LastHeartbeatLeader != b.addr() || st.LeaderSwitches != 1 || st.Registrations != 2 {
		t.Fatalf("status after the switch: %+v", st)
	}
	if regs, _ := b.counts(); regs != 1 {
		t.Fatalf("want one re-registration at the new leader, got %d", regs)
	}
}

func TestFollowsLeaderNamedInSuccessfulAnswer(t *testing.T) {
	a, b := pair(t)
	ag := startAgent(t, testConfig(t, a.addr()))
	waitFor(t, "heartbeats at mdm-1", func() bool { _, hbs := a.counts(); return hbs >= 2 })
	// mdm-1 still answers (it forwarded), but names mdm-2 as the leader.
	a.set(func(m *fakeMDM) { m.leaderID, m.leaderAPI = "mdm-2", b.addr() })
	b.set(func(m *fakeMDM) { m.leaderID, m.leaderAPI = "mdm-2", b.addr() })
	waitFor(t, "heartbeats at mdm-2", func() bool { _, hbs := b.counts(); return hbs >= 2 })
	if st := ag.Status(); st.LeaderAPI != b.addr() {
		t.Fatalf("status: %+v", st)
	}
}

// An agent cut from the leader alone heartbeats through a follower, which forwards to the
// leader: it keeps its lease and its leader, and goes direct again once the link is back.
func TestHeartbeatsRelayedWhileCutFromTheLeader(t *testing.T) {
	a, b := pair(t)
	for _, m := range []*fakeMDM{a, b} {
		m.set(func(m *fakeMDM) { m.leaseMs = 5000 })
	}
	ag := startAgent(t, testConfig(t, a.addr(), b.addr()))
	waitFor(t, "heartbeats at mdm-1", func() bool { _, hbs := a.counts(); return hbs >= 2 })
	a.mu.Lock()
	reg := a.registered["sds-1"]
	a.mu.Unlock()
	b.set(func(m *fakeMDM) { m.registered["sds-1"] = reg }) // b answers as mdm-1 would, forwarding

	a.set(func(m *fakeMDM) { m.cut = true })
	waitFor(t, "heartbeats relayed by mdm-2", func() bool { _, hbs := b.counts(); return hbs >= 3 })
	st := ag.Status()
	if st.RelayedHeartbeats < 3 || st.LeaderAPI != a.addr() || st.LastHeartbeatLeader != a.addr() || st.LeaderSwitches != 0 || !ag.LeaseValid() {
		t.Fatalf("status while cut from the leader: %+v (lease valid %v)", st, ag.LeaseValid())
	}

	a.set(func(m *fakeMDM) { m.cut = false })
	_, before := a.counts()
	waitFor(t, "heartbeats at mdm-1 again", func() bool { _, hbs := a.counts(); return hbs >= before+3 })
	relayed := ag.Status().RelayedHeartbeats
	_, atA := a.counts()
	waitFor(t, "more direct heartbeats", func() bool { _, hbs := a.counts(); return hbs >= atA+3 })
	if st := ag.Status(); st.RelayedHeartbeats != relayed {
		t.Fatalf("heartbeats still relayed after the heal: %d, then %d", relayed, st.RelayedHeartbeats)
	}
}

// A relay that answers for another leader is not taken as a heartbeat: the agent follows the
// leader it names and registers there.
func TestRelayNamingAnotherLeaderIsFollowed(t *testing.T) {
	a, b := pair(t)
	ag := startAgent(t, testConfig(t, a.addr(), b.addr()))
	waitFor(t, "heartbeats at mdm-1", func() bool { _, hbs := a.counts(); return hbs >= 2 })
	a.set(func(m *fakeMDM) { m.cut = true })
	b.set(func(m *fakeMDM) { m.leaderID, m.leaderAPI = "mdm-2", b.addr() })
	waitFor(t, "registered at mdm-2", func() bool { regs, _ := b.counts(); return regs == 1 })
	waitFor(t, "heartbeats at mdm-2", func() bool { _, hbs := b.counts(); return hbs >= 2 })
	if st := ag.Status(); st.LeaderAPI != b.addr() || st.RelayedHeartbeats != 0 || st.LeaderSwitches != 1 {
		t.Fatalf("status: %+v", st)
	}
}

func TestDeadLeaderReresolvedOverHTTP(t *testing.T) {
	a, b := pair(t)
	ag := startAgent(t, testConfig(t, a.addr(), b.addr()))
	waitFor(t, "heartbeats at mdm-1", func() bool { _, hbs := a.counts(); return hbs >= 2 })
	b.set(func(m *fakeMDM) { m.leaderID, m.leaderAPI = "mdm-2", b.addr() })
	a.srv.CloseClientConnections()
	a.srv.Close() // connection refused from now on
	waitFor(t, "heartbeats at mdm-2", func() bool { _, hbs := b.counts(); return hbs >= 2 })
	if st := ag.Status(); st.LeaderID != "mdm-2" || st.LeaderSwitches != 1 {
		t.Fatalf("status: %+v", st)
	}
}

func TestHeartbeat404Reregisters(t *testing.T) {
	a, _ := pair(t)
	ag := startAgent(t, testConfig(t, a.addr()))
	waitFor(t, "heartbeats", func() bool { _, hbs := a.counts(); return hbs >= 2 })
	a.set(func(m *fakeMDM) { clear(m.registered) }) // the MDM forgot the node
	waitFor(t, "re-registration", func() bool { regs, _ := a.counts(); return regs == 2 })
	waitFor(t, "heartbeats again", func() bool { return ag.Status().Heartbeats >= 4 })
	if st := ag.Status(); !st.Registered || st.LeaderSwitches != 0 {
		t.Fatalf("status: %+v", st)
	}
}

func TestRegistrationRefusedIsRetried(t *testing.T) {
	a, _ := pair(t)
	a.set(func(m *fakeMDM) { m.pdMissing = true })
	ag := startAgent(t, testConfig(t, a.addr()))
	waitFor(t, "the refusal recorded", func() bool { return strings.Contains(ag.Status().LastError, "not found") })
	time.Sleep(100 * time.Millisecond)
	if st := ag.Status(); st.Registered || st.Heartbeats != 0 {
		t.Fatalf("registered although refused: %+v", st)
	}
	a.set(func(m *fakeMDM) { m.pdMissing = false }) // pflex pd create pd1
	waitFor(t, "registered", func() bool { return ag.Status().Registered && ag.Status().Heartbeats > 0 })
	if ag.Status().LastError != "" {
		t.Fatalf("last error kept after success: %q", ag.Status().LastError)
	}
}

func TestRefusalMessageNamesTheFix(t *testing.T) {
	ag := &Agent{cfg: Config{RegisterRetry: 3 * time.Second}, reg: fsm.RegisterNode{SDS: &fsm.SDSRegistration{ProtectionDomain: "pd1"}}}
	msg := ag.refusal(&apiErr404)
	if !strings.Contains(msg, `protection domain "pd1" not found`) || !strings.Contains(msg, "pflex pd create pd1") {
		t.Fatalf("message: %s", msg)
	}
	own := api.APIError{Status: 404, Code: "not_found", Message: "protection domain \"pd1\" not found; create it with `pflex pd create pd1`"}
	if msg := ag.refusal(&own); strings.Count(msg, "pflex pd create") != 1 {
		t.Fatalf("message repeats the MDM's hint: %s", msg)
	}
}

func TestSDCRegistrationHasNoSDSObject(t *testing.T) {
	a, _ := pair(t)
	cfg := testConfig(t, a.addr())
	cfg.ID, cfg.Caps, cfg.SDS, cfg.DataAddr, cfg.NBDAddr = "sdc-1", []string{gossip.CapSDC}, nil, "", "127.0.0.1:10809"
	startAgent(t, cfg)
	waitFor(t, "registered", func() bool { regs, _ := a.counts(); return regs == 1 })
	a.mu.Lock()
	req := a.registered["sdc-1"]
	a.mu.Unlock()
	if req.SDS != nil || req.NBDAddr != "127.0.0.1:10809" {
		t.Fatalf("SDC registration: %+v", req)
	}
	b, _ := json.Marshal(req)
	if strings.Contains(string(b), `"sds"`) {
		t.Fatalf("SDC body carries an sds object: %s", b)
	}
}

func TestStatusHandler(t *testing.T) {
	a, _ := pair(t)
	ag := startAgent(t, testConfig(t, a.addr()))
	waitFor(t, "heartbeats", func() bool { return ag.Status().Heartbeats > 0 })
	srv := httptest.NewServer(ag.Handler("sds"))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.ID != "sds-1" || st.Role != "sds" || !st.Registered || st.LeaderAPI != a.addr() || st.Version == "" {
		t.Fatalf("GET /status: %+v", st)
	}
	resp2, err := http.Get(srv.URL + "/healthz")
	if err != nil || resp2.StatusCode != 200 {
		t.Fatalf("GET /healthz: %v %v", resp2, err)
	}
	resp2.Body.Close()
}

var apiErr404 = api.APIError{Status: 404, Code: "not_found", Message: `protection domain "pd1" not found`}

// gossipMDM is a gossip member posing as an MDM whose API is a fake MDM.
func gossipMDM(t *testing.T, m *fakeMDM, leader bool, term uint64, join ...string) *gossip.Pool {
	t.Helper()
	p, err := gossip.Start(fastGossip(gossip.Meta{ID: m.id, Caps: []string{gossip.CapMDM}, API: m.addr(), Leader: leader, Term: term}, join...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown() })
	return p
}

func fastGossip(meta gossip.Meta, join ...string) gossip.Config {
	return gossip.Config{
		BindAddr: "127.0.0.1:0", Join: join, Meta: meta, Logger: hclog.NewNullLogger(),
		ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
		GossipInterval: 20 * time.Millisecond, JoinRetryInterval: 50 * time.Millisecond,
	}
}

// TestFollowsLeaderAnnouncedInGossip: no MDM address is configured; the leader is learned
// from gossip, and a new leader announced in gossip is followed without any HTTP failure.
func TestFollowsLeaderAnnouncedInGossip(t *testing.T) {
	a, b := pair(t)
	pa := gossipMDM(t, a, true, 1)
	pb := gossipMDM(t, b, false, 1, pa.Addr())
	cfg := testConfig(t)
	cfg.HeartbeatInterval = 50 * time.Millisecond
	gc := fastGossip(gossip.Meta{})
	gc.Join = []string{pa.Addr()}
	cfg.Gossip = &gc
	ag := startAgent(t, cfg)
	waitFor(t, "heartbeats at mdm-1", func() bool { _, hbs := a.counts(); return hbs >= 2 })
	if st := ag.Status(); st.LeaderVia != "gossip" || st.LeaderID != "mdm-1" || st.GossipAlive != 3 || st.GossipAddr == "" {
		t.Fatalf("status: %+v", st)
	}
	a.mu.Lock()
	gossipAddr := a.registered["sds-1"].GossipAddr
	a.mu.Unlock()
	if gossipAddr != ag.Pool().Addr() {
		t.Fatalf("registered gossip_addr %q, pool at %q", gossipAddr, ag.Pool().Addr())
	}
	if m := ag.Pool().LocalMeta(); m.ID != "sds-1" || !m.Has(gossip.CapSDS) || m.Data != "127.0.0.1:9701" || m.API != "127.0.0.1:9101" {
		t.Fatalf("gossip meta: %+v", m)
	}
	// Leadership moves to mdm-2 (term 2); mdm-1 keeps answering, still naming itself, so only
	// gossip tells the agent.
	b.set(func(m *fakeMDM) { m.leaderID, m.leaderAPI = "mdm-2", b.addr() })
	switched := time.Now()
	if err := pb.UpdateMeta(func(m *gossip.Meta) { m.Leader, m.Term = true, 2 }); err != nil {
		t.Fatal(err)
	}
	if err := pa.UpdateMeta(func(m *gossip.Meta) { m.Leader = false }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "heartbeats at mdm-2", func() bool { _, hbs := b.counts(); return hbs >= 2 })
	t.Logf("followed the new leader %s after the announcement", time.Since(switched))
	if st := ag.Status(); st.LeaderID != "mdm-2" || st.LeaderTerm != 2 || st.LeaderSwitches != 1 {
		t.Fatalf("status: %+v", st)
	}
}

func TestIOStateHookAndVersion(t *testing.T) {
	a, _ := pair(t)
	a.set(func(m *fakeMDM) {
		m.io = &api.IOState{Version: 4, Keys: []api.TokenKey{{ID: 1, Key: []byte("0123456789abcdef")}}}
	})
	var mu sync.Mutex
	var got []int64
	cfg := testConfig(t, a.addr())
	cfg.OnIOState = func(st *api.IOState) {
		mu.Lock()
		got = append(got, st.Version)
		mu.Unlock()
	}
	ag := startAgent(t, cfg)
	waitFor(t, "heartbeats", func() bool { _, hbs := a.counts(); return hbs >= 3 })
	if ag.IOVersion() != 4 || ag.SDSID() != 3 {
		t.Fatalf("io version %d, sds id %d", ag.IOVersion(), ag.SDSID())
	}
	// A new version reaches the hook through the next heartbeat, once.
	a.set(func(m *fakeMDM) { m.io = &api.IOState{Version: 5} })
	waitFor(t, "io version 5", func() bool { return ag.IOVersion() == 5 })
	waitFor(t, "more heartbeats", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.hbVersions[len(a.hbVersions)-1] == 5
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0] != 4 || got[1] != 5 {
		t.Fatalf("hook saw versions %v, want [4 5] (registration, then one heartbeat)", got)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.hbVersions[0] != 4 {
		t.Fatalf("first heartbeat reported io version %d", a.hbVersions[0])
	}
}

func TestLeaderDo(t *testing.T) {
	a, b := pair(t)
	ag := startAgent(t, testConfig(t, b.addr(), a.addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out struct {
		By string `json:"by"`
	}
	if err := ag.LeaderDo(ctx, http.MethodGet, "/vol/1/layout", "rid-1", nil, &out); err != nil || out.By != "mdm-1" {
		t.Fatalf("LeaderDo: %+v %v", out, err)
	}
	// A refusal is returned at once, as an *api.APIError.
	err := ag.LeaderDo(ctx, http.MethodGet, "/vol/1/layout", "other", nil, &out)
	var e *api.APIError
	if !errors.As(err, &e) || e.Status != http.StatusBadRequest {
		t.Fatalf("refusal: %v", err)
	}
	// No leader at all: retried until ctx ends.
	a.set(func(m *fakeMDM) { m.leaderAPI = "" })
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if err := ag.LeaderDo(short, http.MethodGet, "/vol/1/layout", "rid-1", nil, &out); err == nil {
		t.Fatal("LeaderDo succeeded without a leader")
	}
}

// Heartbeat answers grant a lease counted from when the heartbeat was sent; without heartbeats
// (the MDM stops answering, or answers without a lease) it runs out.
func TestLeaseFollowsHeartbeats(t *testing.T) {
	a, _ := pair(t)
	cfg := testConfig(t, a.addr())
	cfg.HeartbeatInterval = 50 * time.Millisecond
	ag := startAgent(t, cfg)
	if ag.LeaseValid() {
		t.Fatal("a lease before any was granted")
	}
	a.set(func(m *fakeMDM) { m.leaseMs = 300 })
	waitFor(t, "a lease", ag.LeaseValid)
	if r := ag.LeaseRemaining(); r > 300*time.Millisecond {
		t.Fatalf("lease runs %s, more than granted", r)
	}
	a.set(func(m *fakeMDM) { m.leaseMs = 0 }) // fenced: answers grant nothing
	waitFor(t, "the lease to run out", func() bool { return !ag.LeaseValid() })
	a.set(func(m *fakeMDM) { m.leaseMs = 300 })
	waitFor(t, "a new lease", ag.LeaseValid)
	a.set(func(m *fakeMDM) { m.down = true })
	waitFor(t, "the lease to run out without heartbeats", func() bool { return !ag.LeaseValid() })
	if st := ag.Status(); st.LeaseRemainingMS != 0 {
		t.Fatalf("status %+v", st)
	}
}
