package leader

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeGossip is a gossip view the test edits; every edit is an event.
type fakeGossip struct {
	mu     sync.Mutex
	leader Leader
	ok     bool
	mdms   []Leader
	subs   []chan struct{}
}

func (f *fakeGossip) Leader() (Leader, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader, f.ok
}

func (f *fakeGossip) MDMs() []Leader {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Leader(nil), f.mdms...)
}

func (f *fakeGossip) Subscribe() (<-chan struct{}, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{}, 16)
	f.subs = append(f.subs, ch)
	return ch, func() {}
}

func (f *fakeGossip) set(l Leader, ok bool) {
	f.mu.Lock()
	f.leader, f.ok = l, ok
	subs := f.subs
	f.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// fakeMDM answers /cluster/status?stale=1 with the leader it is told.
type fakeMDM struct {
	srv    *httptest.Server
	mu     sync.Mutex
	leader string
	id     string
	hits   int
	auth   string
}

func newFakeMDM(t *testing.T) *fakeMDM {
	m := &fakeMDM{}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.hits++
		m.auth = r.Header.Get("Authorization")
		w.Header().Set("X-Pflex-Leader", m.leader)
		if r.URL.Path != "/cluster/status" || r.URL.Query().Get("stale") != "1" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"leader_id": m.id, "leader_api": m.leader, "state": "follower", "term": 3})
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *fakeMDM) addr() string { return strings.TrimPrefix(m.srv.URL, "http://") }

func (m *fakeMDM) setLeader(id, api string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.id, m.leader = id, api
}

func (m *fakeMDM) hitCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hits
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func current(tr *Tracker) Leader {
	l, _ := tr.Current()
	return l
}

func TestGossipPreferredOverHTTP(t *testing.T) {
	m := newFakeMDM(t)
	m.setLeader("mdm-9", "127.0.0.1:1")
	g := &fakeGossip{}
	g.set(Leader{ID: "mdm-1", API: "127.0.0.1:8001", Term: 4}, true)
	tr := New(g, []string{m.addr()}, Options{ProbeInterval: 10 * time.Millisecond})
	defer tr.Close()
	l, ok := tr.Current()
	if !ok || l.ID != "mdm-1" || l.API != "127.0.0.1:8001" || l.Via != ViaGossip || l.Term != 4 {
		t.Fatalf("want mdm-1 from gossip, got %+v %v", l, ok)
	}
	time.Sleep(50 * time.Millisecond)
	if n := m.hitCount(); n != 0 {
		t.Fatalf("HTTP probed %d times although gossip named the leader", n)
	}
}

func TestHTTPFallbackWhenGossipSilent(t *testing.T) {
	m := newFakeMDM(t)
	m.setLeader("mdm-2", "127.0.0.1:8002")
	tr := New(&fakeGossip{}, []string{"127.0.0.1:1", m.addr()}, Options{ProbeInterval: 10 * time.Millisecond, ClusterKey: "k"})
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := tr.Wait(ctx)
	if err != nil || l.API != "127.0.0.1:8002" || l.ID != "mdm-2" || l.Via != ViaHTTP {
		t.Fatalf("want mdm-2 over HTTP, got %+v %v", l, err)
	}
	m.mu.Lock()
	auth := m.auth
	m.mu.Unlock()
	if auth != "Bearer k" {
		t.Fatalf("probe sent Authorization %q", auth)
	}
}

func TestHTTPOnlyWithoutGossip(t *testing.T) {
	m := newFakeMDM(t)
	m.setLeader("mdm-3", "127.0.0.1:8003")
	tr := New(nil, []string{m.addr()}, Options{ProbeInterval: 10 * time.Millisecond})
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if l, err := tr.Wait(ctx); err != nil || l.ID != "mdm-3" {
		t.Fatalf("got %+v %v", l, err)
	}
}

func TestSwitchOnGossipEvent(t *testing.T) {
	g := &fakeGossip{}
	g.set(Leader{ID: "mdm-1", API: "127.0.0.1:8001", Term: 4}, true)
	tr := New(g, nil, Options{Recheck: time.Hour})
	defer tr.Close()
	ch := tr.Changed()
	g.set(Leader{ID: "mdm-2", API: "127.0.0.1:8002", Term: 5}, true)
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no change signalled after the gossip event")
	}
	if l := current(tr); l.ID != "mdm-2" || l.Term != 5 {
		t.Fatalf("want mdm-2 term 5, got %+v", l)
	}
}

func TestReportFromHeaderNotUndoneByStaleGossip(t *testing.T) {
	g := &fakeGossip{mdms: []Leader{{ID: "mdm-1", API: "127.0.0.1:8001"}, {ID: "mdm-2", API: "127.0.0.1:8002"}}}
	g.set(Leader{ID: "mdm-1", API: "127.0.0.1:8001", Term: 4}, true)
	tr := New(g, nil, Options{Recheck: 5 * time.Millisecond})
	defer tr.Close()
	tr.Report("", "http://127.0.0.1:8002")
	if l := current(tr); l.API != "127.0.0.1:8002" || l.ID != "mdm-2" || l.Via != ViaHeader {
		t.Fatalf("want mdm-2 from the header, got %+v", l)
	}
	time.Sleep(30 * time.Millisecond) // several rechecks of the unchanged (stale) gossip view
	if l := current(tr); l.API != "127.0.0.1:8002" {
		t.Fatalf("stale gossip overrode the header: %+v", l)
	}
	// Gossip catching up with the new leader keeps it and learns the term.
	g.set(Leader{ID: "mdm-2", API: "127.0.0.1:8002", Term: 5}, true)
	waitFor(t, "term from gossip", func() bool { return current(tr).Term == 5 })
	tr.Report("", "") // an MDM that knows no leader changes nothing
	if _, ok := tr.Current(); !ok {
		t.Fatal("empty report cleared the leader")
	}
}

func TestFailedLeaderFallsBackToHTTPAndIsNotReadoptedFromStaleGossip(t *testing.T) {
	m := newFakeMDM(t)
	m.setLeader("mdm-2", "127.0.0.1:8002")
	g := &fakeGossip{}
	g.set(Leader{ID: "mdm-1", API: "127.0.0.1:8001", Term: 4}, true)
	tr := New(g, []string{m.addr()}, Options{ProbeInterval: 10 * time.Millisecond, Recheck: 5 * time.Millisecond})
	defer tr.Close()
	tr.Failed("127.0.0.1:8001")
	waitFor(t, "mdm-2 from the HTTP probe", func() bool { return current(tr).API == "127.0.0.1:8002" })
	time.Sleep(30 * time.Millisecond)
	if l := current(tr); l.API != "127.0.0.1:8002" {
		t.Fatalf("stale gossip brought the failed leader back: %+v", l)
	}
	// Failed for an address that is not the current leader changes nothing.
	tr.Failed("127.0.0.1:8001")
	if l := current(tr); l.API != "127.0.0.1:8002" {
		t.Fatalf("got %+v", l)
	}
}

func TestFailedLeaderReadoptedWhenReelected(t *testing.T) {
	g := &fakeGossip{}
	g.set(Leader{ID: "mdm-1", API: "127.0.0.1:8001", Term: 4}, true)
	tr := New(g, nil, Options{Recheck: time.Hour, SuspectHold: time.Hour})
	defer tr.Close()
	tr.Failed("127.0.0.1:8001")
	if _, ok := tr.Current(); ok {
		t.Fatal("failed leader still current")
	}
	tr.Report("", "127.0.0.1:8001") // a follower that has not noticed yet
	if _, ok := tr.Current(); ok {
		t.Fatal("second-hand report brought the failed leader back within the hold")
	}
	g.set(Leader{ID: "mdm-1", API: "127.0.0.1:8001", Term: 5}, true)
	waitFor(t, "re-elected mdm-1", func() bool { l, ok := tr.Current(); return ok && l.Term == 5 })
}

func TestWaitReturnsOnClose(t *testing.T) {
	tr := New(nil, nil, Options{})
	errc := make(chan error, 1)
	go func() {
		_, err := tr.Wait(context.Background())
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	tr.Close()
	select {
	case err := <-errc:
		if err != ErrClosed {
			t.Fatalf("want ErrClosed, got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
}
