// Package mdm is the metadata manager: a raft replica of the cluster's metadata that serves the
// HTTP admin API on every node, forwarding writes and linearizable reads to the leader.
package mdm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Server is a running MDM: the raft node and its API listener.
type Server struct {
	cfg  *Config
	log  hclog.Logger
	node *Node
	http *http.Server
	ln   net.Listener
	done chan error
}

// NewLogger is the MDM's structured logger.
func NewLogger(cfg *Config) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   cfg.NodeID,
		Level:  hclog.LevelFromString(cfg.LogLevel),
		Output: os.Stderr,
	})
}

// Start opens the node and starts serving the API. The config must be valid.
func Start(cfg *Config, logger hclog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mdm: config: %w", err)
	}
	node, err := openNode(cfg, logger)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		node.Close()
		return nil, fmt.Errorf("mdm: api_addr %s: %w", cfg.APIAddr, err)
	}
	s := &Server{cfg: cfg, log: logger, node: node, ln: ln, done: make(chan error, 1)}
	s.http = &http.Server{
		Handler:           newHandler(node, cfg.AdminToken, cfg.ClusterKey),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() { s.done <- s.http.Serve(ln) }()
	logger.Info("MDM started", "api", ln.Addr().String(), "raft", cfg.RaftAddr, "data_dir", cfg.DataDir)
	return s, nil
}

// Run starts an MDM and serves until ctx is cancelled.
func Run(ctx context.Context, cfg *Config) error {
	s, err := Start(cfg, NewLogger(cfg))
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-s.done:
		s.Close()
		return fmt.Errorf("mdm: api server: %w", err)
	}
	return s.Close()
}

// Node is the raft replica behind the server.
func (s *Server) Node() *Node { return s.node }

// APIAddr is the address the API listens on.
func (s *Server) APIAddr() string { return s.ln.Addr().String() }

// Close stops serving and shuts the replica down.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, s.node.Close())
}
