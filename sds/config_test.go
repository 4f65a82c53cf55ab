package sds

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func validConfig() *Config {
	c := DefaultConfig()
	c.ClusterKey = "k"
	c.ProtectionDomain = "pd1"
	c.Devices = []string{"./data/sds1/dev0.img"}
	c.TotalCapacityGB = 100
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
		{"heartbeat_interval", func(c *Config) { c.HeartbeatInterval = "soon" }},
		{"mdm[1]", func(c *Config) { c.MDM = []string{"127.0.0.1:8001", "nowhere"} }},
		{"api_addr", func(c *Config) { c.APIAddr = "9101" }},
		{"mgmt_addr", func(c *Config) { c.MgmtAddr = "" }},
		{"data_addr", func(c *Config) { c.DataAddr = "host:port" }},
		{"protection_domain", func(c *Config) { c.ProtectionDomain = "" }},
		{"devices", func(c *Config) { c.Devices = nil }},
		{"devices[1]", func(c *Config) { c.Devices = []string{"a", ""} }},
		{"total_capacity_gb", func(c *Config) { c.TotalCapacityGB = 0 }},
		{"replica_timeout", func(c *Config) { c.ReplicaTimeout = "-1s" }},
		{"replica_timeout", func(c *Config) { c.ReplicaTimeout = "2m" }},
		{"gossip", func(c *Config) { c.Gossip = nil }},
		{"gossip.bind_addr", func(c *Config) { c.Gossip.BindAddr = "" }},
		{"gossip.advertise_addr", func(c *Config) { c.Gossip.AdvertiseAddr = "x" }},
		{"gossip.join[0]", func(c *Config) { c.Gossip.Join = []string{"7901"} }},
		{"gossip.key", func(c *Config) { c.Gossip.Key = "c2hvcnQ=" }},
		{"gossip.join", func(c *Config) { c.Gossip.Join, c.MDM = nil, nil }},
	} {
		c := validConfig()
		tc.edit(c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("%s: want an error starting with the field name, got %v", tc.field, err)
		}
	}
}

func TestLocalConfigsLoad(t *testing.T) {
	for n := 1; n <= 3; n++ {
		path := filepath.Join("..", "configs", "local", "sds"+string(rune('0'+n))+".hcl")
		c, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		suffix := string(rune('0' + n))
		if c.ID != "sds-"+suffix || c.APIAddr != "127.0.0.1:910"+suffix || c.MgmtAddr != "127.0.0.1:920"+suffix ||
			c.DataAddr != "127.0.0.1:970"+suffix || c.Gossip.BindAddr != "127.0.0.1:791"+suffix ||
			c.ProtectionDomain != "pd1" || c.TotalCapacityGB != 100 || len(c.Gossip.Join) != 3 ||
			c.Gossip.Key == "" || c.ClusterKey != "pflex-dev-cluster-key" || len(c.MDM) != 3 ||
			c.Devices[0] != "./data/sds"+suffix+"/dev0.img" || c.heartbeatInterval().String() != "500ms" {
			t.Fatalf("%s: %+v gossip %+v", path, c, c.Gossip)
		}
	}
}

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "sds.hcl")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := LoadConfig(write(`cluster_key = "k"`)); err == nil || !strings.Contains(err.Error(), `"id"`) {
		t.Fatalf("missing id: %v", err)
	}
	if _, err := LoadConfig(write("id = \"sds-1\"\nbogus = 1\n")); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("unknown field: %v", err)
	}
	_, err := LoadConfig(write("id = \"sds-1\"\ncluster_key = \"k\"\n"))
	if err == nil || !strings.Contains(err.Error(), "protection_domain") {
		t.Fatalf("missing protection domain: %v", err)
	}
	// Defaults fill what the file leaves out, inside the gossip block too.
	c, err := LoadConfig(write(`id = "sds-7"
cluster_key = "k"
protection_domain = "pd1"
devices = ["d"]
total_capacity_gb = 1
gossip {
  join = ["127.0.0.1:7901"]
}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Gossip.BindAddr != "127.0.0.1:7911" || c.APIAddr != "127.0.0.1:9101" || c.LogLevel != "info" {
		t.Fatalf("defaults lost: %+v %+v", c, c.Gossip)
	}
}
