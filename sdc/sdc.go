// Package sdc is the storage data client: it will expose the volumes mapped to it as NBD exports.
// This stage runs its membership (gossip, registration, heartbeats to the MDM leader) and its
// control and mgmt HTTP listeners; the NBD server and data client come later.
package sdc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/hashicorp/go-hclog"

	"pflex/gossip"
	"pflex/internal/agent"
)

// Role is the name of this component in /status.
const Role = "sdc"

// Service is a running SDC.
type Service struct {
	cfg     *Config
	log     hclog.Logger
	agent   *agent.Agent
	control *agent.HTTPServer
	mgmt    *agent.HTTPServer
}

// NewLogger is the SDC's structured logger.
func NewLogger(cfg *Config) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   cfg.ID,
		Level:  hclog.LevelFromString(cfg.LogLevel),
		Output: os.Stderr,
	})
}

// Start validates cfg, binds the control and mgmt listeners, joins gossip and starts
// registering and heartbeating. Addresses with port 0 are announced as bound (tests).
func Start(cfg *Config, logger hclog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sdc: config: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("sdc: data_dir: %w", err)
	}
	controlLn, err := agent.Listen("api_addr", cfg.APIAddr)
	if err != nil {
		return nil, fmt.Errorf("sdc: %w", err)
	}
	mgmtLn, err := agent.Listen("mgmt_addr", cfg.MgmtAddr)
	if err != nil {
		controlLn.Close()
		return nil, fmt.Errorf("sdc: %w", err)
	}
	gc, err := cfg.Gossip.PoolConfig()
	if err != nil {
		controlLn.Close()
		mgmtLn.Close()
		return nil, fmt.Errorf("sdc: %w", err)
	}
	ag, err := agent.Start(agent.Config{
		ID:                cfg.ID,
		Caps:              []string{gossip.CapSDC},
		APIAddr:           controlLn.Addr().String(),
		MgmtAddr:          mgmtLn.Addr().String(),
		NBDAddr:           cfg.NBDAddr,
		ClusterKey:        cfg.ClusterKey,
		HeartbeatInterval: cfg.heartbeatInterval(),
		MDM:               cfg.MDM,
		Gossip:            gc,
		Logger:            logger,
	})
	if err != nil {
		controlLn.Close()
		mgmtLn.Close()
		return nil, fmt.Errorf("sdc: %w", err)
	}
	s := &Service{cfg: cfg, log: logger, agent: ag}
	s.control = agent.Serve(controlLn, s.controlHandler())
	s.mgmt = agent.Serve(mgmtLn, ag.Handler(Role))
	logger.Info("SDC started", "control", s.control.Addr(), "mgmt", s.mgmt.Addr(), "nbd", cfg.NBDAddr,
		"gossip", ag.Pool().Addr())
	return s, nil
}

// controlHandler serves the control API: for now /healthz and /status.
func (s *Service) controlHandler() http.Handler {
	mux := http.NewServeMux()
	s.agent.Routes(mux, Role)
	return mux
}

// Run starts an SDC and serves until ctx is cancelled.
func Run(ctx context.Context, cfg *Config) error {
	s, err := Start(cfg, NewLogger(cfg))
	if err != nil {
		return err
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-s.control.Done():
		serveErr = fmt.Errorf("sdc: control listener: %w", serveErr)
	case serveErr = <-s.mgmt.Done():
		serveErr = fmt.Errorf("sdc: mgmt listener: %w", serveErr)
	}
	return errors.Join(serveErr, s.Close())
}

// Agent is the membership runtime (gossip pool, leader tracker, heartbeats).
func (s *Service) Agent() *agent.Agent { return s.agent }

// Status is the SDC's membership status, as GET /status serves it.
func (s *Service) Status() agent.Status {
	st := s.agent.Status()
	st.Role = Role
	return st
}

// APIAddr is the bound control address.
func (s *Service) APIAddr() string { return s.control.Addr() }

// MgmtAddr is the bound mgmt address.
func (s *Service) MgmtAddr() string { return s.mgmt.Addr() }

// Close stops the listeners, leaves the gossip pool and stops heartbeating.
func (s *Service) Close() error {
	err := errors.Join(s.control.Close(), s.mgmt.Close(), s.agent.Close())
	s.log.Info("SDC stopped")
	return err
}
