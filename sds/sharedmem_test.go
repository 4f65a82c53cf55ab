package sds

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"pflex/internal/shm"
	"pflex/internal/token"
	"pflex/internal/wire"
)

// attach offers region to the SDS behind conn.
func attach(conn *wire.Conn, r *shm.Region) wire.Status {
	desc, _ := r.Desc().MarshalBinary()
	_, st := do(conn, wire.Request{Op: wire.OpShmAttach, Data: desc})
	return st
}

func shmWrite(conn *wire.Conn, r *shm.Region, buf []byte, vol, off, epoch int64) wire.Status {
	ref, _ := r.Ref(buf)
	_, st := do(conn, wire.Request{Op: wire.OpShmWrite, VolumeID: vol, Offset: off, Epoch: epoch,
		Data: wire.ShmRef{Region: r.Desc().ID, Offset: ref, Length: uint32(len(buf))}.Encode()})
	return st
}

func TestSharedMemoryWritesReachBothReplicas(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	r, err := shm.Create([]shm.Class{{Size: testChunk, Count: 4}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	conns := map[int64]*wire.Conn{}
	for id := range c.sdss {
		conns[id] = c.dial(t, id, &tok)
		if st := attach(conns[id], r); st != wire.StatusOK {
			t.Fatalf("attach on SDS %d: %v", id, st)
		}
	}
	want := make([]byte, testSize)
	for ch := range l.Chunks() {
		buf := r.Get(testChunk - 100)
		copy(buf, fill(len(buf), byte(ch)))
		off := ch*testChunk + 50
		if st := shmWrite(conns[l.Replicas(ch)[0]], r, buf, 1, off, l.ChunkEpoch(ch)); st != wire.StatusOK {
			t.Fatalf("chunk %d: %v", ch, st)
		}
		copy(want[off:], buf)
		r.Put(buf)
	}
	var writes, forwards int64
	for id, s := range c.sdss {
		st := s.data.Stats()
		writes += st.ShmWrites
		forwards += st.ShmForwards
		if st.ShmRegions != 1 {
			t.Fatalf("SDS %d maps %d regions, want 1 (shared by its connections)", id, st.ShmRegions)
		}
	}
	// Every chunk's primary took it from the region, and so did its secondary (a reference
	// forwarded, not the bytes).
	if n := int64(len(want) / testChunk); writes != 2*n || forwards != n {
		t.Fatalf("shared-memory writes %d, forwards %d; want %d and %d", writes, forwards, 2*n, n)
	}
	for ch := range l.Chunks() {
		reps := l.Replicas(ch)
		resp, st := do(conns[reps[0]], wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: ch * testChunk, Length: testChunk, Epoch: 1})
		if st != wire.StatusOK || !bytes.Equal(resp.Data, want[ch*testChunk:(ch+1)*testChunk]) {
			t.Fatalf("chunk %d read back: %v", ch, st)
		}
		// The same read into the region.
		slot := r.Get(testChunk)
		ref, _ := r.Ref(slot)
		resp, st = do(conns[reps[0]], wire.Request{Op: wire.OpShmRead, VolumeID: 1, Offset: ch * testChunk, Epoch: 1,
			Data: wire.ShmRef{Region: r.Desc().ID, Offset: ref, Length: testChunk}.Encode()})
		if st != wire.StatusOK || len(resp.Data) != 0 || !bytes.Equal(slot, want[ch*testChunk:(ch+1)*testChunk]) {
			t.Fatalf("chunk %d read into shared memory: %v, %d bytes in the reply", ch, st, len(resp.Data))
		}
		r.Put(slot)
		a, b := c.chunks(t, reps[0], 1)[ch], c.chunks(t, reps[1], 1)[ch]
		if a.CRC32C == "" || a.CRC32C != b.CRC32C {
			t.Fatalf("chunk %d: replicas differ: %+v %+v", ch, a, b)
		}
	}
	// The SDC goes: its connections close, each SDS unmaps the region, and the primaries close
	// the replica connections that passed it on, so that the secondaries unmap it too.
	for _, conn := range conns {
		conn.Close()
	}
	waitFor(t, "every SDS to unmap the region", func() bool {
		for _, s := range c.sdss {
			if s.data.Stats().ShmRegions != 0 {
				return false
			}
		}
		return true
	})
}

func TestSharedMemoryRefusals(t *testing.T) {
	c := startCluster(t, 2)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	r, err := shm.Create([]shm.Class{{Size: 4096, Count: 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := l.Replicas(0)[0]
	conn := c.dial(t, p, &tok)
	other := c.dial(t, p, &tok)
	buf := r.Get(4096)
	copy(buf, bytes.Repeat([]byte{0xee}, 4096))

	// Not attached on this connection: refused.
	if st := shmWrite(conn, r, buf, 1, 0, 1); st != wire.StatusProto {
		t.Fatalf("write from an unattached region: %v", st)
	}
	// A descriptor that does not match the region (wrong nonce), or is truncated.
	d := r.Desc()
	d.Nonce[3] ^= 0xff
	bad, _ := d.MarshalBinary()
	if _, st := do(conn, wire.Request{Op: wire.OpShmAttach, Data: bad}); st != wire.StatusProto {
		t.Fatalf("attach with a wrong nonce: %v", st)
	}
	if _, st := do(conn, wire.Request{Op: wire.OpShmAttach, Data: bad[:10]}); st != wire.StatusProto {
		t.Fatalf("attach with a short descriptor: %v", st)
	}
	if st := attach(conn, r); st != wire.StatusOK {
		t.Fatalf("attach: %v", st)
	}
	// Attached on one connection only.
	if st := shmWrite(other, r, buf, 1, 0, 1); st != wire.StatusProto {
		t.Fatalf("write on another connection: %v", st)
	}
	// References outside the region, and a malformed one.
	id := r.Desc().ID
	for _, ref := range []wire.ShmRef{
		{Region: id, Offset: 0, Length: 16},              // the header page
		{Region: id, Offset: d.Size - 100, Length: 4096}, // past the end
		{Region: id, Offset: 1<<64 - 10, Length: 4096},   // wraps around
		{Region: id ^ 1, Offset: 4096, Length: 4096},     // another region
	} {
		if _, st := do(conn, wire.Request{Op: wire.OpShmWrite, VolumeID: 1, Offset: 0, Epoch: 1, Data: ref.Encode()}); st != wire.StatusProto {
			t.Fatalf("reference %+v: %v", ref, st)
		}
	}
	if _, st := do(conn, wire.Request{Op: wire.OpShmWrite, VolumeID: 1, Offset: 0, Epoch: 1, Data: make([]byte, 19)}); st != wire.StatusProto {
		t.Fatalf("short reference: %v", st)
	}
	// None of that touched the volume; a good reference writes.
	resp, st := do(conn, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: 0, Length: 4096, Epoch: 1})
	if st != wire.StatusOK || !bytes.Equal(resp.Data, make([]byte, 4096)) {
		t.Fatalf("volume changed by refused requests: %v", st)
	}
	if st := shmWrite(conn, r, buf, 1, 0, 1); st != wire.StatusOK {
		t.Fatalf("good reference: %v", st)
	}
	resp, _ = do(other, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: 0, Length: 4096, Epoch: 1})
	if !bytes.Equal(resp.Data, buf) {
		t.Fatal("shared-memory write not read back")
	}
	// Token checks apply as to any write: a read-only token is refused.
	ro := c.token(1, token.ReadOnly, time.Minute)
	roConn := c.dial(t, p, &ro)
	attach(roConn, r)
	if st := shmWrite(roConn, r, buf, 1, 0, 1); st != wire.StatusReadOnly {
		t.Fatalf("read-only token: %v", st)
	}
}

// A secondary of a version without shared memory closes the connection on OpShmAttach (an
// unknown opcode is a protocol violation): the primary must not ask again on every new
// connection, or every forward to it would fail.
func TestSecondaryThatDropsTheAttachGetsBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				io.ReadFull(nc, make([]byte, wire.RequestHeaderSize))
				nc.Close()
			}()
		}
	}()
	r, err := shm.Create([]shm.Class{{Size: 4096, Count: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m, err := shm.Open(r.Desc())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := newReplicaPool(wire.ClientOptions{}, time.Second, nil, func() int64 { return 3 })
	defer p.close()
	ctx := context.Background()
	k := replicaKey{addr: ln.Addr().String(), sdc: 5}
	rc, err := p.conn(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if p.shmAttached(ctx, k.addr, rc, m) {
		t.Fatal("attach reported on a dropped connection")
	}
	rc2, err := p.conn(ctx, k) // the dead connection is replaced
	if err != nil || rc2 == rc {
		t.Fatalf("no new connection: %v", err)
	}
	if p.shmAttached(ctx, k.addr, rc2, m) {
		t.Fatal("attach reported")
	}
	waitFor(t, "the listener to count both connections", func() bool { return accepted.Load() >= 2 })
	if n := accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2: the second must not offer the region again", n)
	}
	if rc2.c.Err() != nil {
		t.Fatal("the second connection was used for an attach and dropped")
	}
}
