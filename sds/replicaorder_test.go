package sds

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"pflex/internal/token"
	"pflex/internal/wire"
	"pflex/sds/chunkstore"
)

func TestReplicaOrder(t *testing.T) {
	now := time.Unix(1000, 0)
	o := newReplicaOrder(time.Minute, 4, func() time.Time { return now })
	k0, k1 := chunkstore.Key{VolumeID: 1, Chunk: 0}, chunkstore.Key{VolumeID: 1, Chunk: 1}
	a := wire.PeerHello{SDSID: 1, Run: 7}
	o.hello(a)
	admit := func(k chunkstore.Key, from wire.PeerHello, seq uint64, want string) {
		t.Helper()
		err := o.admit(k, peerWrite{from: from, seq: seq})
		if (err == nil) != (want == "") || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Fatalf("admit %v seq %d from %+v: %v, want %q", k, seq, from, err, want)
		}
	}
	admit(k0, a, 10, "")
	admit(k0, a, 12, "")
	admit(k0, a, 11, "arrived after its write 12")
	admit(k0, a, 12, "arrived after its write 12") // the same write twice
	admit(k1, a, 5, "")                            // chunks are ordered each on its own
	admit(k0, wire.PeerHello{}, 1, "")             // a primary without ordered ids: not checked

	// A new run of the primary: what is still on its way from the earlier run is stale.
	a2 := wire.PeerHello{SDSID: 1, Run: 8}
	o.hello(a2)
	admit(k0, a, 13, "earlier run")
	admit(k0, a2, 1, "")
	// Another primary (the layout moved): its ids start over.
	b := wire.PeerHello{SDSID: 2, Run: 9}
	o.hello(b)
	admit(k0, b, 1, "")
	admit(k0, a2, 2, "")
	admit(k0, a2, 1, "arrived after its write 2") // each primary's writes are ordered on their own
	admit(chunkstore.Key{VolumeID: 5}, b, 2, "")

	// Past retention a chunk is forgotten, and its primary's writes not newer than the newest
	// forgotten one are refused: they are older than every write remembered.
	now = now.Add(61 * time.Second)
	admit(k1, b, 3, "")
	if n := o.size(); n != 1 {
		t.Fatalf("%d chunks remembered after retention, want 1", n)
	}
	admit(chunkstore.Key{VolumeID: 2}, b, 1, "older than every write remembered")
	admit(chunkstore.Key{VolumeID: 2}, b, 4, "")

	// Over the cap the oldest chunk is forgotten early, and the floor moves with it.
	for c := int64(10); c < 14; c++ {
		admit(chunkstore.Key{VolumeID: 3, Chunk: c}, b, uint64(c), "")
	}
	if n := o.size(); n != 4 {
		t.Fatalf("%d chunks remembered, want the cap (4)", n)
	}
	admit(chunkstore.Key{VolumeID: 4}, b, 3, "older than every write remembered")
	admit(chunkstore.Key{VolumeID: 4}, b, 20, "")
	if n := o.refused.Load(); n != 6 {
		t.Fatalf("%d refusals counted, want 6", n)
	}

	// A chunk written over and over is one entry of the queue, remembered from its last write.
	o = newReplicaOrder(time.Minute, 4, func() time.Time { return now })
	o.hello(a)
	for seq := range uint64(100) {
		admit(k0, a, seq+1, "")
		now = now.Add(time.Second)
	}
	if n := len(o.queue) - o.head; n != 1 {
		t.Fatalf("%d queue entries for one chunk, want 1", n)
	}
	now = now.Add(30 * time.Second) // 31 s after its last write
	admit(k1, a, 200, "")
	admit(k0, a, 99, "arrived after its write 100")
}

// readCopy reads n bytes at the start of chunk 0 of volume 1 from the SDS id's own copy.
func (c *cluster) readCopy(t *testing.T, id int64, n int) []byte {
	t.Helper()
	l := c.mdm.layout(1)
	b := make([]byte, n)
	if err := c.sdss[id].data.cfg.Store.ReadAt(chunkstore.Key{VolumeID: 1, Chunk: 0}, l.ChunkSize, b, 0); err != nil {
		t.Fatalf("read SDS %d's copy: %v", id, err)
	}
	return b
}

// dialOrdered opens a peer connection to the SDS id as SDS from does in its run, with request
// ids from ids, and registers tok on it.
func (c *cluster) dialOrdered(t *testing.T, id int64, from wire.PeerHello, ids *atomic.Uint64, tok token.Token) *wire.Conn {
	t.Helper()
	conn, err := wire.Dial(context.Background(), c.sdss[id].DataAddr(), wire.ClientOptions{IDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	for _, req := range []wire.Request{from.Request(c.peerToken().Bytes()), {Op: wire.OpAuth, VolumeID: 1, Data: tok.Bytes()}} {
		if _, st := do(conn, req); st != wire.StatusOK {
			t.Fatalf("%v on SDS %d: %v", req.Op, id, st)
		}
	}
	return conn
}

// stallFirst makes the SDS id hold the first replica write whose data is data before its copy
// lock, until release is sent to (or closed); stalled is closed when it is held.
func (c *cluster) stallFirst(id int64, data []byte) (stalled, release chan struct{}) {
	stalled, release = make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	stall := func(req *wire.Request) {
		if bytes.Equal(req.Data, data) && first.CompareAndSwap(false, true) {
			close(stalled)
			<-release
		}
	}
	c.sdss[id].data.stallReplica.Store(&stall)
	return stalled, release
}

// A secondary applies a primary's replica writes of a chunk in the order of their ids, whatever
// connection each came on; a write from an earlier run of the primary is refused. A primary that
// does not name itself (an older version) is not checked.
func TestReplicaWritesApplyInOrder(t *testing.T) {
	c := startCluster(t, 2)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	p, s := l.Replicas(0)[0], l.Replicas(0)[1]
	ids := new(atomic.Uint64)
	run1, run2 := wire.PeerHello{SDSID: p, Run: 1}, wire.PeerHello{SDSID: p, Run: 2}
	early, late := c.dialOrdered(t, s, run1, ids, tok), c.dialOrdered(t, s, run1, ids, tok)
	var restarted *wire.Conn
	for _, step := range []struct {
		restart    bool // first the primary restarts: its earlier run's connection carries stale writes
		conn       **wire.Conn
		id         uint64
		data, what string
		want       wire.Status
	}{
		{false, &late, 200, "newer", "a write", wire.StatusOK},
		{false, &early, 150, "older", "an older write after it, on another connection", wire.StatusRetry},
		{false, &early, 250, "third", "a newer write on that connection", wire.StatusOK},
		{true, &early, 300, "stale", "a write from the earlier run", wire.StatusRetry},
		{false, &restarted, 1, "fresh", "a write of the new run", wire.StatusOK},
	} {
		if step.restart {
			restarted = c.dialOrdered(t, s, run2, ids, tok)
		}
		before := string(c.readCopy(t, s, 5))
		ids.Store(step.id - 1)
		_, st := do(*step.conn, wire.Request{Op: wire.OpReplWrite, VolumeID: 1, Epoch: l.ChunkEpoch(0), Data: []byte(step.data)})
		want := step.data
		if step.want != wire.StatusOK {
			want = before
		}
		if got := string(c.readCopy(t, s, 5)); st != step.want || got != want {
			t.Fatalf("%s (id %d): %v, the copy holds %q; want %v and %q", step.what, step.id, st, got, step.want, want)
		}
	}

	// A peer that does not name itself counts its ids per connection: not compared.
	legacy := c.dialPeer(t, s, &tok)
	for _, data := range []string{"plain", "again"} {
		if _, st := do(legacy, wire.Request{Op: wire.OpReplWrite, VolumeID: 1, Epoch: l.ChunkEpoch(0), Data: []byte(data)}); st != wire.StatusOK {
			t.Fatalf("replica write from an unordered peer: %v", st)
		}
	}
	if st := c.sdss[s].Status().Data; st.ReplicaOutOfOrder != 2 || st.ReplicaOrders != 1 {
		t.Fatalf("status: %d out of order, %d chunks remembered; want 2 and 1", st.ReplicaOutOfOrder, st.ReplicaOrders)
	}
}

// The case the order exists for: a replica write delayed in the secondary past its primary's
// timeout. The primary answers Retry and, at the next write of the chunk, sends its current
// bytes and the new write on a new connection; the delayed write, landing after them, would
// put the old bytes back in the secondary's copy alone. It is refused instead.
func TestDelayedReplicaWriteIsNotAppliedLate(t *testing.T) {
	c := newCluster(t, 2, nil, func(cfg *Config) { cfg.ReplicaTimeout = "300ms" })
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	p, s := l.Replicas(0)[0], l.Replicas(0)[1]
	old, cur := bytes.Repeat([]byte("A"), 4096), bytes.Repeat([]byte("B"), 4096)

	stalled, release := c.stallFirst(s, old)
	defer close(release)

	client := c.dial(t, p, &tok)
	if _, st := do(client, wire.Request{Op: wire.OpWrite, VolumeID: 1, Epoch: l.ChunkEpoch(0), Tag: 1, Data: old}); st != wire.StatusRetry {
		t.Fatalf("write whose forward stalls: %v, want Retry", st)
	}
	<-stalled
	if _, st := do(client, wire.Request{Op: wire.OpWrite, VolumeID: 1, Epoch: l.ChunkEpoch(0), Tag: 2, Data: cur}); st != wire.StatusOK {
		t.Fatalf("next write: %v", st)
	}
	handled := func() int64 { st := c.sdss[s].Status().Data; return st.ReplicaWrites + st.ReplicaOutOfOrder }
	before := handled()
	release <- struct{}{}
	waitFor(t, "the delayed write to be handled", func() bool { return handled() > before })
	for _, id := range []int64{p, s} {
		if got := c.readCopy(t, id, len(cur)); !bytes.Equal(got, cur) {
			t.Fatalf("SDS %d's copy begins %q, want the newer write", id, got[:8])
		}
	}
	if n := c.sdss[s].Status().Data.ReplicaOutOfOrder; n != 1 {
		t.Fatalf("%d replica writes refused as out of order, want 1", n)
	}
	if a, b := c.chunks(t, p, 1)[0], c.chunks(t, s, 1)[0]; a.CRC32C != b.CRC32C {
		t.Fatalf("replicas differ: %+v %+v", a, b)
	}
}

// A replica write that waited in the secondary while the MDM took its primary out of the layout
// is refused: the secondary, primary now, may already have acknowledged a newer write of the
// chunk with its copy alone, and the old bytes would replace it.
func TestReplicaWriteOfAnEarlierEpochIsNotAppliedLate(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	p, s := l.Replicas(0)[0], l.Replicas(0)[1]
	stalled, release := c.stallFirst(s, []byte("older"))
	defer close(release)
	peer := c.dialOrdered(t, s, wire.PeerHello{SDSID: p, Run: 1}, new(atomic.Uint64), tok)
	answer := make(chan wire.Status, 1)
	go func() {
		_, st := do(peer, wire.Request{Op: wire.OpReplWrite, VolumeID: 1, Epoch: l.ChunkEpoch(0), Data: []byte("older")})
		answer <- st
	}()
	<-stalled

	c.mdm.exclude(p)
	l2 := c.mdm.layout(1)
	if got := l2.Replicas(0); len(got) != 1 || got[0] != s {
		t.Fatalf("replicas of chunk 0 after excluding SDS %d: %v", p, got)
	}
	if _, st := do(c.dial(t, s, &tok), wire.Request{Op: wire.OpWrite, VolumeID: 1, Epoch: l2.ChunkEpoch(0), Tag: 1, Data: []byte("newer")}); st != wire.StatusOK {
		t.Fatalf("degraded write on the new primary: %v", st)
	}
	release <- struct{}{}
	if st := <-answer; st != wire.StatusStaleEpoch {
		t.Fatalf("replica write of epoch %d after the layout moved to %d: %v, want StaleEpoch", l.Epoch, l2.Epoch, st)
	}
	if got := c.readCopy(t, s, 5); string(got) != "newer" {
		t.Fatalf("the new primary holds %q, want the acknowledged \"newer\"", got)
	}
}

// FuzzReplicaOrder drives the order table with writes of a few chunks from two primaries, new
// runs and the passing of time, against two properties: the writes admitted for a chunk from
// one run of a primary have increasing ids, whatever was forgotten meanwhile; and a write with
// an id above every id its run has sent before (a primary's writes as it sends them) is always
// admitted.
func FuzzReplicaOrder(f *testing.F) {
	f.Add([]byte{0x00, 0x11, 0x05, 0x40, 0x00, 0x80, 0x02, 0x11, 0xc0, 0x03})
	f.Add([]byte{0x01, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xa9, 0xba, 0xcb})
	f.Fuzz(func(t *testing.T, ops []byte) {
		now := time.Unix(0, 0)
		o := newReplicaOrder(10*time.Second, 3, func() time.Time { return now })
		runs := map[int64]uint64{1: 1, 2: 1}
		sent := map[wire.PeerHello]uint64{} // the highest id each run has sent
		type stream struct {
			key  chunkstore.Key
			from wire.PeerHello
		}
		admitted := map[stream]uint64{}
		for _, h := range []wire.PeerHello{{SDSID: 1, Run: 1}, {SDSID: 2, Run: 1}} {
			o.hello(h)
		}
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], ops[i+1]
			sender := int64(1 + op&1)
			switch op >> 6 {
			case 0: // time passes
				now = now.Add(time.Duration(arg) * 100 * time.Millisecond)
			case 1: // the primary restarts
				runs[sender]++
				o.hello(wire.PeerHello{SDSID: sender, Run: runs[sender]})
			default: // a write of chunk arg&3 with an id near the run's newest (older ones too)
				from := wire.PeerHello{SDSID: sender, Run: runs[sender]}
				seq := sent[from] + uint64(arg>>2)
				if seq >= 32 {
					seq -= 32 // an older write, arriving late
				}
				fresh := seq > sent[from]
				if fresh {
					sent[from] = seq
				}
				s := stream{chunkstore.Key{VolumeID: 1, Chunk: int64(arg & 3)}, from}
				err := o.admit(s.key, peerWrite{from: from, seq: seq})
				if err == nil && seq <= admitted[s] {
					t.Fatalf("write %d of %+v admitted after write %d", seq, s, admitted[s])
				}
				if err != nil && fresh {
					t.Fatalf("write %d, the newest %+v has sent, refused: %v", seq, from, err)
				}
				if err == nil {
					admitted[s] = seq
				}
			}
		}
	})
}
