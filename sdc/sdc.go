// Package sdc is the storage data client: it exposes the volumes mapped to it as NBD exports,
// splitting their IO by chunk and sending it to the SDSs with tokens and layouts from the MDM
// leader. See DESIGN.md.
package sdc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"pflex/gossip"
	"pflex/internal/agent"
	"pflex/internal/shm"
	"pflex/internal/wire"
	"pflex/sdc/nbd"
)

// Role is the name of this component in /status.
const Role = "sdc"

// Service is a running SDC.
type Service struct {
	cfg       *Config
	log       hclog.Logger
	agent     *agent.Agent
	control   *agent.HTTPServer
	mgmt      *agent.HTTPServer
	cache     *LayoutCache
	conns     *SDSConns
	shm       *shm.Region // nil: shared memory off or unavailable
	exporter  *Exporter
	nbd       *nbd.Server
	nbdAddr   string
	nbdSocket string // "": no Unix socket
	nbdDone   chan error
}

// NewLogger is the SDC's structured logger.
func NewLogger(cfg *Config) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   cfg.ID,
		Level:  hclog.LevelFromString(cfg.LogLevel),
		Output: os.Stderr,
	})
}

// Start validates cfg, binds the control, mgmt and NBD listeners, opens the layout cache, joins
// gossip, starts registering and heartbeating, and starts exporting the volumes mapped to this
// SDC once it is registered. Addresses with port 0 are announced as bound (tests).
func Start(cfg *Config, logger hclog.Logger) (s *Service, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sdc: config: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("sdc: data_dir: %w", err)
	}
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()
	listen := func(field, addr string) (net.Listener, error) {
		ln, err := agent.Listen(field, addr)
		if err != nil {
			return nil, fmt.Errorf("sdc: %w", err)
		}
		closers = append(closers, ln.Close)
		return ln, nil
	}
	controlLn, err := listen("api_addr", cfg.APIAddr)
	if err != nil {
		return nil, err
	}
	mgmtLn, err := listen("mgmt_addr", cfg.MgmtAddr)
	if err != nil {
		return nil, err
	}
	nbdLn, err := listen("nbd_addr", cfg.NBDAddr)
	if err != nil {
		return nil, err
	}
	var socketLn net.Listener
	if cfg.NBDSocket != "" {
		if socketLn, err = listenNBDSocket(cfg.NBDSocket); err != nil {
			return nil, fmt.Errorf("sdc: %w", err)
		}
		closers = append(closers, socketLn.Close)
	}
	cache, err := OpenLayoutCache(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("sdc: %w", err)
	}
	closers = append(closers, cache.Close)
	gc, err := cfg.Gossip.PoolConfig()
	if err != nil {
		return nil, fmt.Errorf("sdc: %w", err)
	}
	// The SDS connections come first: the agent's heartbeats name the SDSs their probes lost.
	var region *shm.Region
	if cfg.SharedMemoryMB > 0 {
		r, serr := newSharedRegion(cfg.SharedMemoryMB)
		if serr != nil {
			// A kernel without memfd or sealing: everything still works over the sockets.
			logger.Warn("shared memory for same-host SDSs unavailable; payloads go over the sockets", "error", serr)
		} else {
			region = r
			closers = append(closers, r.Close)
		}
	}
	conns := NewSDSConns(wire.ClientOptions{Logger: logger.Named("wire")}, region)
	conns.localReads = cfg.LocalReads
	conns.StartProbes()
	closers = append(closers, func() error { conns.Close(); return nil })
	var members atomic.Pointer[func() []gossip.Member] // the gossip pool's, once the agent runs
	ag, err := agent.Start(agent.Config{
		ID:                cfg.ID,
		Caps:              []string{gossip.CapSDC},
		APIAddr:           controlLn.Addr().String(),
		MgmtAddr:          mgmtLn.Addr().String(),
		NBDAddr:           nbdLn.Addr().String(),
		ClusterKey:        cfg.ClusterKey,
		HeartbeatInterval: cfg.heartbeatInterval(),
		MDM:               cfg.MDM,
		Gossip:            gc,
		UnreachablePeers: func() []string {
			if m := members.Load(); m != nil {
				return conns.unreachableSDS(*m)
			}
			return conns.unreachableSDS(nil)
		},
		Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("sdc: %w", err)
	}
	closers = append(closers, ag.Close)
	if pool := ag.Pool(); pool != nil {
		f := pool.Members
		members.Store(&f)
	}
	s = &Service{cfg: cfg, log: logger, agent: ag, cache: cache, shm: region, conns: conns,
		nbdAddr: nbdLn.Addr().String(), nbdDone: make(chan error, 2)}
	s.exporter, err = NewExporter(ExporterConfig{
		MDM:           newMDMClient(ag.Tracker(), cfg.ClusterKey),
		Conns:         s.conns,
		Cache:         cache,
		SDCID:         func() int64 { return ag.Status().SDCID },
		LeaderChanged: ag.Tracker().Changed,
		Removed:       func(name string) { s.nbd.ExportRemoved(name) },
		Poll:          cfg.volumePoll(),
		IOTimeout:     cfg.ioTimeout(),
		Logger:        logger.Named("io"),
	})
	if err != nil {
		return nil, fmt.Errorf("sdc: %w", err)
	}
	s.nbd = nbd.NewServer(nbd.Config{Exports: s.exporter.Exports(), Logger: logger})
	go func() { s.nbdDone <- s.nbd.Serve(nbdLn) }()
	if socketLn != nil {
		s.nbdSocket = socketLn.Addr().String()
		go func() { s.nbdDone <- s.nbd.Serve(socketLn) }()
	}
	s.exporter.Start()
	s.control = agent.Serve(controlLn, s.controlHandler())
	s.mgmt = agent.Serve(mgmtLn, s.mgmtHandler())
	logger.Info("SDC started", "control", s.control.Addr(), "mgmt", s.mgmt.Addr(), "nbd", s.nbdAddr, "nbd_socket", s.nbdSocket,
		"gossip", ag.Pool().Addr(), "io_timeout", cfg.ioTimeout())
	return s, nil
}

// controlHandler serves the control API: /healthz, /status (membership and exports) and the
// IO routes.
func (s *Service) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", s.agent.Handler(Role))
	mux.HandleFunc("GET /metrics", s.metrics)
	s.ioRoutes(mux)
	return mux
}

// mgmtHandler serves /healthz and /status for monitoring.
func (s *Service) mgmtHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", s.agent.Handler(Role))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.FullStatus())
	})
	mux.HandleFunc("GET /metrics", s.metrics)
	if s.cfg.DebugPprof {
		agent.HandlePprof(mux)
	}
	return mux
}

// Run starts an SDC and serves until ctx is cancelled.
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
		serveErr = fmt.Errorf("sdc: control listener: %w", serveErr)
	case serveErr = <-s.mgmt.Done():
		serveErr = fmt.Errorf("sdc: mgmt listener: %w", serveErr)
	case serveErr = <-s.nbdDone:
		serveErr = fmt.Errorf("sdc: nbd listener: %w", serveErr)
	}
	return errors.Join(serveErr, s.Close())
}

// Agent is the membership runtime (gossip pool, leader tracker, heartbeats).
func (s *Service) Agent() *agent.Agent { return s.agent }

// Status is the SDC's membership status.
func (s *Service) Status() agent.Status {
	st := s.agent.Status()
	st.Role = Role
	return st
}

// FullStatus is GET /status: membership, exports, per-volume token, layout and IO counters.
func (s *Service) FullStatus() Status {
	return Status{Status: s.Status(), NBDSocket: s.nbdSocket, ExporterStatus: s.exporter.Status()}
}

// Exporter is the SDC's export set and IO engines.
func (s *Service) Exporter() *Exporter { return s.exporter }

// NBDAddr is the bound NBD address.
func (s *Service) NBDAddr() string { return s.nbdAddr }

// NBDSocket is the NBD Unix socket's path ("": none).
func (s *Service) NBDSocket() string { return s.nbdSocket }

// APIAddr is the bound control address.
func (s *Service) APIAddr() string { return s.control.Addr() }

// MgmtAddr is the bound mgmt address.
func (s *Service) MgmtAddr() string { return s.mgmt.Addr() }

// Close stops the NBD server (in-flight requests get ShutdownGrace to finish), the exports and
// their connections, the listeners; then it leaves the gossip pool and stops heartbeating.
func (s *Service) Close() error {
	nbdErr := s.nbd.Close()
	s.exporter.Close()
	s.conns.Close()
	err := errors.Join(nbdErr, s.control.Close(), s.mgmt.Close(), s.cache.Close(), s.agent.Close())
	if s.shm != nil {
		// After the NBD server and the control API: their requests are done with their slots
		// (Close waits a moment for any still returning one).
		err = errors.Join(err, s.shm.Close())
	}
	s.log.Info("SDC stopped")
	return err
}
