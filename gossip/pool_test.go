package gossip

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// logBuf is a goroutine-safe log sink tests can assert on.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testNode is one pool under test with its captured log.
type testNode struct {
	*Pool
	logs *logBuf
}

// testConfig is a loopback config on a kernel-chosen port with a fast join retry.
func testConfig(id string, key []byte, meta Meta, join ...string) (Config, *logBuf) {
	logs := &logBuf{}
	meta.ID = id
	return Config{
		BindAddr:          "127.0.0.1:0",
		Join:              join,
		Key:               key,
		Meta:              meta,
		Logger:            hclog.New(&hclog.LoggerOptions{Name: id, Output: logs, Level: hclog.Debug}),
		JoinRetryInterval: 100 * time.Millisecond,
	}, logs
}

func startNode(t *testing.T, cfg Config, logs *logBuf) *testNode {
	t.Helper()
	p, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.Meta.ID, err)
	}
	n := &testNode{Pool: p, logs: logs}
	t.Cleanup(func() {
		_ = p.Shutdown()
		if t.Failed() {
			t.Logf("log of %s:\n%s", cfg.Meta.ID, logs.String())
		}
	})
	return n
}

func newNode(t *testing.T, id string, key []byte, meta Meta, join ...string) *testNode {
	t.Helper()
	cfg, logs := testConfig(id, key, meta, join...)
	return startNode(t, cfg, logs)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func member(p *Pool, name string) (Member, bool) {
	for _, m := range p.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

func aliveNames(p *Pool, c string) string {
	var names []string
	for _, m := range p.Alive(c) {
		names = append(names, m.Name)
	}
	return strings.Join(names, ",")
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

// threeNodes starts an MDM, an SDS and an SDC joined through the MDM and waits until
// everyone sees everyone.
func threeNodes(t *testing.T) (mdm, sds, sdc *testNode) {
	t.Helper()
	mdm = newNode(t, "mdm-1", testKey, Meta{Caps: []string{CapMDM}, API: "127.0.0.1:8001", Raft: "127.0.0.1:8101", Version: "test", Fresh: true, Expect: 3})
	sds = newNode(t, "sds-1", testKey, Meta{Caps: []string{CapSDS}, API: "127.0.0.1:9101", Data: "127.0.0.1:9701"}, mdm.Addr())
	sdc = newNode(t, "sdc-1", testKey, Meta{Caps: []string{CapSDC, CapMGMT}, NBD: "127.0.0.1:10809"}, mdm.Addr(), sds.Addr())
	for _, n := range []*testNode{mdm, sds, sdc} {
		waitFor(t, 5*time.Second, n.LocalName()+" sees 3 alive", func() bool { return n.NumAlive() == 3 })
	}
	return mdm, sds, sdc
}

func TestPoolsSeeEachOtherWithMeta(t *testing.T) {
	mdm, sds, sdc := threeNodes(t)
	for _, n := range []*testNode{mdm, sds, sdc} {
		if got := aliveNames(n.Pool, ""); got != "mdm-1,sdc-1,sds-1" {
			t.Errorf("%s Alive(\"\") = %s", n.LocalName(), got)
		}
		if got := aliveNames(n.Pool, CapSDS); got != "sds-1" {
			t.Errorf("%s Alive(SDS) = %s", n.LocalName(), got)
		}
		if got := aliveNames(n.Pool, CapMGMT); got != "sdc-1" {
			t.Errorf("%s Alive(MGMT) = %s", n.LocalName(), got)
		}
	}
	m, ok := member(sdc.Pool, "mdm-1")
	if !ok {
		t.Fatal("sdc does not list mdm-1")
	}
	if m.Addr != mdm.Addr() || m.State != StateAlive || m.Meta.Raft != "127.0.0.1:8101" ||
		m.Meta.API != "127.0.0.1:8001" || !m.Meta.Fresh || m.Meta.Expect != 3 || m.Meta.Version != "test" {
		t.Errorf("sdc's view of mdm-1 = %+v", m)
	}
	if m, _ := member(mdm.Pool, "sds-1"); m.Meta.Data != "127.0.0.1:9701" || !m.Meta.Has(CapSDS) || m.Meta.Has(CapMDM) {
		t.Errorf("mdm's view of sds-1 = %+v", m)
	}
	if m, _ := member(mdm.Pool, "sdc-1"); m.Meta.NBD != "127.0.0.1:10809" {
		t.Errorf("mdm's view of sdc-1 = %+v", m)
	}
	if _, ok := mdm.Leader(); ok {
		t.Error("Leader() found a leader before anyone announced one")
	}
}

func TestUpdateMetaAnnouncesLeader(t *testing.T) {
	mdm, sds, sdc := threeNodes(t)
	start := time.Now()
	if err := mdm.UpdateMeta(func(m *Meta) { m.Leader, m.Term, m.Fresh = true, 7, false }); err != nil {
		t.Fatal(err)
	}
	t.Logf("UpdateMeta returned after %s", time.Since(start))
	if lm := mdm.LocalMeta(); !lm.Leader || lm.Term != 7 {
		t.Fatalf("LocalMeta after update = %+v", lm)
	}
	for _, n := range []*testNode{sds, sdc} {
		waitFor(t, time.Second, n.LocalName()+" sees mdm-1 lead term 7", func() bool {
			l, ok := n.Leader()
			return ok && l.Name == "mdm-1" && l.Meta.Term == 7 && !l.Meta.Fresh
		})
		t.Logf("%s saw the leader announcement %s after UpdateMeta was called", n.LocalName(), time.Since(start))
	}
}

func TestLeaderPicksHighestTermThenLowestName(t *testing.T) {
	a := newNode(t, "mdm-a", testKey, Meta{Caps: []string{CapMDM}})
	b := newNode(t, "mdm-b", testKey, Meta{Caps: []string{CapMDM}}, a.Addr())
	c := newNode(t, "mdm-c", testKey, Meta{Caps: []string{CapMDM}}, a.Addr())
	s := newNode(t, "sds-x", testKey, Meta{Caps: []string{CapSDS}, Leader: true, Term: 99}, a.Addr()) // not an MDM: ignored
	waitFor(t, 5*time.Second, "4 alive", func() bool { return s.NumAlive() == 4 && a.NumAlive() == 4 })

	announce := func(n *testNode, term uint64) {
		t.Helper()
		if err := n.UpdateMeta(func(m *Meta) { m.Leader, m.Term = true, term }); err != nil {
			t.Fatal(err)
		}
	}
	leaderIs := func(name string, term uint64) func() bool {
		return func() bool {
			l, ok := s.Leader()
			return ok && l.Name == name && l.Meta.Term == term
		}
	}
	announce(a, 3)
	waitFor(t, 2*time.Second, "mdm-a term 3", leaderIs("mdm-a", 3))
	announce(c, 5) // a stale leader still announcing is outranked by the newer term
	waitFor(t, 2*time.Second, "mdm-c term 5", leaderIs("mdm-c", 5))
	announce(b, 5) // same term: lowest name wins
	waitFor(t, 2*time.Second, "mdm-b term 5", leaderIs("mdm-b", 5))
	if err := b.UpdateMeta(func(m *Meta) { m.Leader = false }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "mdm-c again", leaderIs("mdm-c", 5))
}

func TestShutdownMemberBecomesDeadAndEventDelivered(t *testing.T) {
	mdm, sds, sdc := threeNodes(t)
	events, unsubscribe := mdm.Subscribe()
	defer unsubscribe()

	start := time.Now()
	if err := sdc.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := sdc.Shutdown(); err != nil { // idempotent
		t.Fatal(err)
	}
	deadline := time.After(8 * time.Second)
	for got := false; !got; {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event channel closed")
			}
			if ev.Type == EventLeave && ev.Member.Name == "sdc-1" {
				if ev.Member.State != StateDead {
					t.Errorf("leave event state = %q, want dead", ev.Member.State)
				}
				got = true
			}
		case <-deadline:
			t.Fatal("no EventLeave for sdc-1 within 8s")
		}
	}
	t.Logf("sdc-1 declared dead after %s", time.Since(start))
	for _, n := range []*testNode{mdm, sds} {
		waitFor(t, 5*time.Second, n.LocalName()+" lists sdc-1 dead", func() bool {
			m, ok := member(n.Pool, "sdc-1")
			return ok && m.State == StateDead && m.Meta.NBD != "" && !m.LastChange.Before(start)
		})
		if n.NumAlive() != 2 || len(n.Members()) != 3 {
			t.Errorf("%s: NumAlive=%d Members=%d, want 2 and 3", n.LocalName(), n.NumAlive(), len(n.Members()))
		}
	}
	if !mdm.Forget("sdc-1") || mdm.Forget("sds-1") || len(mdm.Members()) != 2 {
		t.Error("Forget: want dead sdc-1 dropped and alive sds-1 kept")
	}
}

func TestLeaveIsReportedAsLeft(t *testing.T) {
	mdm, sds, _ := threeNodes(t)
	if err := sds.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := sds.UpdateMeta(func(*Meta) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("UpdateMeta after Leave = %v, want ErrClosed", err)
	}
	waitFor(t, 3*time.Second, "mdm lists sds-1 as left", func() bool {
		m, _ := member(mdm.Pool, "sds-1")
		return m.State == StateLeft
	})
	_ = sds.Shutdown()
	if err := sds.Leave(time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("Leave after Shutdown = %v, want ErrClosed", err)
	}
}

// notAdmitted asserts that neither side lists the other as alive.
func notAdmitted(t *testing.T, a, b *testNode) {
	t.Helper()
	for _, pair := range [][2]*testNode{{a, b}, {b, a}} {
		if m, ok := member(pair[0].Pool, pair[1].LocalName()); ok && m.IsAlive() {
			t.Errorf("%s lists %s as %s", pair[0].LocalName(), pair[1].LocalName(), m.State)
		}
	}
}

func TestWrongKeyIsNotAdmitted(t *testing.T) {
	mdm := newNode(t, "mdm-1", testKey, Meta{Caps: []string{CapMDM}})
	wrong := []byte("fedcba9876543210fedcba9876543210")
	x := newNode(t, "sds-x", wrong, Meta{Caps: []string{CapSDS}}, mdm.Addr())
	waitFor(t, 5*time.Second, "the wrong-key node to blame the key", func() bool {
		return strings.Contains(x.logs.String(), "gossip join to "+mdm.Addr()+" failed: no installed keys could decrypt") &&
			strings.Contains(x.logs.String(), "is the gossip key the same on every node?")
	})
	waitFor(t, 5*time.Second, "the pool to blame the key too", func() bool {
		return strings.Contains(mdm.logs.String(), "could not be decrypted — is the gossip key the same on every node?")
	})
	notAdmitted(t, mdm, x)
	if testing.Verbose() {
		t.Logf("wrong-key node log:\n%s\npool log:\n%s", x.logs.String(), mdm.logs.String())
	}
	if x.NumAlive() != 1 || mdm.NumAlive() != 1 {
		t.Errorf("NumAlive: x=%d mdm=%d, want 1 and 1", x.NumAlive(), mdm.NumAlive())
	}
}

func TestNoKeyCannotJoinEncryptedPool(t *testing.T) {
	mdm := newNode(t, "mdm-1", testKey, Meta{Caps: []string{CapMDM}})
	x := newNode(t, "sdc-x", nil, Meta{Caps: []string{CapSDC}}, mdm.Addr())
	if !strings.Contains(x.logs.String(), "encryption is off") {
		t.Error("no warning about running without a key")
	}
	waitFor(t, 5*time.Second, "the keyless node to blame the key", func() bool {
		return strings.Contains(x.logs.String(), "is the gossip key the same on every node?")
	})
	notAdmitted(t, mdm, x)
}

// freePort returns a loopback port that was free a moment ago (for a seed started later).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestJoinRetryReachesLateSeed(t *testing.T) {
	seedAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	early := newNode(t, "sds-1", testKey, Meta{Caps: []string{CapSDS}}, seedAddr)
	waitFor(t, 3*time.Second, "a join failure warning", func() bool {
		return strings.Contains(early.logs.String(), "gossip join to "+seedAddr+" failed")
	})
	if n := strings.Count(early.logs.String(), "gossip join to "); n != 1 {
		t.Errorf("%d join warnings within the first 5s, want 1 (rate limit)", n)
	}

	cfg, logs := testConfig("mdm-1", testKey, Meta{Caps: []string{CapMDM}}, seedAddr) // its own address: skipped
	cfg.BindAddr = seedAddr
	seed := startNode(t, cfg, logs)
	waitFor(t, 5*time.Second, "the early node to join the late seed", func() bool {
		return early.NumAlive() == 2 && seed.NumAlive() == 2
	})
	if !strings.Contains(early.logs.String(), "joined gossip pool") {
		t.Error("no 'joined gossip pool' log line")
	}
	if strings.Contains(seed.logs.String(), "gossip join to") {
		t.Error("the seed tried to join itself")
	}
}

func TestMetaOver512BytesIsRefused(t *testing.T) {
	big := Meta{Caps: []string{CapSDS}, API: strings.Repeat("x", 600)}
	cfg, _ := testConfig("sds-big", nil, big)
	_, err := Start(cfg)
	if !errors.Is(err, ErrMetaTooLarge) || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("Start with big meta: %v", err)
	}

	n := newNode(t, "sds-1", nil, Meta{Caps: []string{CapSDS}})
	err = n.UpdateMeta(func(m *Meta) { m.API = strings.Repeat("y", 600) })
	if !errors.Is(err, ErrMetaTooLarge) || !strings.Contains(err.Error(), "limit is 512") {
		t.Fatalf("UpdateMeta with big meta: %v", err)
	}
	if n.LocalMeta().API != "" {
		t.Error("refused update changed the local meta")
	}
	if err := n.UpdateMeta(func(m *Meta) { m.ID = "other" }); err == nil {
		t.Error("UpdateMeta let the id change")
	}
}

// foreignDelegate serves node meta that is not pflex JSON.
type foreignDelegate struct{ nodeDelegate }

func (foreignDelegate) NodeMeta(int) []byte { return []byte("not json {") }

func TestForeignMetaIsKeptEmpty(t *testing.T) {
	n := newNode(t, "mdm-1", nil, Meta{Caps: []string{CapMDM}})
	c := memberlist.DefaultLANConfig()
	c.Name, c.BindAddr, c.BindPort = "foreign", "127.0.0.1", 0
	c.Delegate = foreignDelegate{}
	c.LogOutput = &logBuf{}
	ml, err := memberlist.Create(c)
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Shutdown()
	if _, err := ml.Join([]string{n.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "the foreign node listed", func() bool {
		m, ok := member(n.Pool, "foreign")
		return ok && m.IsAlive()
	})
	if m, _ := member(n.Pool, "foreign"); m.Meta.ID != "" || len(m.Meta.Caps) != 0 {
		t.Errorf("foreign meta = %+v, want empty", m.Meta)
	}
	if !strings.Contains(n.logs.String(), "member meta does not decode") {
		t.Error("no warning about undecodable meta")
	}
	if got := aliveNames(n.Pool, CapMDM); got != "mdm-1" {
		t.Errorf("Alive(MDM) = %s", got)
	}
}

func TestSubscribeUnsubscribeAndShutdownClose(t *testing.T) {
	n := newNode(t, "mdm-1", nil, Meta{Caps: []string{CapMDM}})
	ch1, unsub1 := n.Subscribe()
	ch2, _ := n.Subscribe()
	if err := n.UpdateMeta(func(m *Meta) { m.Term = 1 }); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch1:
		if ev.Type != EventUpdate || ev.Member.Name != "mdm-1" || ev.Member.Meta.Term != 1 {
			t.Errorf("event = %+v", ev)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no update event for the local node")
	}
	unsub1()
	unsub1() // idempotent
	if _, ok := <-ch1; ok {
		t.Error("channel open after unsubscribe")
	}
	// overflow: 300 updates into a 256 buffer nobody reads
	for i := range 300 {
		if err := n.UpdateMeta(func(m *Meta) { m.Term = uint64(i + 2) }); err != nil {
			t.Fatal(err)
		}
	}
	if n.DroppedEvents() == 0 {
		t.Error("no dropped events counted for a full subscriber")
	}
	_ = n.Shutdown()
	for range ch2 { // drains then ends: Shutdown closed it
	}
	if _, ok := <-func() <-chan Event { c, _ := n.Subscribe(); return c }(); ok {
		t.Error("Subscribe after Shutdown returned an open channel")
	}
	if err := n.UpdateMeta(func(*Meta) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("UpdateMeta after Shutdown = %v", err)
	}
}

func TestRestartedNodeRejoinsUnderSameName(t *testing.T) {
	mdm := newNode(t, "mdm-1", testKey, Meta{Caps: []string{CapMDM}})
	cfg, logs := testConfig("sds-1", testKey, Meta{Caps: []string{CapSDS}, Data: "old"}, mdm.Addr())
	cfg.BindAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	sds := startNode(t, cfg, logs)
	waitFor(t, 5*time.Second, "2 alive", func() bool { return mdm.NumAlive() == 2 })
	events, unsubscribe := mdm.Subscribe()
	defer unsubscribe()

	_ = sds.Shutdown()
	waitFor(t, 8*time.Second, "sds-1 dead", func() bool {
		m, _ := member(mdm.Pool, "sds-1")
		return m.State == StateDead
	})
	cfg.Meta.Data = "new"
	cfg2, logs2 := testConfig("sds-1", testKey, cfg.Meta, mdm.Addr())
	cfg2.BindAddr = cfg.BindAddr
	startNode(t, cfg2, logs2)
	waitFor(t, 5*time.Second, "sds-1 alive again with its new meta", func() bool {
		m, _ := member(mdm.Pool, "sds-1")
		return m.State == StateAlive && m.Meta.Data == "new"
	})
	for {
		select {
		case ev := <-events:
			if ev.Type == EventJoin && ev.Member.Name == "sds-1" {
				return
			}
		case <-time.After(time.Second):
			t.Fatal("no EventJoin for the restarted sds-1")
		}
	}
}
