package sds

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/internal/agent"
)

// fakeLeader is a one-MDM API that accepts every registration and heartbeat.
type fakeLeader struct {
	srv  *httptest.Server
	mu   sync.Mutex
	regs []fsm.RegisterNode
	hbs  int
}

func newFakeLeader(t *testing.T) *fakeLeader {
	f := &fakeLeader{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		self := strings.TrimPrefix(f.srv.URL, "http://")
		w.Header().Set("X-Pflex-Leader", self)
		if r.Header.Get("Authorization") != "Bearer k" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		switch r.URL.Path {
		case "/cluster/status":
			json.NewEncoder(w).Encode(map[string]any{"leader_id": "mdm-1", "leader_api": self})
		case agent.PathRegister:
			dec := json.NewDecoder(r.Body)
			dec.DisallowUnknownFields()
			var req fsm.RegisterNode
			if err := dec.Decode(&req); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			f.regs = append(f.regs, req)
			json.NewEncoder(w).Encode(map[string]any{"sds_id": 7, "leader_id": "mdm-1", "leader_api": self})
		case agent.PathHeartbeat:
			f.hbs++
			json.NewEncoder(w).Encode(map[string]any{"leader_id": "mdm-1", "leader_api": self, "term": 1, "state": "leader"})
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func TestServiceRegistersAndServesStatus(t *testing.T) {
	f := newFakeLeader(t)
	dir := t.TempDir()
	cfg := validConfig()
	cfg.DataDir = filepath.Join(dir, "sds1")
	cfg.APIAddr, cfg.MgmtAddr, cfg.DataAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Devices = []string{filepath.Join(dir, "dev0.img")}
	cfg.HeartbeatInterval = "20ms"
	cfg.MDM = []string{strings.TrimPrefix(f.srv.URL, "http://")}
	cfg.Gossip.BindAddr, cfg.Gossip.Join = "127.0.0.1:0", nil
	s, err := Start(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for s.Status().Heartbeats < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeats: %+v", s.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.mu.Lock()
	reg := f.regs[0]
	f.mu.Unlock()
	if reg.ID != "sds-1" || reg.SDS == nil || !filepath.IsAbs(reg.SDS.Devices[0]) || reg.APIAddr != s.APIAddr() ||
		reg.MgmtAddr != s.MgmtAddr() || reg.DataAddr != s.DataAddr() || reg.GossipAddr == "" || reg.NBDAddr != "" {
		t.Fatalf("registration: %+v %+v", reg, reg.SDS)
	}
	for _, addr := range []string{s.APIAddr(), s.MgmtAddr()} {
		resp, err := http.Get("http://" + addr + "/status")
		if err != nil {
			t.Fatal(err)
		}
		var st agent.Status
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil || st.ID != "sds-1" || st.Role != "sds" || !st.Registered || st.SDSID != 7 || st.LeaderID != "mdm-1" ||
			st.GossipAlive != 1 || st.LastHeartbeatAgeMS < 0 {
			t.Fatalf("GET %s/status: %+v %v", addr, st, err)
		}
		resp, err = http.Get("http://" + addr + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s/healthz: %v %v", addr, resp, err)
		}
		resp.Body.Close()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStartNamesBusyListener(t *testing.T) {
	busy := httptest.NewServer(http.NotFoundHandler())
	defer busy.Close()
	cfg := validConfig()
	cfg.DataDir = t.TempDir()
	cfg.Devices = []string{filepath.Join(cfg.DataDir, "dev0.img")}
	cfg.APIAddr = strings.TrimPrefix(busy.URL, "http://")
	_, err := Start(cfg, hclog.NewNullLogger())
	if err == nil || !strings.Contains(err.Error(), "api_addr") {
		t.Fatalf("want an error naming api_addr, got %v", err)
	}
}
