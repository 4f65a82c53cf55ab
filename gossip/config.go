package gossip

import (
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// LAN defaults, tuned for a storage cluster on one switch (see DESIGN.md):
// a leader announcement reaches every node within one or two gossip rounds,
// and a node that stops answering is declared dead within about 2-3 s.
const (
	DefaultProbeInterval     = 500 * time.Millisecond
	DefaultProbeTimeout      = 250 * time.Millisecond
	DefaultGossipInterval    = 100 * time.Millisecond
	DefaultSuspicionMult     = 3
	DefaultJoinRetryInterval = 500 * time.Millisecond

	// suspicionMaxTimeoutMult bounds how long a suspicion may last when peers
	// do not confirm it: 4 x the 1.5 s minimum = 6 s at worst.
	suspicionMaxTimeoutMult = 4
	// pushPullInterval is the full-state sync period that heals missed broadcasts.
	pushPullInterval = 10 * time.Second
	// joinWarnEvery rate-limits the join-failure warning.
	joinWarnEvery = 5 * time.Second
	// updateTimeout is how long UpdateMeta waits for its broadcast to go out.
	updateTimeout = 2 * time.Second
	// subscriberBuffer is the channel capacity Subscribe hands out.
	subscriberBuffer = 256
)

// Config is what a node needs to join the pool. Zero timing fields get the LAN defaults.
type Config struct {
	BindAddr      string   // host:port to listen on (UDP and TCP); port 0 picks one (tests)
	AdvertiseAddr string   // optional host:port others dial; default: the bound address
	Join          []string // seed addresses; may include our own; may be empty (first node)
	// Key is the AES key (16, 24 or 32 bytes) shared by the whole cluster. Empty means
	// no encryption: allowed, but logged as a warning.
	Key    []byte
	Meta   Meta         // initial metadata; Meta.ID is the node name (required)
	Logger hclog.Logger // nil: a stderr logger; memberlist's own lines go through it too

	ProbeInterval  time.Duration // default 500ms
	ProbeTimeout   time.Duration // default 250ms
	GossipInterval time.Duration // default 100ms
	SuspicionMult  int           // default 3

	// JoinRetryInterval is how often the Join list is retried while this node has no
	// live peer (at start, and again if it ever finds itself alone). Default 500ms.
	JoinRetryInterval time.Duration
}

// withDefaults returns c with zero fields filled in.
func (c Config) withDefaults() Config {
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.GossipInterval == 0 {
		c.GossipInterval = DefaultGossipInterval
	}
	if c.SuspicionMult == 0 {
		c.SuspicionMult = DefaultSuspicionMult
	}
	if c.JoinRetryInterval == 0 {
		c.JoinRetryInterval = DefaultJoinRetryInterval
	}
	if c.Logger == nil {
		c.Logger = hclog.New(&hclog.LoggerOptions{Name: "pflex"})
	}
	return c
}

// Validate checks c after defaults are applied; the error names the field.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.BindAddr == "" {
		return fmt.Errorf("%w: BindAddr is required (host:port)", ErrInvalidConfig)
	}
	if host, _, err := splitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("%w: BindAddr %q: %v", ErrInvalidConfig, c.BindAddr, err)
	} else if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("%w: BindAddr %q: host must be an IP address (or empty for all interfaces)", ErrInvalidConfig, c.BindAddr)
	}
	if c.AdvertiseAddr != "" {
		host, _, err := splitHostPort(c.AdvertiseAddr)
		if err != nil {
			return fmt.Errorf("%w: AdvertiseAddr %q: %v", ErrInvalidConfig, c.AdvertiseAddr, err)
		}
		if net.ParseIP(host) == nil {
			return fmt.Errorf("%w: AdvertiseAddr %q: host must be an IP address", ErrInvalidConfig, c.AdvertiseAddr)
		}
	}
	for i, j := range c.Join {
		if strings.TrimSpace(j) == "" {
			return fmt.Errorf("%w: Join[%d] is empty", ErrInvalidConfig, i)
		}
	}
	switch len(c.Key) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("%w: Key is %d bytes, want 16, 24 or 32", ErrInvalidConfig, len(c.Key))
	}
	if c.Meta.ID == "" {
		return fmt.Errorf("%w: Meta.ID is required (it is the node name)", ErrInvalidConfig)
	}
	if _, err := encodeMeta(c.Meta); err != nil {
		return fmt.Errorf("%w: Meta: %w", ErrInvalidConfig, err)
	}
	if c.ProbeInterval < 0 || c.ProbeTimeout < 0 || c.GossipInterval < 0 || c.JoinRetryInterval < 0 {
		return fmt.Errorf("%w: ProbeInterval, ProbeTimeout, GossipInterval and JoinRetryInterval must not be negative", ErrInvalidConfig)
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return fmt.Errorf("%w: ProbeTimeout (%s) must be shorter than ProbeInterval (%s)", ErrInvalidConfig, c.ProbeTimeout, c.ProbeInterval)
	}
	if c.SuspicionMult < 1 {
		return fmt.Errorf("%w: SuspicionMult must be >= 1, got %d", ErrInvalidConfig, c.SuspicionMult)
	}
	return nil
}

// splitHostPort splits "host:port" and checks the port is a number in range.
func splitHostPort(s string) (string, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number in 0-65535", ps)
	}
	return host, port, nil
}

// ParseKey decodes a gossip key: standard base64 of 16, 24 or 32 bytes
// (e.g. `head -c 32 /dev/urandom | base64`). "" yields nil (no encryption).
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: not standard base64: %v", ErrBadKey, err)
	}
	switch len(b) {
	case 16, 24, 32:
		return b, nil
	default:
		return nil, fmt.Errorf("%w: decodes to %d bytes, want 16, 24 or 32 (AES-128/192/256)", ErrBadKey, len(b))
	}
}
