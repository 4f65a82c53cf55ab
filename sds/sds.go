// Package sds is the storage data server: it contributes local devices to the cluster. This
// stage runs its membership (gossip, registration, heartbeats to the MDM leader) and its control
// and mgmt HTTP listeners; the chunk store and data protocol come later.
package sds

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/gossip"
	"pflex/internal/agent"
)

// Role is the name of this component in /status.
const Role = "sds"

// Service is a running SDS.
type Service struct {
	cfg     *Config
	log     hclog.Logger
	agent   *agent.Agent
	control *agent.HTTPServer
	mgmt    *agent.HTTPServer
}

// NewLogger is the SDS's structured logger.
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
		return nil, fmt.Errorf("sds: config: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("sds: data_dir: %w", err)
	}
	devices, err := absPaths(cfg.Devices)
	if err != nil {
		return nil, fmt.Errorf("sds: devices: %w", err)
	}
	controlLn, err := agent.Listen("api_addr", cfg.APIAddr)
	if err != nil {
		return nil, fmt.Errorf("sds: %w", err)
	}
	mgmtLn, err := agent.Listen("mgmt_addr", cfg.MgmtAddr)
	if err != nil {
		controlLn.Close()
		return nil, fmt.Errorf("sds: %w", err)
	}
	gc, err := cfg.Gossip.PoolConfig()
	if err != nil {
		controlLn.Close()
		mgmtLn.Close()
		return nil, fmt.Errorf("sds: %w", err)
	}
	ag, err := agent.Start(agent.Config{
		ID:                cfg.ID,
		Caps:              []string{gossip.CapSDS},
		APIAddr:           controlLn.Addr().String(),
		MgmtAddr:          mgmtLn.Addr().String(),
		DataAddr:          cfg.DataAddr,
		ClusterKey:        cfg.ClusterKey,
		HeartbeatInterval: cfg.heartbeatInterval(),
		MDM:               cfg.MDM,
		Gossip:            gc,
		SDS: &fsm.SDSRegistration{
			ProtectionDomain: cfg.ProtectionDomain,
			FaultSet:         cfg.FaultSet,
			Devices:          devices,
			TotalCapacityGB:  cfg.TotalCapacityGB,
		},
		Logger: logger,
	})
	if err != nil {
		controlLn.Close()
		mgmtLn.Close()
		return nil, fmt.Errorf("sds: %w", err)
	}
	s := &Service{cfg: cfg, log: logger, agent: ag}
	s.control = agent.Serve(controlLn, s.controlHandler())
	s.mgmt = agent.Serve(mgmtLn, ag.Handler(Role))
	logger.Info("SDS started", "control", s.control.Addr(), "mgmt", s.mgmt.Addr(), "data", cfg.DataAddr,
		"gossip", ag.Pool().Addr(), "protection_domain", cfg.ProtectionDomain, "devices", len(devices))
	return s, nil
}

// controlHandler serves the control API: for now /healthz and /status.
func (s *Service) controlHandler() http.Handler {
	mux := http.NewServeMux()
	s.agent.Routes(mux, Role)
	return mux
}

// Run starts an SDS and serves until ctx is cancelled.
func Run(ctx context.Context, cfg *Config) error {
	s, err := Start(cfg, NewLogger(cfg))
	if err != nil {
		return err
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-s.control.Done():
		serveErr = fmt.Errorf("sds: control listener: %w", serveErr)
	case serveErr = <-s.mgmt.Done():
		serveErr = fmt.Errorf("sds: mgmt listener: %w", serveErr)
	}
	return errors.Join(serveErr, s.Close())
}

// Agent is the membership runtime (gossip pool, leader tracker, heartbeats).
func (s *Service) Agent() *agent.Agent { return s.agent }

// Status is the SDS's membership status, as GET /status serves it.
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
	s.log.Info("SDS stopped")
	return err
}

func absPaths(paths []string) ([]string, error) {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}
