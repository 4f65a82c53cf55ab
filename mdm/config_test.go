package mdm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func TestLocalConfigsLoad(t *testing.T) {
	for _, n := range []string{"1", "2", "3"} {
		cfg, err := LoadConfig(filepath.Join("..", "configs", "local", "mdm"+n+".hcl"))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.NodeID != "mdm-"+n || cfg.BootstrapExpect != 3 || cfg.Gossip == nil || len(cfg.Gossip.Join) != 3 ||
			cfg.AdminToken == "" || cfg.ClusterKey == "" {
			t.Fatalf("mdm%s: %+v", n, cfg)
		}
		tm, _ := cfg.Timing()
		if tm.Heartbeat.String() != "500ms" || tm.LeaderLease.String() != "250ms" {
			t.Fatalf("timing %+v", tm)
		}
	}
}

func TestBadConfigNamesTheField(t *testing.T) {
	base := `node_id = "mdm-1"
data_dir = "d"
api_addr = "127.0.0.1:8001"
raft_addr = "127.0.0.1:8101"
`
	for _, tc := range []struct{ body, want string }{
		{`node_id = "x"`, "is required"},
		{base + `bogus = 1`, "bogus"},
		{strings.Replace(base, "127.0.0.1:8001", "nowhere", 1), "api_addr"},
		{base + `log_level = "loud"`, "log_level"},
		{base + "raft {\n heartbeat_timeout = \"soon\"\n}", "raft.heartbeat_timeout"},
		{base + "raft {\n leader_lease_timeout = \"2s\"\n}", "raft.leader_lease_timeout"},
		{base + "peer \"mdm-2\" {\n raft_addr = \"127.0.0.1:8102\"\n api_addr = \"127.0.0.1:8002\"\n}", "must include this node"},
		{base + "peer \"mdm-1\" {\n raft_addr = \"127.0.0.1:9999\"\n api_addr = \"127.0.0.1:8001\"\n}", "differs"},
		{base + "bootstrap_expect = 3", "gossip block"},
		{base + "gossip {\n bind_addr = \"127.0.0.1:7901\"\n key = \"short\"\n}", "gossip.key"},
		{base + "sds_down_grace = \"never\"", "sds_down_grace"},
	} {
		path := filepath.Join(t.TempDir(), "c.hcl")
		os.WriteFile(path, []byte(tc.body), 0o600)
		_, err := LoadConfig(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: got %v, want an error naming %q", tc.body, err, tc.want)
		}
	}
}

// The raft transport never pipelines (mdm/DESIGN.md "No pipelined replication").
func TestRaftTransportDoesNotPipeline(t *testing.T) {
	tr, err := newRaftTransport("127.0.0.1:0", nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, err := tr.AppendEntriesPipeline("mdm-2", "127.0.0.1:1"); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: %v, want ErrPipelineReplicationNotSupported", err)
	}
}
