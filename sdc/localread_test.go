package sdc

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/nowait"
	"pflex/internal/shm"
	"pflex/internal/wire"
)

// localReadCluster is two fake SDSs that grant reads of their chunks (from a device file of
// their own) and an SDC that asks for grants, with vol1 mapped and exported, written with
// pattern seed (returned), and each chunk read once over the connection and then granted.
func localReadCluster(t *testing.T, seed byte) (*fakeCluster, *Exporter, *Volume, []byte) {
	c := newFakeCluster(t, 2)
	for _, s := range c.sds {
		s.shm = shm.NewRegistry(4)
		f, err := os.Create(filepath.Join(t.TempDir(), "dev.img"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		s.dev = f
	}
	c.addVolume(1, "vol1", fsm.ReadWrite)
	region, err := newSharedRegion(minSharedMemoryMB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { region.Close() })
	e := newTestExporterShm(t, c, 5*time.Second, region)
	e.cfg.Conns.localReads = true
	v := exportedVolume(t, e, "vol1")

	ctx := context.Background()
	want := pattern(testVolSize, seed)
	if err := v.WriteAt(ctx, want, 0, false); err != nil {
		t.Fatal(err)
	}
	chunks := int64(testVolSize / testChunkSize)
	got := make([]byte, testChunkSize)
	for ch := range chunks {
		if err := v.ReadAt(ctx, got, ch*testChunkSize); err != nil || !bytes.Equal(got, want[ch*testChunkSize:][:testChunkSize]) {
			t.Fatalf("chunk %d over the connection: %v", ch, err)
		}
	}
	if n := v.Status().LocalReads; n != 0 {
		t.Fatalf("%d local reads before any grant", n)
	}
	waitFor(t, "a grant for every chunk", 5*time.Second, func() bool { return e.cfg.Conns.sharedMemoryStatus().ReadGrants == chunks })
	return c, e, v, want
}

// reportedReads is the local reads the SDSs were sent reports of.
func (c *fakeCluster) reportedReads() uint64 {
	var ops uint64
	for _, s := range c.sds {
		s.mu.Lock()
		ops += s.reported.Ops
		s.mu.Unlock()
	}
	return ops
}

// Reads of chunks once read over the connection go to the SDS's device under a grant; a write
// to a chunk (which revokes its grant) sends its next read over the connection again, with the
// new data; the reads done locally are reported to the SDS that granted them.
func TestLocalReadsUnderGrants(t *testing.T) {
	c, e, v, want := localReadCluster(t, 4)
	ctx := context.Background()
	chunks := int64(testVolSize / testChunkSize)
	got := make([]byte, testChunkSize)
	for ch := range chunks {
		part := got[:testChunkSize-512]
		if err := v.ReadAt(ctx, part, ch*testChunkSize+512); err != nil || !bytes.Equal(part, want[ch*testChunkSize+512:][:len(part)]) {
			t.Fatalf("chunk %d under its grant: %v", ch, err)
		}
	}
	if n := v.Status().LocalReads; n != chunks {
		t.Fatalf("%d local reads, want %d", n, chunks)
	}

	// A write revokes chunk 1's grant: the device copy is stale, the read must not use it.
	newer := pattern(testChunkSize, 8)
	if err := v.WriteAt(ctx, newer, testChunkSize, false); err != nil {
		t.Fatal(err)
	}
	if err := v.ReadAt(ctx, got, testChunkSize); err != nil || !bytes.Equal(got, newer) {
		t.Fatalf("read after a write: %v, equal %v", err, bytes.Equal(got, newer))
	}
	if n := v.Status().LocalReads; n != chunks {
		t.Fatalf("%d local reads after reading a chunk whose grant was revoked, want %d", n, chunks)
	}
	// That read asked for the grant again; the next one is local and sees the new data.
	waitFor(t, "chunk 1 granted again", 5*time.Second, func() bool {
		return v.ReadAt(ctx, got, testChunkSize) == nil && v.Status().LocalReads > chunks
	})
	if !bytes.Equal(got, newer) {
		t.Fatal("a local read after the new grant returned old data")
	}

	local := uint64(v.Status().LocalReads)
	waitFor(t, "the local reads reported", 5*time.Second, func() bool { return c.reportedReads() == local })

	// The SDSs drop their connections (a restart): the grants go with them, reads go over the
	// new connections and ask again.
	dials := e.cfg.Conns.Dials()
	for _, s := range c.sds {
		s.dropConns()
	}
	copy(want[testChunkSize:], newer) // chunk 1 holds newer now
	waitFor(t, "grants on the new connections", 5*time.Second, func() bool {
		for ch := range chunks {
			if err := v.ReadAt(ctx, got, ch*testChunkSize); err != nil || !bytes.Equal(got, want[ch*testChunkSize:][:testChunkSize]) {
				t.Fatalf("chunk %d after the SDSs dropped their connections: %v", ch, err)
			}
		}
		return e.cfg.Conns.Dials() >= dials+2 && e.cfg.Conns.sharedMemoryStatus().ReadGrants == chunks
	})
}

// The checks around a local read: a grant in effect serves it; a write in progress, a revoked
// or an expired grant, another epoch, or a range outside the extent do not (and a revoked or
// expired grant is forgotten, so that the next read over the connection asks again).
func TestLocalReadChecksTheGrantEntry(t *testing.T) {
	region, err := newSharedRegion(minSharedMemoryMB)
	if err != nil {
		t.Fatal(err)
	}
	defer region.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "dev.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := pattern(8192, 5)
	if _, err := f.WriteAt(data, 4096); err != nil {
		t.Fatal(err)
	}
	lr := newLocalReads(region, nil, nil)
	lr.armed = true // no connection to report to: keep the report from being scheduled
	i, _ := region.AllocGrant()
	e, off := region.GrantEntry(i)
	k := chunkRef{1, 0}
	dev := &deviceFile{f: f, rd: nowait.New(0, nil)}
	install := func(gen uint32) {
		e.Grant(gen, shm.Now()+int64(time.Minute))
		lr.mu.Lock()
		lr.grants[k] = &chunkGrant{entry: i, e: e, entryOff: off, gen: gen, epoch: 3, dev: dev, base: 4096, size: 8192}
		lr.mu.Unlock()
	}
	install(7)
	got := make([]byte, 4096)
	if !lr.read(k, 3, got, 1024) || !bytes.Equal(got, data[1024:][:4096]) {
		t.Fatal("a read under a grant in effect was not served, or wrong")
	}
	if lr.read(k, 4, got, 0) {
		t.Fatal("served under a grant of another epoch")
	}
	if lr.read(k, 3, got, 8192-100) {
		t.Fatal("served beyond the extent")
	}
	e.Begin()
	if lr.read(k, 3, got, 0) {
		t.Fatal("served while the chunk is being written")
	}
	e.End()
	if !lr.read(k, 3, got, 0) {
		t.Fatal("not served after the write ended")
	}
	e.Revoke()
	if lr.read(k, 3, got, 0) || lr.grants[k].gen != 0 {
		t.Fatal("a revoked grant served a read, or was kept")
	}
	install(8)
	e.Extend(shm.Now() - 1)
	if lr.read(k, 3, got, 0) || lr.grants[k].gen != 0 {
		t.Fatal("an expired grant served a read, or was kept")
	}
	install(9)
	e.Grant(10, shm.Now()+int64(time.Minute)) // the entry now holds another grant
	if lr.read(k, 3, got, 0) {
		t.Fatal("served under a generation the entry no longer holds")
	}
	if n := lr.reads.Load(); n != 2 {
		t.Fatalf("%d local reads counted, want 2", n)
	}
}

// Reads done under grants are counted in the ledger even when their connection breaks before
// the report is sent, and when a report gets no answer: the report goes over the SDS's next
// connection (with the token registered there first), and is sent again with the same id, so
// that the SDS can count it once.
func TestLocalReadsReportedAfterTheConnectionBreaks(t *testing.T) {
	c, _, v, want := localReadCluster(t, 6)
	ctx := context.Background()
	chunks := int64(testVolSize / testChunkSize)
	got := make([]byte, testChunkSize)

	// Each SDS refuses the first report it is sent (as a lost answer would leave it).
	refused := map[*fakeSDS]uint64{}
	var mu sync.Mutex
	for _, s := range c.sds {
		s.setInject(func(req *wire.Request) (wire.Status, bool) {
			if req.Op != wire.OpReadReport {
				return 0, false
			}
			mu.Lock()
			defer mu.Unlock()
			if _, done := refused[s]; done {
				return 0, false
			}
			rep, _ := wire.DecodeReadReport(req.Data)
			refused[s] = rep.ID
			return wire.StatusRetry, true
		})
	}
	for ch := range chunks {
		if err := v.ReadAt(ctx, got, ch*testChunkSize); err != nil || !bytes.Equal(got, want[ch*testChunkSize:][:testChunkSize]) {
			t.Fatalf("chunk %d under its grant: %v", ch, err)
		}
	}
	local := uint64(v.Status().LocalReads)
	if local != uint64(chunks) {
		t.Fatalf("%d local reads, want %d", local, chunks)
	}
	// The connections break before the reports are due (half a second).
	for _, s := range c.sds {
		s.dropConns()
	}
	waitFor(t, "the local reads reported over the new connections", 10*time.Second, func() bool { return c.reportedReads() == local })
	mu.Lock()
	defer mu.Unlock()
	for _, s := range c.sds {
		s.mu.Lock()
		ids := s.reportIDs
		s.mu.Unlock()
		first, ok := refused[s]
		if !ok || len(ids) == 0 {
			continue // this SDS granted no chunk
		}
		if first == 0 || ids[0] != first {
			t.Errorf("SDS %d: the refused report had id %d, the first counted %v: want the same, nonzero", s.id, first, ids)
		}
	}
}
