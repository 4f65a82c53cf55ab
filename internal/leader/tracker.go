// Package leader tracks which MDM is the Raft leader, from gossip first and from the MDMs' HTTP
// answers when gossip has not (yet) told.
package leader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/internal/api"
)

// Where a leader was learned.
const (
	ViaGossip = "gossip" // an alive MDM's metadata announces leadership
	ViaHTTP   = "http"   // GET /cluster/status?stale=1 (or /readyz) of some MDM named it
	ViaHeader = "header" // an X-Pflex-Leader response header a caller reported
)

// Defaults of Options.
const (
	DefaultProbeInterval = 250 * time.Millisecond
	DefaultProbeTimeout  = time.Second
	DefaultRecheck       = time.Second
	// DefaultSuspectHold is how long a leader reported failed is not re-adopted from a second
	// hand (a follower's header or status still naming it), so that followers that have not yet
	// noticed the loss do not send callers back to a dead leader over and over.
	DefaultSuspectHold = time.Second
)

// ErrClosed is returned by Wait once the tracker is closed.
var ErrClosed = errors.New("leader: tracker closed")

// Leader is one MDM believed to be the Raft leader.
type Leader struct {
	ID   string `json:"id"`   // MDM node id; "" when only the address is known
	API  string `json:"api"`  // HTTP API address, host:port
	Term uint64 `json:"term"` // Raft term announced in gossip; 0 when unknown
	Via  string `json:"via"`  // ViaGossip, ViaHTTP or ViaHeader
}

// Gossip is the part of the gossip pool the tracker reads. PoolView adapts a *gossip.Pool.
type Gossip interface {
	// Leader is the alive MDM announcing leadership with the highest term.
	Leader() (Leader, bool)
	// MDMs are the alive MDMs (ID and API address).
	MDMs() []Leader
	// Subscribe delivers a value whenever membership or metadata changed; cancel stops it.
	Subscribe() (events <-chan struct{}, cancel func())
}

// Options tune a Tracker. Zero values take the defaults.
type Options struct {
	Logger hclog.Logger
	// ClusterKey is sent as "Authorization: Bearer <key>" on HTTP probes.
	ClusterKey string
	// HTTPClient sends the probes; its Timeout is ignored (ProbeTimeout bounds each probe).
	HTTPClient    *http.Client
	ProbeInterval time.Duration // between HTTP probe rounds while no leader is known
	ProbeTimeout  time.Duration // one probe request
	Recheck       time.Duration // re-read the gossip view even without events
	SuspectHold   time.Duration
}

// Tracker resolves the current MDM leader. Gossip is preferred: the tracker re-reads the pool's
// view on every gossip event, so an announced change is seen within a gossip round. Callers
// report what MDMs tell them (Report, from X-Pflex-Leader) and leaders that failed them
// (Failed); while no leader is known the tracker asks the MDMs it knows over HTTP.
// Safe for concurrent use.
type Tracker struct {
	gossip   Gossip // nil: HTTP only
	fallback []string
	opts     Options
	log      hclog.Logger

	mu         sync.Mutex
	cur        Leader
	known      bool
	lastGossip Leader // the gossip view last observed, adopted only when it changes
	suspect    string // API address reported failed
	suspectAt  time.Time
	changed    chan struct{} // closed and replaced on every change of cur
	closed     bool

	kick chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

// New starts a tracker. g may be nil (HTTP only); fallback are MDM API addresses (host:port)
// to ask when gossip does not name a leader.
func New(g Gossip, fallback []string, opts Options) *Tracker {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = DefaultProbeInterval
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = DefaultProbeTimeout
	}
	if opts.Recheck <= 0 {
		opts.Recheck = DefaultRecheck
	}
	if opts.SuspectHold <= 0 {
		opts.SuspectHold = DefaultSuspectHold
	}
	t := &Tracker{
		gossip:   g,
		fallback: append([]string(nil), fallback...),
		opts:     opts,
		log:      opts.Logger,
		changed:  make(chan struct{}),
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	var events <-chan struct{}
	cancel := func() {}
	if g != nil {
		events, cancel = g.Subscribe()
		t.fromGossip()
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer cancel()
		t.run(events)
	}()
	return t
}

// Current is the leader believed now.
func (t *Tracker) Current() (Leader, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur, t.known
}

// Changed returns a channel closed at the next change of the current leader (including it
// becoming unknown). Take a fresh one after each change.
func (t *Tracker) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// Wait returns the current leader, waiting (and probing) until one is known.
func (t *Tracker) Wait(ctx context.Context) (Leader, error) {
	for {
		t.mu.Lock()
		cur, known, ch, closed := t.cur, t.known, t.changed, t.closed
		t.mu.Unlock()
		if closed {
			return Leader{}, ErrClosed
		}
		if known {
			return cur, nil
		}
		t.poke()
		select {
		case <-ctx.Done():
			return Leader{}, ctx.Err()
		case <-t.done:
			return Leader{}, ErrClosed
		case <-ch:
		}
	}
}

// Report records a leader an MDM announced: the X-Pflex-Leader header (id ""), or the
// leader_id / leader_api of an answer. An empty address (the MDM knows no leader) is ignored.
func (t *Tracker) Report(id, apiAddr string) {
	apiAddr = normalize(apiAddr)
	if apiAddr == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.known && t.cur.API == apiAddr {
		if t.cur.ID == "" && id != "" {
			t.cur.ID = id
		}
		return
	}
	if t.held(apiAddr) {
		return
	}
	if id == "" {
		id = t.idOfLocked(apiAddr)
	}
	t.setLocked(Leader{ID: id, API: apiAddr, Via: ViaHeader}, true)
}

// Failed records that the leader at apiAddr did not answer or answered that it cannot serve
// (503 without naming another leader). If it is the current leader, the tracker turns to a
// different gossip-announced leader if there is one, and otherwise to HTTP probes.
func (t *Tracker) Failed(apiAddr string) {
	apiAddr = normalize(apiAddr)
	t.mu.Lock()
	if apiAddr == "" || !t.known || t.cur.API != apiAddr {
		t.mu.Unlock()
		return
	}
	t.suspect, t.suspectAt = apiAddr, time.Now()
	t.setLocked(Leader{}, false)
	t.mu.Unlock()
	t.fromGossip()
	t.poke()
}

// Close stops the tracker's goroutine and its gossip subscription.
func (t *Tracker) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	t.mu.Unlock()
	close(t.done)
	t.wg.Wait()
}

func (t *Tracker) poke() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// held reports whether apiAddr is a recently failed leader that second-hand reports must not
// bring back yet. Called with mu held.
func (t *Tracker) held(apiAddr string) bool {
	return t.suspect == apiAddr && time.Since(t.suspectAt) < t.opts.SuspectHold
}

// setLocked changes the current leader and wakes waiters. Called with mu held.
func (t *Tracker) setLocked(l Leader, known bool) {
	same := known == t.known && l.API == t.cur.API
	if known && same {
		// Same address: keep what is better known (an id, a term) without waking anyone.
		if l.ID == "" {
			l.ID = t.cur.ID
		}
		if l.Term < t.cur.Term {
			l.Term = t.cur.Term
		}
		t.cur = l
		return
	}
	if same {
		return
	}
	if known {
		t.log.Debug("MDM leader", "id", l.ID, "api", l.API, "term", l.Term, "via", l.Via)
		if l.API != t.suspect {
			t.suspect = ""
		}
	} else {
		t.log.Debug("MDM leader unknown", "was", t.cur.API)
	}
	t.cur, t.known = l, known
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *Tracker) idOfLocked(apiAddr string) string {
	if t.gossip == nil {
		return ""
	}
	for _, m := range t.gossip.MDMs() {
		if normalize(m.API) == apiAddr {
			return m.ID
		}
	}
	return ""
}

// fromGossip re-reads the gossip view. A gossip leader is adopted when the view changed since
// it was last read (so that a stale view does not override what an MDM just told a caller), or
// when no leader is known and the one gossip names has not just failed.
func (t *Tracker) fromGossip() {
	if t.gossip == nil {
		return
	}
	g, ok := t.gossip.Leader()
	g.API = normalize(g.API)
	g.Via = ViaGossip
	t.mu.Lock()
	defer t.mu.Unlock()
	if !ok || g.API == "" {
		t.lastGossip = Leader{}
		return
	}
	prev := t.lastGossip
	t.lastGossip = g
	fresh := g.ID != prev.ID || g.API != prev.API || g.Term != prev.Term
	reelected := g.API == prev.API && g.Term > prev.Term
	switch {
	case fresh && (!t.held(g.API) || reelected):
		t.setLocked(g, true)
	case !t.known && !t.held(g.API):
		t.setLocked(g, true)
	}
}

func (t *Tracker) run(events <-chan struct{}) {
	recheck := time.NewTicker(t.opts.Recheck)
	defer recheck.Stop()
	probe := time.NewTimer(0)
	defer probe.Stop()
	for {
		select {
		case <-t.done:
			return
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			t.fromGossip()
		case <-recheck.C:
			t.fromGossip()
		case <-t.kick:
			t.probeIfUnknown()
		case <-probe.C:
			t.probeIfUnknown()
			probe.Reset(t.opts.ProbeInterval)
		}
	}
}

// probeIfUnknown asks the known MDMs for the leader while none is known.
func (t *Tracker) probeIfUnknown() {
	if _, known := t.Current(); known {
		return
	}
	t.fromGossip()
	if _, known := t.Current(); known {
		return
	}
	for _, addr := range t.candidates() {
		select {
		case <-t.done:
			return
		default:
		}
		l, err := t.ask(addr)
		if err != nil {
			t.log.Trace("leader probe failed", "mdm", addr, "error", err)
			continue
		}
		if l.API == "" {
			continue
		}
		t.mu.Lock()
		if !t.known && !t.held(l.API) {
			t.setLocked(l, true)
		}
		known := t.known
		t.mu.Unlock()
		if known {
			return
		}
	}
}

// Others returns the MDM API addresses other than apiAddr that the tracker knows (configured,
// and alive in gossip), deduplicated.
func (t *Tracker) Others(apiAddr string) []string {
	apiAddr = normalize(apiAddr)
	return slices.DeleteFunc(t.candidates(), func(a string) bool { return a == apiAddr })
}

// candidates are the configured MDM addresses and those of alive gossip MDMs, deduplicated.
func (t *Tracker) candidates() []string {
	seen := map[string]bool{}
	var out []string
	add := func(a string) {
		if a = normalize(a); a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	if t.gossip != nil {
		for _, m := range t.gossip.MDMs() {
			add(m.API)
		}
	}
	for _, a := range t.fallback {
		add(a)
	}
	return out
}

type statusAnswer struct {
	LeaderID  string `json:"leader_id"`
	LeaderAPI string `json:"leader_api"`
	Term      uint64 `json:"term"`
	State     string `json:"state"`
}

// ask queries one MDM for its view of the leader: GET /cluster/status?stale=1, and /readyz
// when the status route refuses the cluster key.
func (t *Tracker) ask(addr string) (Leader, error) {
	l, status, err := t.get(addr, "/cluster/status?stale=1")
	if err == nil || (status != http.StatusUnauthorized && status != http.StatusForbidden && status != http.StatusNotFound) {
		return l, err
	}
	l, _, err2 := t.get(addr, "/readyz")
	if err2 != nil && l.API == "" {
		return l, fmt.Errorf("%w; /readyz: %w", err, err2)
	}
	return l, nil
}

func (t *Tracker) get(addr, path string) (Leader, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), t.opts.ProbeTimeout)
	defer cancel()
	go func() {
		select {
		case <-t.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return Leader{}, 0, err
	}
	req.Header.Set("Accept", "application/json")
	if t.opts.ClusterKey != "" {
		req.Header.Set("Authorization", "Bearer "+t.opts.ClusterKey)
	}
	resp, err := t.opts.HTTPClient.Do(req)
	if err != nil {
		return Leader{}, 0, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	// The header names the leader whatever the status; the body may add its id and term.
	l := Leader{API: normalize(resp.Header.Get(api.HeaderLeader)), Via: ViaHTTP}
	if resp.StatusCode != http.StatusOK {
		return l, resp.StatusCode, fmt.Errorf("GET %s at %s: %s", path, addr, resp.Status)
	}
	var a statusAnswer
	if err := json.Unmarshal(data, &a); err == nil && a.LeaderAPI != "" {
		l.API, l.ID = normalize(a.LeaderAPI), a.LeaderID
		if a.State == "leader" {
			l.Term = a.Term
		}
	}
	return l, resp.StatusCode, nil
}

// normalize turns "http://host:port/" into "host:port".
func normalize(a string) string {
	a = strings.TrimSpace(a)
	if i := strings.Index(a, "://"); i >= 0 {
		a = a[i+3:]
	}
	return strings.TrimRight(a, "/")
}
