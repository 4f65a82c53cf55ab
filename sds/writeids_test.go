package sds

import (
	"testing"
	"time"

	"pflex/internal/token"
	"pflex/internal/wire"
	"pflex/sds/chunkstore"
)

// held is writeIDs.applied for writes of one span.
func held(w *writeIDs, sdc int64, tag uint64, k chunkstore.Key) bool {
	h, _ := w.applied(sdc, tag, k, span{})
	return h
}

func TestWriteIDsRecordsExpiryAndReplacement(t *testing.T) {
	now := time.Unix(1000, 0)
	w := newWriteIDs(time.Minute, 3, func() time.Time { return now })
	k, other := chunkstore.Key{VolumeID: 1, Chunk: 2}, chunkstore.Key{VolumeID: 1, Chunk: 3}
	if held(w, 5, 0, k) {
		t.Fatal("an untagged write counts as applied")
	}
	w.add(5, 0, k, span{})
	w.add(5, 10, k, span{})
	switch {
	case !held(w, 5, 10, k):
		t.Fatal("recorded write not found")
	case held(w, 6, 10, k):
		t.Fatal("the same tag from another SDC counts")
	case held(w, 5, 10, other):
		t.Fatal("a record counts for another chunk")
	case w.size() != 1:
		t.Fatalf("size %d, want 1 (untagged writes are not recorded)", w.size())
	}
	// The same tag for a write of another span of the chunk is a reused tag, not a retry.
	if h, reused := w.applied(5, 10, k, span{off: 4096, n: 512}); h || !reused {
		t.Fatalf("tag reused for another span: held %v, reused %v", h, reused)
	}
	w.replaced(k)
	if held(w, 5, 10, k) {
		t.Fatal("a record survives the replacement of its copy")
	}
	w.add(5, 11, k, span{}) // applied to the new copy
	if !held(w, 5, 11, k) {
		t.Fatal("a write applied after the replacement does not count")
	}
	now = now.Add(2 * time.Minute)
	w.add(5, 12, other, span{})
	if held(w, 5, 11, k) || w.size() != 1 || w.evicted.Load() != 0 {
		t.Fatalf("after retention: applied %v, size %d, evicted %d", held(w, 5, 11, k), w.size(), w.evicted.Load())
	}
	for tag := uint64(20); tag < 25; tag++ {
		w.add(5, tag, other, span{})
	}
	if w.size() != 3 || w.evicted.Load() != 3 || held(w, 5, 21, other) || !held(w, 5, 24, other) {
		t.Fatalf("over the cap: size %d, evicted %d", w.size(), w.evicted.Load())
	}
}

// A write the primary applied but could not replicate, re-sent with its tag after newer writes
// to the same blocks were acknowledged, is acknowledged without being applied again.
// Each copy counts a write in the ledger once, whatever the number of attempts: a replay (the
// record added again) is not counted again, a write of another span, an untagged write or one
// to a replaced copy is.
func TestWriteIDsCountAWriteOnce(t *testing.T) {
	now := time.Unix(0, 0)
	w := newWriteIDs(time.Minute, 100, func() time.Time { return now })
	k := chunkstore.Key{VolumeID: 1, Chunk: 2}
	s := span{0, 4096}
	if !w.firstCount(5, 7, k, s) {
		t.Fatal("a write this copy has no record of was not counted")
	}
	w.add(5, 7, k, s)
	if !w.firstCount(5, 7, k, s) {
		t.Fatal("the first count of an applied write (its attempt refused before) was not taken")
	}
	if w.firstCount(5, 7, k, s) {
		t.Fatal("a write was counted twice")
	}
	w.add(5, 7, k, s) // the replay's forward, on a secondary
	if w.firstCount(5, 7, k, s) {
		t.Fatal("a replay was counted again")
	}
	if !w.firstCount(5, 7, k, span{4096, 4096}) || !w.firstCount(5, 0, k, s) || !w.firstCount(6, 7, k, s) {
		t.Fatal("another span, an untagged write or another SDC's tag counts")
	}
	w.replaced(k)
	if !w.firstCount(5, 7, k, s) {
		t.Fatal("after the copy was replaced, the write counts for the new copy")
	}
	w.add(5, 7, k, s)
	if !w.firstCount(5, 7, k, s) || w.firstCount(5, 7, k, s) {
		t.Fatal("a write applied to the new copy counts once")
	}
}

func TestRetriedWriteIsNotAppliedTwice(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	p, s := l.Replicas(0)[0], l.Replicas(0)[1]
	primary := c.dial(t, p, &tok)
	write := func(tag uint64, epoch, off int64, data string) wire.Status {
		_, st := do(primary, wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: off, Epoch: epoch, Tag: tag, Data: []byte(data)})
		return st
	}
	read := func(epoch, off int64) string {
		resp, st := do(primary, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: off, Length: 4, Epoch: epoch})
		if st != wire.StatusOK {
			t.Fatalf("read at %d: %v", off, st)
		}
		return string(resp.Data)
	}

	// Replay to a live secondary: the retry after a newer write changes nothing, and both
	// copies stay identical.
	if st := write(1, 1, 0, "aaaa"); st != wire.StatusOK {
		t.Fatalf("write: %v", st)
	}
	if st := write(2, 1, 0, "bbbb"); st != wire.StatusOK {
		t.Fatalf("newer write: %v", st)
	}
	if st := write(1, 1, 0, "aaaa"); st != wire.StatusOK {
		t.Fatalf("retry: %v", st)
	}
	if got := read(1, 0); got != "bbbb" {
		t.Fatalf("after the retry of an older write: %q, want the newer \"bbbb\"", got)
	}
	// Tag 2 again for a write elsewhere in the chunk is not a retry: refused, nothing written.
	if st := write(2, 1, 8, "zzzz"); st != wire.StatusProto {
		t.Fatalf("write reusing a tag for another span: %v", st)
	}
	if got := read(1, 8); got != "\x00\x00\x00\x00" {
		t.Fatalf("a write with a reused tag changed the data: %q", got)
	}
	if a, b := c.chunks(t, p, 1)[0], c.chunks(t, s, 1)[0]; a.CRC32C != b.CRC32C || a.CRC32C == "" {
		t.Fatalf("replicas differ after a replay: %+v %+v", a, b)
	}
	// A write the primary applied and the secondary missed (as when the forward failed): its
	// retry brings the secondary to the primary's bytes.
	d := c.sdss[p].data
	k := chunkstore.Key{VolumeID: 1, Chunk: 0}
	if err := d.cfg.Store.WriteAt(k, l.ChunkSize, 1, []byte("xxxx"), 0, false); err != nil {
		t.Fatal(err)
	}
	d.writeIDs.add(5, 9, k, span{0, 4})
	if a, b := c.chunks(t, p, 1)[0], c.chunks(t, s, 1)[0]; a.CRC32C == b.CRC32C {
		t.Fatal("the copies should differ before the retry")
	}
	if st := write(9, 1, 0, "xxxx"); st != wire.StatusOK {
		t.Fatalf("retry of the write the secondary missed: %v", st)
	}
	if a, b := c.chunks(t, p, 1)[0], c.chunks(t, s, 1)[0]; a.CRC32C != b.CRC32C {
		t.Fatalf("replicas differ after the replay: %+v %+v", a, b)
	}

	// The secondary dies: the write is applied on the primary and refused; the MDM excludes the
	// secondary, another write is acknowledged, then the refused one is re-sent.
	c.sdss[s].Close()
	if st := write(3, 1, 0, "cccc"); st != wire.StatusRetry {
		t.Fatalf("write with the secondary down: %v, want %v", st, wire.StatusRetry)
	}
	c.mdm.exclude(s)
	l2 := c.mdm.layout(1)
	if st := write(4, l2.Epoch, 0, "dddd"); st != wire.StatusOK {
		t.Fatalf("degraded write: %v", st)
	}
	if st := write(3, l2.Epoch, 0, "cccc"); st != wire.StatusOK {
		t.Fatalf("retry of the refused write: %v", st)
	}
	if got := read(l2.Epoch, 0); got != "dddd" {
		t.Fatalf("after the retry: %q, want \"dddd\"", got)
	}
	if n := c.sdss[p].data.Stats().ReplayedWrites; n != 3 {
		t.Fatalf("replayed writes %d, want 3", n)
	}
	// A new tag is a new write.
	if st := write(5, l2.Epoch, 0, "eeee"); st != wire.StatusOK || read(l2.Epoch, 0) != "eeee" {
		t.Fatalf("new write: %v", st)
	}
}
