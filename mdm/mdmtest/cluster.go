// Package mdmtest starts in-process MDM clusters over real loopback TCP for tests: start, wait
// for a leader, kill, restart, and wait for the replicas to converge.
package mdmtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"pflex/internal/ports"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/internal/api"
	"pflex/mdm"
)

// Cluster is a set of in-process MDMs sharing one static peer list.
type Cluster struct {
	t       testing.TB
	Members []*Member
	Token   string
}

// Member is one MDM of the cluster; Server is nil while it is stopped.
type Member struct {
	Cfg    *mdm.Config
	Server *mdm.Server
}

// FreePorts picks n free loopback ports below the ephemeral range (see internal/ports).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	p, err := ports.Pick(n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FastRaft is raft timing for tests: elections in a few hundred milliseconds.
func FastRaft() *mdm.RaftSettings {
	return &mdm.RaftSettings{HeartbeatTimeout: "200ms", ElectionTimeout: "200ms", LeaderLeaseTimeout: "100ms", CommitTimeout: "2ms"}
}

// Configs builds n MDM configs on free loopback ports under dir.
func Configs(t testing.TB, dir string, n int, token string) []*mdm.Config {
	ports := FreePorts(t, 2*n)
	var peers []mdm.PeerConfig
	for i := 0; i < n; i++ {
		peers = append(peers, mdm.PeerConfig{
			ID:       fmt.Sprintf("mdm-%d", i+1),
			RaftAddr: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1]),
			APIAddr:  fmt.Sprintf("127.0.0.1:%d", ports[2*i]),
		})
	}
	var cfgs []*mdm.Config
	for i, p := range peers {
		cfg := mdm.DefaultConfig()
		cfg.NodeID = p.ID
		cfg.DataDir = filepath.Join(dir, p.ID)
		cfg.APIAddr = p.APIAddr
		cfg.RaftAddr = p.RaftAddr
		cfg.AdminToken = token
		cfg.LogLevel = "warn"
		cfg.Peers = peers
		cfg.Raft = FastRaft()
		_ = i
		cfgs = append(cfgs, cfg)
	}
	return cfgs
}

// StartCluster starts n MDMs and waits for a leader.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	for _, cfg := range Configs(t, t.TempDir(), n, "") {
		c.Members = append(c.Members, &Member{Cfg: cfg})
	}
	for i := range c.Members {
		c.Start(i)
	}
	t.Cleanup(c.Close)
	c.WaitLeader(10 * time.Second)
	return c
}

// Start (re)starts member i.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	m := c.Members[i]
	if m.Server != nil {
		return
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: m.Cfg.NodeID, Level: hclog.LevelFromString(m.Cfg.LogLevel)})
	var err error
	for attempt := 0; attempt < 50; attempt++ { // a killed node's ports may linger briefly
		if m.Server, err = mdm.Start(m.Cfg, logger); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("start %s: %v", m.Cfg.NodeID, err)
}

// Kill stops member i.
func (c *Cluster) Kill(i int) {
	m := c.Members[i]
	if m.Server != nil {
		m.Server.Close()
		m.Server = nil
	}
}

// Close stops every member.
func (c *Cluster) Close() {
	for i := range c.Members {
		c.Kill(i)
	}
}

// URL is member i's API base URL.
func (c *Cluster) URL(i int) string { return "http://" + c.Members[i].Cfg.APIAddr }

// WaitLeader waits until a running member is leader and every running member agrees on it.
func (c *Cluster) WaitLeader(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		leader := -1
		agree := true
		for i, m := range c.Members {
			if m.Server == nil {
				continue
			}
			n := m.Server.Node()
			if n.IsLeader() {
				leader = i
			}
			if id, _ := n.Leader(); id == "" {
				agree = false
			}
		}
		if leader >= 0 && agree {
			return leader
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("no leader within %s", timeout)
	return -1
}

// WaitConverged waits until every running member has applied the same entries and reports the
// same digest, and returns that digest.
func (c *Cluster) WaitConverged(timeout time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last []api.ClusterStatus
	for time.Now().Before(deadline) {
		last = last[:0]
		for _, m := range c.Members {
			if m.Server != nil {
				last = append(last, m.Server.Node().Status())
			}
		}
		same := len(last) > 0
		for _, s := range last[1:] {
			same = same && s.FSMIndex == last[0].FSMIndex && s.Digest == last[0].Digest && s.AppliedIndex == last[0].AppliedIndex
		}
		if same {
			return last[0].Digest
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range last {
		c.t.Logf("%s: fsm_index %d applied %d digest %s", s.NodeID, s.FSMIndex, s.AppliedIndex, s.Digest)
	}
	c.t.Fatalf("replicas did not converge within %s", timeout)
	return ""
}

// Do sends a JSON request to member i and decodes the JSON answer into out (if not nil). Like
// a real client it retries a 503 (no leader yet, leadership moving) for up to ten seconds.
func (c *Cluster) Do(i int, method, path string, body, out any) (int, http.Header, error) {
	deadline := time.Now().Add(10 * time.Second)
	// A write's retries carry one request id: a 503 may come after the write was applied
	// (outcome unknown), and the MDM answers the retry with the first outcome.
	var headers map[string]string
	if method != http.MethodGet {
		headers = map[string]string{api.HeaderRequestID: fmt.Sprintf("mdmtest-%d-%d", time.Now().UnixNano(), rand.Int64())}
	}
	for {
		code, hdr, err := DoJSONWithHeaders(c.URL(i), c.Token, method, path, body, out, headers)
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return code, hdr, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DoJSON is one JSON request against an MDM API base URL.
func DoJSON(base, token, method, path string, body, out any) (int, http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 15 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, resp.Header, err
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("decode %s %s (%d): %w: %s", method, path, resp.StatusCode, err, data)
		}
	}
	return resp.StatusCode, resp.Header, nil
}

// DecodeBody decodes a JSON response body.
func DecodeBody(r io.Reader, out any) error { return json.NewDecoder(r).Decode(out) }

// TestGossipKey is the gossip key test clusters share.
const TestGossipKey = "ZvG5M1yAbxn/f9ZTQa6wVQ1qlvSCnjPMZKW2qCS81tg="

// TestClusterKey is the cluster key test clusters share.
const TestClusterKey = "test-cluster-key"

// GossipConfigs builds n MDM configs that find each other over gossip and bootstrap with
// bootstrap_expect = n (no static peers).
func GossipConfigs(t testing.TB, dir string, n int) []*mdm.Config {
	cfgs := Configs(t, dir, n, "")
	ports := FreePorts(t, n)
	var join []string
	for _, p := range ports {
		join = append(join, fmt.Sprintf("127.0.0.1:%d", p))
	}
	for i, cfg := range cfgs {
		cfg.Peers = nil
		cfg.BootstrapExpect = n
		cfg.ClusterKey = TestClusterKey
		cfg.Gossip = &mdm.GossipSettings{BindAddr: join[i], Join: join, Key: TestGossipKey}
	}
	return cfgs
}

// StartGossipCluster starts n MDMs that bootstrap over gossip, in the given order, waiting
// delay[i] before starting member order[i] (nil: all at once, in order).
func StartGossipCluster(t testing.TB, n int, order []int, delay []time.Duration) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	for _, cfg := range GossipConfigs(t, t.TempDir(), n) {
		c.Members = append(c.Members, &Member{Cfg: cfg})
	}
	t.Cleanup(c.Close)
	if order == nil {
		for i := range c.Members {
			order = append(order, i)
		}
	}
	for k, i := range order {
		if k < len(delay) {
			time.Sleep(delay[k])
		}
		c.Start(i)
	}
	c.WaitLeader(20 * time.Second)
	return c
}

// Adopt starts a cluster whose member configs the caller prepared and waits for a leader.
func Adopt(t testing.TB, c *Cluster) *Cluster {
	t.Helper()
	c.t = t
	t.Cleanup(c.Close)
	for i := range c.Members {
		c.Start(i)
	}
	c.WaitLeader(20 * time.Second)
	return c
}

// DoJSONWithHeaders is DoJSON with extra request headers.
func DoJSONWithHeaders(base, token, method, path string, body, out any, headers map[string]string) (int, http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil && err != io.EOF {
			return resp.StatusCode, resp.Header, err
		}
	}
	return resp.StatusCode, resp.Header, nil
}
