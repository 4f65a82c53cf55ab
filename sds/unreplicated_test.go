package sds

import (
	"testing"
	"time"

	"pflex/internal/token"
	"pflex/internal/wire"
	"pflex/sds/chunkstore"
)

// A write the primary applied but its secondary did not take is not read from the primary
// until the secondary has it, or the layout leaves the primary the only copy.
func TestUnreplicatedWriteIsNotReadUntilReplicated(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	p, s := l.Replicas(0)[0], l.Replicas(0)[1]
	primary := c.dial(t, p, &tok)
	read := func(epoch int64) (string, wire.Status) {
		resp, st := do(primary, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: 0, Length: 4, Epoch: epoch})
		return string(resp.Data), st
	}
	if _, st := do(primary, wire.Request{Op: wire.OpWrite, VolumeID: 1, Epoch: 1, Tag: 1, Data: []byte("aaaa")}); st != wire.StatusOK {
		t.Fatalf("write: %v", st)
	}

	// The secondary is alive but missed a write (as after a forward that timed out): the first
	// read is refused, and the primary sends the bytes by itself.
	d := c.sdss[p].data
	k := chunkstore.Key{VolumeID: 1, Chunk: 0}
	if err := d.cfg.Store.WriteAt(k, l.ChunkSize, 1, []byte("bbbb"), 0, false); err != nil {
		t.Fatal(err)
	}
	d.unrepl.add(k, 0, 4, tok)
	if _, st := read(1); st != wire.StatusRetry {
		t.Fatalf("read of an unreplicated write: %v, want %v", st, wire.StatusRetry)
	}
	waitFor(t, "the unreplicated write to reach the secondary", func() bool { got, st := read(1); return st == wire.StatusOK && got == "bbbb" })
	if a, b := c.chunks(t, p, 1)[0], c.chunks(t, s, 1)[0]; a.CRC32C != b.CRC32C {
		t.Fatalf("replicas differ: %+v %+v", a, b)
	}
	// The re-sync is no client IO: each copy's ledger holds the one 4-byte write (a batch more
	// is waited for, in which a counted re-sync would have come).
	waitFor(t, "token ACKs", func() bool { g := c.mdm.ledger(); return g[p].WriteOps == 1 && g[s].WriteOps >= 1 })
	time.Sleep(1500 * time.Millisecond)
	if g := c.mdm.ledger(); g[p].WriteOps != 1 || g[p].WriteBytes != 4 || g[s].WriteOps != 1 || g[s].WriteBytes != 4 {
		t.Fatalf("ledger after a re-sync: primary %+v, secondary %+v", g[p], g[s])
	}

	// The secondary dies: the write is applied here, refused, and not read until the MDM
	// commits the layout without the secondary.
	c.sdss[s].Close()
	if _, st := do(primary, wire.Request{Op: wire.OpWrite, VolumeID: 1, Epoch: 1, Tag: 2, Data: []byte("cccc")}); st != wire.StatusRetry {
		t.Fatalf("write with the secondary down: %v", st)
	}
	if _, st := read(1); st != wire.StatusRetry {
		t.Fatalf("read with the secondary down: %v, want %v", st, wire.StatusRetry)
	}
	c.mdm.exclude(s)
	l2 := c.mdm.layout(1)
	waitFor(t, "the degraded layout", func() bool { got, st := read(l2.Epoch); return st == wire.StatusOK && got == "cccc" })
	if d.unrepl.count.Load() != 0 {
		t.Fatalf("%d chunks still unreplicated", d.unrepl.count.Load())
	}
}
