// Package nbd serves block devices to NBD clients (qemu, libnbd, fio, the
// kernel's nbd-client): fixed newstyle handshake, simple replies, many
// requests in flight per connection, over pluggable Exports.
package nbd

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Server is an NBD server. Create it with NewServer, run it with Serve.
type Server struct {
	cfg    Config
	log    hclog.Logger
	ctx    context.Context // passed to Export calls; cancelled by Close after the grace period
	cancel context.CancelFunc
	stats  counters
	bufs   bufferPool

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	handlers  sync.WaitGroup
}

// NewServer returns a server for cfg, with zero fields set to their defaults.
// An invalid cfg makes Serve fail; check it first with cfg.Validate.
func NewServer(cfg Config) *Server {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:       cfg,
		log:       cfg.Logger.Named("nbd"),
		ctx:       ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
}

// Serve accepts connections on ln and serves each in its own goroutine. It
// returns ErrServerClosed after Close, or the listener's error when ln fails
// or is closed by someone else.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.cfg.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	s.log.Info("serving", "addr", ln.Addr().String())

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if transientAcceptError(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "error", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if !s.startConn(nc) {
			nc.Close()
			return ErrServerClosed
		}
	}
}

// startConn registers nc and starts its handler; false if the server is closed.
func (s *Server) startConn(nc net.Conn) bool {
	c := newConn(s, nc)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.handlers.Add(1)
	s.stats.connections.Add(1)
	s.stats.active.Add(1)
	go func() {
		defer s.handlers.Done()
		defer s.stats.active.Add(-1)
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
		c.serve()
	}()
	return true
}

// transientAcceptError reports accept failures worth retrying: timeouts,
// running out of descriptors, and connections aborted before accept.
func transientAcceptError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the listeners, stops reading new requests on every connection,
// lets in-flight requests finish for up to ShutdownGrace, then cancels their
// contexts (the client sees ESHUTDOWN) and, if that is not enough either,
// drops the connections. It waits for every handler to return.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.handlers.Wait()
		return nil
	}
	s.closed = true
	var errs []error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.stop("server closing")
	}
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(done)
	}()
	wait := func(d time.Duration) bool {
		select {
		case <-done:
			return true
		case <-time.After(d):
			return false
		}
	}
	if !wait(s.cfg.ShutdownGrace) {
		// Cancelled requests answer ESHUTDOWN if the export honours ctx;
		// give those replies a moment, then drop whatever is left.
		s.log.Warn("in-flight requests outlived the shutdown grace; cancelling them")
		s.cancel()
		if !wait(min(s.cfg.ShutdownGrace, time.Second)) {
			for _, c := range conns {
				c.nc.Close()
			}
			<-done
		}
	}
	s.cancel()
	return errors.Join(errs...)
}

// ExportRemoved disconnects the clients of export name (the name the export
// was looked up by, so DefaultExport's clients too). Each such connection
// stops reading requests, lets its in-flight requests finish or fail, sends
// their replies and closes. Remove the name from Exports first, so that no
// new client can attach in between.
func (s *Server) ExportRemoved(name string) {
	s.mu.Lock()
	var victims []*conn
	for c := range s.conns {
		if c.exportName() == name {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	for _, c := range victims {
		c.stop("export removed")
	}
	if len(victims) > 0 {
		s.log.Info("export removed; disconnecting clients", "export", name, "connections", len(victims))
	}
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }
