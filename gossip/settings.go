package gossip

import (
	"errors"
	"fmt"

	"pflex/internal/config"
)

// Settings is the `gossip { ... }` block every role's config file has (MDM, SDS, SDC).
type Settings struct {
	BindAddr      string   `hcl:"bind_addr,optional"`
	AdvertiseAddr string   `hcl:"advertise_addr,optional"`
	Join          []string `hcl:"join,optional"`
	Key           string   `hcl:"key,optional"` // base64 of 16, 24 or 32 bytes
}

// Validate checks the block and names the bad field.
func (g *Settings) Validate() error {
	if g == nil {
		return errors.New("gossip: block is required (gossip { bind_addr = ..., join = [...] })")
	}
	if err := config.HostPort("gossip.bind_addr", g.BindAddr); err != nil {
		return err
	}
	if g.AdvertiseAddr != "" {
		if err := config.HostPort("gossip.advertise_addr", g.AdvertiseAddr); err != nil {
			return err
		}
	}
	for i, j := range g.Join {
		if err := config.HostPort(fmt.Sprintf("gossip.join[%d]", i), j); err != nil {
			return err
		}
	}
	if _, err := ParseKey(g.Key); err != nil {
		return fmt.Errorf("gossip.key: %w", err)
	}
	return nil
}

// PoolConfig is the Config of the block; the caller fills in Meta and Logger.
func (g *Settings) PoolConfig() (*Config, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	key, _ := ParseKey(g.Key)
	return &Config{
		BindAddr:      g.BindAddr,
		AdvertiseAddr: g.AdvertiseAddr,
		Join:          append([]string(nil), g.Join...),
		Key:           key,
	}, nil
}
