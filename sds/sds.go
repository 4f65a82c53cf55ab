// Package sds is the storage data server: it contributes local devices to the cluster, stores
// chunk replicas on them, and serves the binary data protocol (token-checked IO, primary ->
// secondary replication, token ACK batches to the MDM leader), alongside its membership
// (gossip, registration, heartbeats) and its control and mgmt HTTP listeners.
package sds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/gossip"
	"pflex/internal/agent"
	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/internal/reach"
	"pflex/sds/chunkstore"
)

// Role is the name of this component in /status.
const Role = "sds"

// Service is a running SDS.
type Service struct {
	cfg      *Config
	log      hclog.Logger
	agent    *agent.Agent
	store    *chunkstore.Store
	tokens   *tokenState
	data     *DataServer
	dataRef  atomic.Pointer[DataServer] // set once data exists: the IO state hook may run before
	dataLn   net.Listener
	dataDone chan error
	control  *agent.HTTPServer
	mgmt     *agent.HTTPServer
	stop     context.CancelFunc // ends the peer probes
}

// Timeouts of the SDS's calls to the MDM leader on behalf of the data path.
const (
	layoutFetchTimeout = 5 * time.Second
	ackPostTimeout     = 5 * time.Second
)

// NewLogger is the SDS's structured logger.
func NewLogger(cfg *Config) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   cfg.ID,
		Level:  hclog.LevelFromString(cfg.LogLevel),
		Output: os.Stderr,
	})
}

// Start validates cfg, opens the chunk store, binds the control, mgmt and data listeners, joins
// gossip and starts registering and heartbeating. Addresses with port 0 are announced as bound
// (tests).
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
	s := &Service{cfg: cfg, log: logger, tokens: newTokenState(logger.Named("tokens")), dataDone: make(chan error, 1)}
	var closers []func() error
	fail := func(err error) (*Service, error) {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		return nil, fmt.Errorf("sds: %w", err)
	}
	s.store, err = chunkstore.Open(chunkstore.Config{
		Dir: cfg.DataDir, Devices: devices, DeviceSize: (cfg.TotalCapacityGB << 30) / int64(len(devices)),
	})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, s.store.Close)
	controlLn, err := agent.Listen("api_addr", cfg.APIAddr)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, controlLn.Close)
	mgmtLn, err := agent.Listen("mgmt_addr", cfg.MgmtAddr)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, mgmtLn.Close)
	s.dataLn, err = agent.Listen("data_addr", cfg.DataAddr)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, s.dataLn.Close)
	gc, err := cfg.Gossip.PoolConfig()
	if err != nil {
		return fail(err)
	}
	var members func() []gossip.Member // the agent's gossip pool, once it runs
	probe := reach.New(func() map[string]string { return peerTargets(cfg.ID, members) })
	s.agent, err = agent.Start(agent.Config{
		ID:                cfg.ID,
		Caps:              []string{gossip.CapSDS},
		APIAddr:           controlLn.Addr().String(),
		MgmtAddr:          mgmtLn.Addr().String(),
		DataAddr:          s.dataLn.Addr().String(),
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
		OnIOState:        s.onIOState,
		UnreachablePeers: probe.Unreachable,
		Logger:           logger,
	})
	if err != nil {
		return fail(err)
	}
	if pool := s.agent.Pool(); pool != nil {
		members = pool.Members
	}
	var probeCtx context.Context
	probeCtx, s.stop = context.WithCancel(context.Background())
	go probe.Run(probeCtx)
	s.data = NewDataServer(DataConfig{
		SelfID:     s.agent.SDSID,
		LeaseValid: s.agent.LeaseValid,
		// a read grant must end with the lease
		LeaseRemaining: s.agent.LeaseRemaining,
		Store:          s.store,
		Verifier:       s.tokens.verifier,
		Layouts:        s.fetchLayout,
		Acks:           s.postAcks,
		Logger:         logger.Named("data"),

		SignRebuild:     SignRebuildToken(&s.tokens.keys, s.tokens.verifier, s.tokens.newestKey),
		SignPeer:        SignPeerToken(&s.tokens.keys, s.tokens.newestKey),
		Rebuild:         s.postRebuildReport,
		RebuildMBps:     cfg.RebuildMBps,
		RebuildParallel: cfg.RebuildParallel,
		ReplicaTimeout:  cfg.replicaTimeout(),
		SharedMemory:    sharedMemory(cfg.SharedMemory),
		LocalReads:      cfg.LocalReads,
	})
	s.dataRef.Store(s.data)
	if e := s.tokens.layoutEpochs(); e != nil { // an answer that came before the data server
		s.data.LayoutEpochs(e)
	}
	go func() { s.dataDone <- s.data.Serve(s.dataLn) }()
	s.control = agent.Serve(controlLn, s.httpHandler())
	mgmt := s.httpHandler()
	if cfg.DebugPprof {
		agent.HandlePprof(mgmt)
	}
	s.mgmt = agent.Serve(mgmtLn, mgmt)
	st := s.store.Stats()
	logger.Info("SDS started", "control", s.control.Addr(), "mgmt", s.mgmt.Addr(), "data", s.dataLn.Addr().String(),
		"gossip", s.agent.Pool().Addr(), "protection_domain", cfg.ProtectionDomain, "devices", len(devices),
		"capacity_bytes", st.CapacityBytes, "chunks", st.Chunks)
	return s, nil
}

// postRebuildReport tells the MDM leader how far this SDS got with a rebuild batch.
func (s *Service) postRebuildReport(ctx context.Context, r api.RebuildReport) error {
	return s.agent.LeaderDo(ctx, "POST", "/rebuild/report", "", r, nil)
}

// onIOState installs what the MDM sent (keys, generations, layout epochs), before the agent
// takes the lease of the same answer.
func (s *Service) onIOState(st *api.IOState) {
	s.tokens.apply(st)
	if d := s.dataRef.Load(); d != nil {
		d.LayoutEpochs(st.LayoutEpochs)
	}
}

// fetchLayout asks the MDM leader for a volume's layout.
func (s *Service) fetchLayout(ctx context.Context, volumeID int64) (layout.Layout, error) {
	ctx, cancel := context.WithTimeout(ctx, layoutFetchTimeout)
	defer cancel()
	var l layout.Layout
	err := s.agent.LeaderDo(ctx, http.MethodGet, fmt.Sprintf("/vol/%d/layout", volumeID), "", nil, &l)
	return l, err
}

// postAcks sends a token ACK batch to the MDM leader.
func (s *Service) postAcks(ctx context.Context, requestID string, req api.AckRequest) error {
	ctx, cancel := context.WithTimeout(ctx, ackPostTimeout)
	defer cancel()
	return s.agent.LeaderDo(ctx, http.MethodPost, "/token/ack", requestID, req, nil)
}

// httpHandler serves the control and mgmt APIs: /healthz, /status, /volumes/{id}/chunks.
func (s *Service) httpHandler() *http.ServeMux {
	mux := http.NewServeMux()
	s.routes(mux)
	return mux
}

// Run starts an SDS and serves until ctx is cancelled.
func Run(ctx context.Context, cfg *Config) error {
	if cfg.GoMaxProcs > 0 {
		runtime.GOMAXPROCS(cfg.GoMaxProcs)
	}
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
	case serveErr = <-s.dataDone:
		serveErr = fmt.Errorf("sds: data listener: %w", serveErr)
	}
	return errors.Join(serveErr, s.Close())
}

// Agent is the membership runtime (gossip pool, leader tracker, heartbeats).
func (s *Service) Agent() *agent.Agent { return s.agent }

// Status is the SDS's status, as GET /status serves it.
func (s *Service) Status() Status {
	st := Status{Status: s.agent.Status(), Store: s.store.Stats(), Data: s.data.Stats()}
	st.Role = Role
	st.IOVersion, st.TokenKeys = s.tokens.status()
	return st
}

// DataAddr is the bound data protocol address.
func (s *Service) DataAddr() string { return s.dataLn.Addr().String() }

// Store is the chunk store.
func (s *Service) Store() *chunkstore.Store { return s.store }

// APIAddr is the bound control address.
func (s *Service) APIAddr() string { return s.control.Addr() }

// MgmtAddr is the bound mgmt address.
func (s *Service) MgmtAddr() string { return s.mgmt.Addr() }

// Close stops the data server (sending the last ACK batch), the HTTP listeners, leaves the
// gossip pool, stops heartbeating and closes the chunk store.
func (s *Service) Close() error {
	s.stop()
	err := errors.Join(s.data.Close(), s.control.Close(), s.mgmt.Close(), s.agent.Close(), s.store.Close())
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
