package sdc

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/shm"
	"pflex/internal/wire"
)

// freeSlots takes every free slot of r's 64 KiB class (and gives them back).
func freeSlots(r *shm.Region) int {
	var got [][]byte
	for {
		b := r.Get(smallSlot)
		if b == nil || cap(b) != smallSlot {
			if b != nil {
				r.Put(b)
			}
			break
		}
		got = append(got, b)
	}
	for _, b := range got {
		r.Put(b)
	}
	return len(got)
}

// shmVolume exports vol1 of c through an SDC with a shared region of the smallest size.
func shmVolume(t *testing.T, c *fakeCluster) (*Volume, *Exporter, *shm.Region) {
	t.Helper()
	region, err := newSharedRegion(minSharedMemoryMB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { region.Close() })
	e := newTestExporterShm(t, c, 5*time.Second, region)
	return exportedVolume(t, e, "vol1"), e, region
}

func TestWritePayloadsGoThroughSharedMemory(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.sds[1].shm = shm.NewRegistry(4) // SDS 1 is on this host; SDS 2 cannot map the region
	c.addVolume(1, "vol1", fsm.ReadWrite)
	v, e, region := shmVolume(t, c)
	ctx := context.Background()

	// Every chunk of the volume, one write each, payload in the region (as the NBD server
	// reads it there through WriteBuffers).
	l := c.trueLayout(1)
	want := pattern(testVolSize, 9)
	for off := int64(0); off < testVolSize; off += testChunkSize {
		buf := v.WriteBuffer(testChunkSize)
		if buf == nil {
			t.Fatal("no slot in the shared region")
		}
		copy(buf, want[off:])
		if err := v.WriteAt(ctx, buf, off, false); err != nil {
			t.Fatal(err)
		}
		if !v.ReleaseWriteBuffer(buf) {
			t.Fatal("the volume did not take its slot back")
		}
	}
	got := make([]byte, testVolSize)
	if err := v.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, want))
	}
	// SDS 1 took its chunks by reference, SDS 2 as bytes.
	n1, n2 := 0, 0
	for ch := range l.Chunks() {
		if l.Replicas(ch)[0] == 1 {
			n1++
		} else {
			n2++
		}
	}
	if a, b := len(c.sds[1].opsOf(wire.OpShmWrite)), len(c.sds[1].opsOf(wire.OpWrite)); a != n1 || b != 0 {
		t.Fatalf("SDS 1: %d shared-memory writes and %d plain ones, want %d and 0", a, b, n1)
	}
	if a, b := len(c.sds[2].opsOf(wire.OpShmWrite)), len(c.sds[2].opsOf(wire.OpWrite)); a != 0 || b != n2 {
		t.Fatalf("SDS 2: %d shared-memory writes and %d plain ones, want 0 and %d", a, b, n2)
	}
	// Reads of a chunk each (64 KiB spans, shmReadMin) came back the same ways.
	if a, b := len(c.sds[1].opsOf(wire.OpShmRead)), len(c.sds[1].opsOf(wire.OpRead)); a != n1 || b != 0 {
		t.Fatalf("SDS 1: %d shared-memory reads and %d plain ones, want %d and 0", a, b, n1)
	}
	if a, b := len(c.sds[2].opsOf(wire.OpShmRead)), len(c.sds[2].opsOf(wire.OpRead)); a != 0 || b != n2 {
		t.Fatalf("SDS 2: %d shared-memory reads and %d plain ones, want 0 and %d", a, b, n2)
	}
	st := e.Status().SharedMemory
	if st == nil || st.AttachedSDS != 1 || st.Gets != int64(2*n1+n2) || st.Tainted != 0 {
		t.Fatalf("status %+v", st)
	}
	if n := freeSlots(region); n != smallSlots {
		t.Fatalf("%d small slots free after the writes, want all %d", n, smallSlots)
	}
}

func TestSlotOfAWriteWithoutCleanAnswerIsNeverReused(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	l := c.trueLayout(1)
	p := c.sds[l.Replicas(0)[0]] // chunk 0's primary
	p.shm = shm.NewRegistry(4)
	v, _, region := shmVolume(t, c)

	// The first attempt is answered Retry: the SDS (a primary whose forward failed) may not be
	// done with the bytes. The retry succeeds, but the slot must not come back.
	var refused atomic.Bool // set by the SDS's goroutine
	p.setInject(func(req *wire.Request) (wire.Status, bool) {
		if req.Op == wire.OpShmWrite && refused.CompareAndSwap(false, true) {
			return wire.StatusRetry, true
		}
		return 0, false
	})
	buf := v.WriteBuffer(4096)
	copy(buf, pattern(4096, 1))
	if err := v.WriteAt(context.Background(), buf, 0, false); err != nil {
		t.Fatal(err)
	}
	v.ReleaseWriteBuffer(buf)
	if !refused.Load() || !bytes.Equal(p.chunk(1, 0)[:4096], pattern(4096, 1)) {
		t.Fatalf("refused %v; data on the SDS wrong", refused.Load())
	}
	if st := region.Stats(); st.Tainted != 1 {
		t.Fatalf("tainted slots %d, want 1", st.Tainted)
	}
	if n := freeSlots(region); n != smallSlots-1 {
		t.Fatalf("%d small slots free, want %d (the tainted one withdrawn)", n, smallSlots-1)
	}
}

// An SDS of a version without shared memory closes the connection on OpShmAttach: the IO goes
// on over a new connection that does not offer the region again.
func TestSDSThatDropsTheAttachGetsBytes(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	for _, s := range c.sds {
		s.setInject(func(req *wire.Request) (wire.Status, bool) {
			if req.Op == wire.OpShmAttach {
				s.dropConns()
				return wire.StatusProto, true // not delivered: the connection is going
			}
			return 0, false
		})
	}
	v, _, _ := shmVolume(t, c)
	buf := v.WriteBuffer(testVolSize)
	if buf == nil {
		buf = make([]byte, testVolSize)
	}
	copy(buf, pattern(testVolSize, 4))
	if err := v.WriteAt(context.Background(), buf, 0, false); err != nil {
		t.Fatal(err)
	}
	v.ReleaseWriteBuffer(buf)
	got := make([]byte, testVolSize)
	if err := v.ReadAt(context.Background(), got, 0); err != nil || !bytes.Equal(got, pattern(testVolSize, 4)) {
		t.Fatalf("read back: %v", err)
	}
	for id, s := range c.sds {
		if n := len(s.opsOf(wire.OpShmWrite)) + len(s.opsOf(wire.OpShmRead)); n != 0 {
			t.Fatalf("SDS %d served %d shared-memory requests", id, n)
		}
	}
}

func TestReadBufferedServesFromASlotAndDropsATaintedOne(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	l := c.trueLayout(1)
	p := c.sds[l.Replicas(0)[0]] // chunk 0's primary maps the region; the other SDS does not
	p.shm = shm.NewRegistry(4)
	v, _, region := shmVolume(t, c)
	ctx := context.Background()
	want := pattern(testVolSize, 6)
	if err := v.WriteAt(ctx, want, 0, false); err != nil {
		t.Fatal(err)
	}
	for ch := range l.Chunks() {
		off := ch * testChunkSize
		b, err := v.ReadBuffered(ctx, testChunkSize, off)
		if err != nil || b == nil || !bytes.Equal(b, want[off:off+testChunkSize]) {
			t.Fatalf("chunk %d: %v, got a buffer %v", ch, err, b != nil)
		}
		if _, ok := region.Ref(b); !ok {
			t.Fatalf("chunk %d: not read into the shared region", ch)
		}
		v.ReleaseReadBuffer(b)
	}
	if n := len(p.opsOf(wire.OpShmRead)); n == 0 {
		t.Fatal("the primary on this host served no read into the region")
	}
	// A refused attempt taints the slot: ReadBuffered gives up on it (nil, nil) and the
	// caller reads again into its own buffer.
	var refused atomic.Bool
	p.setInject(func(req *wire.Request) (wire.Status, bool) {
		if req.Op == wire.OpShmRead && refused.CompareAndSwap(false, true) {
			return wire.StatusRetry, true
		}
		return 0, false
	})
	if b, err := v.ReadBuffered(ctx, testChunkSize, 0); b != nil || err != nil {
		t.Fatalf("after a refused attempt: buffer %v, error %v; want neither", b != nil, err)
	}
	if st := region.Stats(); st.Tainted != 1 {
		t.Fatalf("tainted %d, want 1", st.Tainted)
	}
	if n := freeSlots(region); n != smallSlots-1 {
		t.Fatalf("%d small slots free, want %d", n, smallSlots-1)
	}
}
