package sdc

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/shm"
)

// Reads of chunks once read over the connection go to the SDS's device under a grant; a write
// to a chunk (which revokes its grant) sends its next read over the connection again, with the
// new data; the reads done locally are reported to the SDS that granted them.
func TestLocalReadsUnderGrants(t *testing.T) {
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

	want := pattern(testVolSize, 4)
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
	waitFor(t, "the local reads reported", 5*time.Second, func() bool {
		var ops uint64
		for _, s := range c.sds {
			s.mu.Lock()
			ops += s.reported.Ops
			s.mu.Unlock()
		}
		return ops == local
	})
}
