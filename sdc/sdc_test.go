package sdc

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/internal/agent"
)

func validConfig() *Config {
	c := DefaultConfig()
	c.ClusterKey = "k"
	c.Gossip.Join = []string{"127.0.0.1:7901"}
	return c
}

func TestValidateNamesTheBadField(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range []struct {
		field string
		edit  func(c *Config)
	}{
		{"id", func(c *Config) { c.ID = "" }},
		{"data_dir", func(c *Config) { c.DataDir = "" }},
		{"cluster_key", func(c *Config) { c.ClusterKey = "" }},
		{"log_level", func(c *Config) { c.LogLevel = "loud" }},
		{"heartbeat_interval", func(c *Config) { c.HeartbeatInterval = "-1s" }},
		{"mdm[0]", func(c *Config) { c.MDM = []string{"nowhere"} }},
		{"api_addr", func(c *Config) { c.APIAddr = "" }},
		{"mgmt_addr", func(c *Config) { c.MgmtAddr = "x" }},
		{"nbd_addr", func(c *Config) { c.NBDAddr = "10809" }},
		{"gossip", func(c *Config) { c.Gossip = nil }},
		{"gossip.bind_addr", func(c *Config) { c.Gossip.BindAddr = "7921" }},
		{"gossip.key", func(c *Config) { c.Gossip.Key = "not base64!" }},
		{"gossip.join", func(c *Config) { c.Gossip.Join = nil }},
		{"shared_memory_mb", func(c *Config) { c.SharedMemoryMB = 4 }},
		{"shared_memory_mb", func(c *Config) { c.SharedMemoryMB = -1 }},
		{"shared_memory_mb", func(c *Config) { c.SharedMemoryMB = 4096 }},
	} {
		c := validConfig()
		tc.edit(c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("%s: want an error starting with the field name, got %v", tc.field, err)
		}
	}
}

func TestLocalConfigLoads(t *testing.T) {
	c, err := LoadConfig(filepath.Join("..", "configs", "local", "sdc1.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != "sdc-1" || c.APIAddr != "127.0.0.1:8301" || c.MgmtAddr != "127.0.0.1:8401" || c.NBDAddr != "127.0.0.1:10809" ||
		c.Gossip.BindAddr != "127.0.0.1:7921" || len(c.Gossip.Join) != 3 || c.Gossip.Key == "" ||
		c.ClusterKey != "pflex-dev-cluster-key" || len(c.MDM) != 3 || c.SharedMemoryMB != DefaultSharedMemoryMB {
		t.Fatalf("%+v gossip %+v", c, c.Gossip)
	}
	p := filepath.Join(t.TempDir(), "sdc.hcl")
	os.WriteFile(p, []byte("id = \"sdc-1\"\ncluster_key = \"k\"\nnbd_addr = 10809\n"), 0o600)
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "nbd_addr") {
		t.Fatalf("want an error naming nbd_addr, got %v", err)
	}
}

func TestServiceRegistersAsSDC(t *testing.T) {
	var mu sync.Mutex
	var regs []map[string]any
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		self := strings.TrimPrefix(srv.URL, "http://")
		w.Header().Set("X-Pflex-Leader", self)
		switch r.URL.Path {
		case "/cluster/status":
			json.NewEncoder(w).Encode(map[string]any{"leader_id": "mdm-1", "leader_api": self})
		case agent.PathRegister:
			var body map[string]any
			json.NewDecoder(r.Body).Decode(&body)
			mu.Lock()
			regs = append(regs, body)
			mu.Unlock()
			json.NewEncoder(w).Encode(map[string]any{"sdc_id": 4, "leader_id": "mdm-1", "leader_api": self})
		case agent.PathHeartbeat:
			json.NewEncoder(w).Encode(map[string]any{"leader_id": "mdm-1", "leader_api": self, "term": 1, "state": "leader"})
		}
	}))
	defer srv.Close()
	cfg := validConfig()
	cfg.DataDir = filepath.Join(t.TempDir(), "sdc1")
	cfg.APIAddr, cfg.MgmtAddr, cfg.NBDAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.HeartbeatInterval = "20ms"
	cfg.MDM = []string{strings.TrimPrefix(srv.URL, "http://")}
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
	mu.Lock()
	reg := regs[0]
	mu.Unlock()
	if _, has := reg["sds"]; has || reg["nbd_addr"] != s.NBDAddr() || reg["capabilities"].([]any)[0] != "SDC" {
		t.Fatalf("registration: %v", reg)
	}
	resp, err := http.Get("http://" + s.MgmtAddr() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st agent.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Role != "sdc" || st.SDCID != 4 || !st.Registered {
		t.Fatalf("status: %+v %v", st, err)
	}
}
