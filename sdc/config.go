package sdc

import (
	"errors"
	"fmt"
	"time"

	"pflex/internal/agent"
	"pflex/internal/config"
)

// Config is an SDC's configuration file (HCL). See configs/local/sdc1.hcl.
type Config struct {
	ID      string `hcl:"id"`
	DataDir string `hcl:"data_dir,optional"`
	// APIAddr is the control HTTP listener, MgmtAddr the management one; NBDAddr is where the
	// NBD exports will be served (announced now, served by the data plane).
	APIAddr  string `hcl:"api_addr,optional"`
	MgmtAddr string `hcl:"mgmt_addr,optional"`
	NBDAddr  string `hcl:"nbd_addr,optional"`
	// NBDSocket, when set, is a Unix socket path on which the same exports are served too, for
	// clients on this host (nbd+unix:///vol1?socket=PATH): no TCP on the way. Default: none.
	NBDSocket string `hcl:"nbd_socket,optional"`
	// ClusterKey authenticates registration and heartbeats to the MDMs.
	ClusterKey        string `hcl:"cluster_key,optional"`
	LogLevel          string `hcl:"log_level,optional"`
	HeartbeatInterval string `hcl:"heartbeat_interval,optional"`
	// MDM are MDM API addresses asked for the leader when gossip has not named one.
	MDM []string `hcl:"mdm,optional"`
	// IOTimeout bounds one NBD or control-API IO, retries included: past it the client gets EIO.
	IOTimeout string `hcl:"io_timeout,optional"`
	// VolumePollInterval is how often the SDC asks the MDM which volumes are mapped to it.
	VolumePollInterval string `hcl:"volume_poll_interval,optional"`
	// SharedMemoryMB is the size of the memory in which the SDC keeps NBD write payloads for
	// SDSs on the same host to map (sdc/DESIGN.md "Shared memory"); 0 turns it off. Default
	// DefaultSharedMemoryMB.
	SharedMemoryMB int `hcl:"shared_memory_mb,optional"`
	// LocalReads reads chunks whose primary SDS runs on this host straight from its device,
	// under a read grant from that SDS (sdc/DESIGN.md "Local reads"); it needs shared memory.
	// Default true.
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

// DefaultConfig is SDC 1 of the one-host layout (DESIGN.md section 12). It has no cluster key:
// that must be configured.
func DefaultConfig() *Config {
	return &Config{
		ID:                 "sdc-1",
		DataDir:            "./data/sdc1",
		APIAddr:            "127.0.0.1:8301",
		MgmtAddr:           "127.0.0.1:8401",
		NBDAddr:            "127.0.0.1:10809",
		LogLevel:           "info",
		HeartbeatInterval:  agent.DefaultHeartbeatInterval.String(),
		IOTimeout:          DefaultIOTimeout.String(),
		VolumePollInterval: DefaultVolumePollInterval.String(),
		SharedMemoryMB:     DefaultSharedMemoryMB,
		LocalReads:         true,
		Gossip:             &agent.GossipConfig{BindAddr: "127.0.0.1:7921"},
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
		{"api_addr", c.APIAddr}, {"mgmt_addr", c.MgmtAddr}, {"nbd_addr", c.NBDAddr},
	} {
		if err := config.HostPort(f.field, f.value); err != nil {
			return err
		}
	}
	if len(c.NBDSocket) > maxSocketPath {
		return fmt.Errorf("nbd_socket: %q is %d bytes; a Unix socket path has at most %d", c.NBDSocket, len(c.NBDSocket), maxSocketPath)
	}
	if _, err := config.Duration("io_timeout", c.IOTimeout, DefaultIOTimeout); err != nil {
		return err
	}
	if _, err := config.Duration("volume_poll_interval", c.VolumePollInterval, DefaultVolumePollInterval); err != nil {
		return err
	}
	if c.SharedMemoryMB != 0 && (c.SharedMemoryMB < minSharedMemoryMB || c.SharedMemoryMB > maxSharedMemoryMB) {
		return fmt.Errorf("shared_memory_mb: %d must be 0 (off) or from %d to %d", c.SharedMemoryMB, minSharedMemoryMB, maxSharedMemoryMB)
	}
	if c.GoMaxProcs < 0 {
		return fmt.Errorf("gomaxprocs: %d must be 0 (Go's default) or positive", c.GoMaxProcs)
	}
	if err := c.Gossip.Validate(); err != nil {
		return err
	}
	if c.Gossip != nil && len(c.Gossip.Join) == 0 && len(c.MDM) == 0 {
		return errors.New("gossip.join: neither gossip join addresses nor mdm addresses: the SDC could not find the MDMs")
	}
	return nil
}

// Defaults of the data plane.
const (
	DefaultIOTimeout          = 30 * time.Second
	DefaultVolumePollInterval = time.Second
	DefaultSharedMemoryMB     = 32
	minSharedMemoryMB         = 8
	maxSharedMemoryMB         = 1000
)

// ioTimeout is the parsed io_timeout (validated).
func (c *Config) ioTimeout() time.Duration {
	d, _ := config.Duration("io_timeout", c.IOTimeout, DefaultIOTimeout)
	return d
}

// volumePoll is the parsed volume_poll_interval (validated).
func (c *Config) volumePoll() time.Duration {
	d, _ := config.Duration("volume_poll_interval", c.VolumePollInterval, DefaultVolumePollInterval)
	return d
}

// heartbeatInterval is the parsed heartbeat_interval (validated).
func (c *Config) heartbeatInterval() time.Duration {
	d, _ := config.Duration("heartbeat_interval", c.HeartbeatInterval, agent.DefaultHeartbeatInterval)
	return d
}
