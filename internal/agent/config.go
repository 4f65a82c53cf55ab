package agent

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/gossip"
	"pflex/internal/api"
	"pflex/internal/config"
)

// Defaults of Config.
const (
	DefaultHeartbeatInterval = 500 * time.Millisecond
	DefaultHeartbeatTimeout  = time.Second
	// DefaultRegisterRetry is the wait after the MDM refused a registration (unknown
	// protection domain, bad input, wrong key): the operator has to act, so retry slowly.
	DefaultRegisterRetry = 3 * time.Second
)

// Version is the pflex version an SDS or SDC announces.
var Version = "0.1.0-dev"

// Config is what an agent needs; sds and sdc build it from their files.
type Config struct {
	ID      string
	Caps    []string // gossip.CapSDS, gossip.CapSDC
	Version string   // default Version
	// Advertised addresses (host:port); "" when the role has no such listener.
	APIAddr, MgmtAddr, DataAddr, NBDAddr string
	// ClusterKey authenticates registration and heartbeats (Authorization: Bearer).
	ClusterKey        string
	HeartbeatInterval time.Duration // default DefaultHeartbeatInterval
	HeartbeatTimeout  time.Duration // one heartbeat or registration request; default 1s
	RegisterRetry     time.Duration // after a refused registration; default 3s
	// MDM are MDM API addresses asked for the leader when gossip does not name one.
	MDM []string
	// Gossip is the pool to join; the agent fills in Meta and Logger. nil: no gossip, the
	// leader is learned from MDM alone (tests).
	Gossip *gossip.Config
	// SDS is sent with the registration of a node with the SDS capability.
	SDS *fsm.SDSRegistration
	// OnIOState, when set, receives the token keys and map generations the MDM sends an SDS:
	// from every registration answer and from heartbeat answers whenever they changed. It is
	// called from the agent's loop, one call at a time; the agent then reports IOState.Version
	// in its heartbeats so the MDM sends the state again only when it moves.
	OnIOState func(*api.IOState)
	// UnreachablePeers, when set, is called for every heartbeat: the peers it names go with it.
	UnreachablePeers func() []string
	Logger           hclog.Logger
	HTTPClient       *http.Client
}

func (c *Config) withDefaults() {
	if c.Version == "" {
		c.Version = Version
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.RegisterRetry <= 0 {
		c.RegisterRetry = DefaultRegisterRetry
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
}

func (c *Config) validate() error {
	if c.ID == "" {
		return errors.New("agent: ID is required")
	}
	if len(c.Caps) == 0 {
		return errors.New("agent: Caps is required")
	}
	if c.ClusterKey == "" {
		return errors.New("agent: ClusterKey is required")
	}
	if c.Gossip == nil && len(c.MDM) == 0 {
		return errors.New("agent: neither gossip nor MDM addresses: no way to find the leader")
	}
	return nil
}

// GossipConfig is the `gossip { ... }` block of an SDS or SDC file.
type GossipConfig = gossip.Settings

// ValidateCommon checks the fields every SDS and SDC file has, naming the bad one.
func ValidateCommon(id, dataDir, clusterKey, logLevel, heartbeat string, mdm []string) error {
	if strings.TrimSpace(id) == "" {
		return errors.New("id is required")
	}
	if dataDir == "" {
		return errors.New("data_dir is required")
	}
	if clusterKey == "" {
		return errors.New("cluster_key is required (the key MDMs accept for registration and heartbeats)")
	}
	switch logLevel {
	case "", "trace", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not one of trace, debug, info, warn, error", logLevel)
	}
	if _, err := config.Duration("heartbeat_interval", heartbeat, DefaultHeartbeatInterval); err != nil {
		return err
	}
	for i, m := range mdm {
		if err := config.HostPort(fmt.Sprintf("mdm[%d]", i), m); err != nil {
			return err
		}
	}
	return nil
}
