package sds

import (
	"errors"
	"fmt"
	"time"

	"pflex/internal/agent"
	"pflex/internal/config"
)

// Config is an SDS's configuration file (HCL). See configs/local/sds1.hcl.
type Config struct {
	ID      string `hcl:"id"`
	DataDir string `hcl:"data_dir,optional"`
	// APIAddr is the control HTTP listener, MgmtAddr the management one; DataAddr is the
	// binary data protocol (announced now, served by the data plane).
	APIAddr  string `hcl:"api_addr,optional"`
	MgmtAddr string `hcl:"mgmt_addr,optional"`
	DataAddr string `hcl:"data_addr,optional"`
	// ClusterKey authenticates registration and heartbeats to the MDMs.
	ClusterKey        string `hcl:"cluster_key,optional"`
	LogLevel          string `hcl:"log_level,optional"`
	HeartbeatInterval string `hcl:"heartbeat_interval,optional"`
	// MDM are MDM API addresses asked for the leader when gossip has not named one.
	MDM []string `hcl:"mdm,optional"`

	// ProtectionDomain (name) must exist on the MDMs; FaultSet (name) is optional.
	ProtectionDomain string   `hcl:"protection_domain,optional"`
	FaultSet         string   `hcl:"fault_set,optional"`
	Devices          []string `hcl:"devices,optional"` // files or block devices
	TotalCapacityGB  int64    `hcl:"total_capacity_gb,optional"`

	// RebuildMBps caps the rebuild traffic this SDS sends, in MiB/s, so application IO keeps
	// going (0: unthrottled). RebuildParallel is how many chunks it copies at once.
	RebuildMBps     int `hcl:"rebuild_mbps,optional"`
	RebuildParallel int `hcl:"rebuild_parallel,optional"`
	// ReplicaTimeout is how long a primary waits for a secondary to take a forwarded write
	// before it answers its client Retry (default "5s", at most 30s).
	ReplicaTimeout string `hcl:"replica_timeout,optional"`

	// SharedMemory lets SDCs (and primaries) on the same host pass write payloads in memory
	// shared with this SDS instead of through the socket (sds/DESIGN.md "Shared memory").
	// Default true; it is used only where the peer's region can be mapped.
	SharedMemory bool `hcl:"shared_memory,optional"`
	// LocalReads lets SDCs on the same host that use shared memory read this SDS's chunks
	// straight from its devices under a read grant (sds/DESIGN.md "Local reads"). Default
	// true; it needs shared_memory.
	LocalReads bool `hcl:"local_reads,optional"`

	// DebugPprof serves Go's profiles under /debug/pprof/ on the mgmt listener.
	DebugPprof bool `hcl:"debug_pprof,optional"`
	// GoMaxProcs sets the Go runtime's GOMAXPROCS for the process (0: Go's default, one per
	// CPU). On a host where several pflex processes share few CPUs (the one-host layout),
	// 1 halves the CPU an IO costs: the runtime stops waking a second thread for every
	// goroutine made runnable. Applied by Run, not by Start (tests run several in one process).
	GoMaxProcs int `hcl:"gomaxprocs,optional"`

	Gossip *agent.GossipConfig `hcl:"gossip,block"`
}

// Rebuild defaults: a rebuild takes at most about a third of a typical SSD's bandwidth.
const DefaultRebuildMBps = 200

// DefaultConfig is SDS 1 of the one-host layout (DESIGN.md section 12). It has no cluster key
// and no protection domain: those must be configured.
func DefaultConfig() *Config {
	return &Config{
		ID:                "sds-1",
		DataDir:           "./data/sds1",
		APIAddr:           "127.0.0.1:9101",
		MgmtAddr:          "127.0.0.1:9201",
		DataAddr:          "127.0.0.1:9701",
		LogLevel:          "info",
		HeartbeatInterval: agent.DefaultHeartbeatInterval.String(),
		RebuildMBps:       DefaultRebuildMBps,
		RebuildParallel:   DefaultRebuildParallel,
		SharedMemory:      true,
		LocalReads:        true,
		Gossip:            &agent.GossipConfig{BindAddr: "127.0.0.1:7911"},
	}
}

// LoadConfig reads an HCL file over the defaults and validates it.
func LoadConfig(path string) (*Config, error) {
	cfg := DefaultConfig()
	if err := config.LoadHCL(path, cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks every field and names the first bad one.
func (c *Config) Validate() error {
	if err := agent.ValidateCommon(c.ID, c.DataDir, c.ClusterKey, c.LogLevel, c.HeartbeatInterval, c.MDM); err != nil {
		return err
	}
	for _, f := range []struct{ field, value string }{
		{"api_addr", c.APIAddr}, {"mgmt_addr", c.MgmtAddr}, {"data_addr", c.DataAddr},
	} {
		if err := config.HostPort(f.field, f.value); err != nil {
			return err
		}
	}
	if c.ProtectionDomain == "" {
		return errors.New("protection_domain is required (the name of a protection domain on the MDMs)")
	}
	if len(c.Devices) == 0 {
		return errors.New("devices: at least one device (file or block device path) is required")
	}
	for i, d := range c.Devices {
		if d == "" {
			return fmt.Errorf("devices[%d] is empty", i)
		}
	}
	if c.TotalCapacityGB <= 0 {
		return fmt.Errorf("total_capacity_gb: %d must be positive", c.TotalCapacityGB)
	}
	if c.RebuildMBps < 0 {
		return fmt.Errorf("rebuild_mbps: %d must be 0 (unthrottled) or positive", c.RebuildMBps)
	}
	if c.RebuildParallel < 0 || c.RebuildParallel > 64 {
		return fmt.Errorf("rebuild_parallel: %d must be from 1 to 64 (0: the default)", c.RebuildParallel)
	}
	if d, err := config.Duration("replica_timeout", c.ReplicaTimeout, DefaultReplicaTimeout); err != nil {
		return err
	} else if d > maxReplicaTimeout {
		return fmt.Errorf("replica_timeout: %v is longer than %v: a client would give up on the write first", d, maxReplicaTimeout)
	}
	if c.GoMaxProcs < 0 {
		return fmt.Errorf("gomaxprocs: %d must be 0 (Go's default) or positive", c.GoMaxProcs)
	}
	if err := c.Gossip.Validate(); err != nil {
		return err
	}
	if c.Gossip != nil && len(c.Gossip.Join) == 0 && len(c.MDM) == 0 {
		return errors.New("gossip.join: neither gossip join addresses nor mdm addresses: the SDS could not find the MDMs")
	}
	return nil
}

// maxReplicaTimeout bounds replica_timeout: an SDC gives up on an IO after its io_timeout (30 s
// by default), and a replica write is remembered in order for DefaultOrderRetention.
const maxReplicaTimeout = 30 * time.Second

// replicaTimeout is the parsed replica_timeout (validated).
func (c *Config) replicaTimeout() time.Duration {
	d, _ := config.Duration("replica_timeout", c.ReplicaTimeout, DefaultReplicaTimeout)
	return d
}

// heartbeatInterval is the parsed heartbeat_interval (validated).
func (c *Config) heartbeatInterval() time.Duration {
	d, _ := config.Duration("heartbeat_interval", c.HeartbeatInterval, agent.DefaultHeartbeatInterval)
	return d
}
