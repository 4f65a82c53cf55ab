package mdm

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"pflex/internal/rawconn"
)

// Raft's RPCs cross raw connections both ways, and an address peers could not dial is refused.
func TestRaftTransportUsesRawConnections(t *testing.T) {
	if _, err := newRaftTransport("0.0.0.0:0", nil, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "raft_advertise") {
		t.Fatalf("a wildcard bind without an advertised address: %v, want an error naming raft_advertise", err)
	}
	a, err := newRaftTransport("127.0.0.1:0", nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := newRaftTransport("127.0.0.1:0", nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	go func() {
		for rpc := range b.Consumer() {
			req := rpc.Command.(*raft.AppendEntriesRequest)
			rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: req.PrevLogEntry + uint64(len(req.Entries)), Success: true}, nil)
		}
	}()
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("mdm-1"), Addr: []byte(a.LocalAddr())}, Term: 3, PrevLogEntry: 7,
		Entries: []*raft.Log{{Index: 8, Term: 3, Type: raft.LogCommand, Data: make([]byte, 256<<10)}}}
	for range 3 {
		var resp raft.AppendEntriesResponse
		if err := a.AppendEntries("mdm-2", b.LocalAddr(), req, &resp); err != nil {
			t.Fatal(err)
		}
		if !resp.Success || resp.Term != 3 || resp.LastLog != 8 {
			t.Fatalf("response %+v", resp)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st := &rawStream{Listener: ln}
	defer st.Close()
	dialled, err := st.Dial(raft.ServerAddress(st.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer dialled.Close()
	accepted, err := st.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	for _, c := range []net.Conn{dialled, accepted} {
		if _, ok := c.(*rawconn.Conn); !ok {
			t.Fatalf("a %T, want a *rawconn.Conn", c)
		}
	}
}
