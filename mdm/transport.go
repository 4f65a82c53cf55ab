package mdm

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"pflex/internal/rawconn"
)

// newRaftTransport is raft's TCP transport without pipelined replication (MaxRPCsInFlight 1),
// over connections with raw socket reads and writes.
//
// No pipeline: in hashicorp/raft v1.8.0 a pipeline can deadlock when a follower answers with a
// newer term or a refusal: replication to that follower stops for good while heartbeats go on,
// and Shutdown never returns (mdm/DESIGN.md "No pipelined replication").
//
// Raw reads and writes (internal/rawconn): the leader sends every follower an AppendEntries
// each commit_timeout, with or without entries, so an idle cluster exchanges a few hundred
// RPCs a second. Through net.Conn each read and write enters the scheduler's system call path,
// which wakes the runtime's monitor thread whenever it sleeps; raw calls on the non-blocking
// socket do not (mdm/DESIGN.md "Raft transport").
func newRaftTransport(bind string, advertise net.Addr, logger hclog.Logger) (*raft.NetworkTransport, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	s := &rawStream{Listener: ln, advertise: advertise}
	if a, ok := s.Addr().(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft address %v cannot be advertised to peers: set raft_advertise", s.Addr())
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: s, MaxPool: 4, Timeout: 10 * time.Second, Logger: logger, MaxRPCsInFlight: 1,
	}), nil
}

// rawStream is raft's stream layer: TCP, every connection wrapped by rawconn.
type rawStream struct {
	net.Listener
	advertise net.Addr
}

func (s *rawStream) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return rawconn.Wrap(c), nil
}

func (s *rawStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	return rawconn.Wrap(c), nil
}

// Addr is the address peers reach this node at.
func (s *rawStream) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.Listener.Addr()
}
