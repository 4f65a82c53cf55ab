package sds

import (
	"bytes"
	"testing"
	"time"

	"pflex/internal/token"
	"pflex/internal/wire"
)

// Once the MDM commits a layout without the dead secondary, the primary acknowledges writes
// with its copy alone, and the former secondary's chunks are served by their other copy.
func TestDegradedWritesAfterTheSecondaryIsExcluded(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	p, s := l.Replicas(0)[0], l.Replicas(0)[1]
	primary := c.dial(t, p, &tok)
	req := wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: 0, Epoch: 1, Data: []byte("both")}
	if _, st := do(primary, req); st != wire.StatusOK {
		t.Fatalf("write: %v", st)
	}
	c.sdss[s].Close()
	req.Data = []byte("one!")
	if _, st := do(primary, req); st != wire.StatusRetry {
		t.Fatalf("write with the secondary down: %v, want %v", st, wire.StatusRetry)
	}
	c.mdm.exclude(s)
	l2 := c.mdm.layout(1)
	if r := l2.Replicas(0); len(r) != 1 || r[0] != p {
		t.Fatalf("replicas of chunk 0 after excluding %d: %v", s, r)
	}
	// The SDC with the old layout is told to refresh; with the new one the write is taken.
	if _, st := do(primary, req); st != wire.StatusOK && st != wire.StatusStaleEpoch && st != wire.StatusRetry {
		t.Fatalf("old-epoch write after the exclusion: %v", st)
	}
	req.Epoch = l2.Epoch
	if _, st := do(primary, req); st != wire.StatusOK {
		t.Fatalf("degraded write: %v", st)
	}
	resp, st := do(primary, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: 0, Length: 4, Epoch: l2.Epoch})
	if st != wire.StatusOK || string(resp.Data) != "one!" {
		t.Fatalf("read after degraded write: %v %q", st, resp.Data)
	}
	// A chunk the excluded SDS was primary of: its former secondary is primary now.
	for ch := range l.Chunks() {
		if old := l.Replicas(ch); old[0] == s && old[1] != p {
			other := old[1]
			conn := c.dial(t, other, &tok)
			w := wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: ch * l.ChunkSize, Epoch: l2.Epoch, Data: []byte("moved")}
			if _, st := do(conn, w); st != wire.StatusOK {
				t.Fatalf("write to chunk %d on its former secondary %d: %v", ch, other, st)
			}
			break
		}
	}
	if n := c.sdss[p].data.Stats().DegradedWrites; n == 0 {
		t.Fatal("no degraded write counted")
	}
}

// Without a valid lease an SDS serves nothing, and serves again once heartbeats grant one.
func TestNoIOWithoutALease(t *testing.T) {
	c := startCluster(t, 2)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	p := l.Replicas(0)[0]
	conn := c.dial(t, p, &tok)
	read := wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: 0, Length: 8, Epoch: 1}
	if _, st := do(conn, read); st != wire.StatusOK {
		t.Fatalf("read with a lease: %v", st)
	}
	c.mdm.mu.Lock()
	c.mdm.leaseMs = 200
	c.mdm.noLease[c.sdss[p].cfg.ID] = true
	c.mdm.mu.Unlock()
	// The last lease granted was 5 s long: wait it out.
	deadline := time.Now().Add(7 * time.Second)
	for c.sdss[p].agent.LeaseValid() {
		if time.Now().After(deadline) {
			t.Fatal("lease never expired")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, st := do(conn, read); st != wire.StatusRetry {
		t.Fatalf("read without a lease: %v, want Retry", st)
	}
	if _, st := do(conn, wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: 0, Epoch: 1, Data: []byte("x")}); st != wire.StatusRetry {
		t.Fatalf("write without a lease: %v, want Retry", st)
	}
	c.mdm.mu.Lock()
	delete(c.mdm.noLease, c.sdss[p].cfg.ID)
	c.mdm.mu.Unlock()
	waitFor(t, "a new lease", c.sdss[p].agent.LeaseValid)
	if _, st := do(conn, read); st != wire.StatusOK {
		t.Fatalf("read with a lease again: %v", st)
	}
	if n := c.sdss[p].data.Stats().NoLease; n < 2 {
		t.Fatalf("no_lease counter %d", n)
	}
}

// An SDS taken out of the layout learns the new epoch with its next heartbeat, refuses the
// chunks it no longer holds and drops their copies.
func TestExcludedSDSDropsSupersededCopiesAndServesNothingStale(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	chunks := min(24, l.Chunks())
	for ch := int64(0); ch < chunks; ch++ {
		conn := c.dial(t, l.Replicas(ch)[0], &tok)
		if _, st := do(conn, wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: ch * l.ChunkSize, Epoch: 1, Data: fill(4096, byte(ch))}); st != wire.StatusOK {
			t.Fatalf("write chunk %d: %v", ch, st)
		}
	}
	x := l.Replicas(0)[0]
	had := len(c.sdss[x].Store().Chunks(1))
	if had == 0 {
		t.Fatal("the SDS holds nothing")
	}
	c.mdm.exclude(x)
	waitFor(t, "superseded copies dropped", func() bool { return len(c.sdss[x].Store().Chunks(1)) == 0 })
	if n := c.sdss[x].data.Stats().DroppedCopies; n != int64(had) {
		t.Fatalf("dropped %d copies, held %d", n, had)
	}
	conn := c.dial(t, x, &tok)
	if _, st := do(conn, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: 0, Length: 4096, Epoch: 1}); st != wire.StatusStaleEpoch {
		t.Fatalf("old-epoch read from the excluded SDS: %v, want StaleEpoch", st)
	}
	l2 := c.mdm.layout(1)
	if _, st := do(conn, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: 0, Length: 4096, Epoch: l2.Epoch}); st != wire.StatusNotPrimary {
		t.Fatalf("new-epoch read from the excluded SDS: %v, want NotPrimary", st)
	}
	// The survivors still hold and serve every chunk.
	for ch := int64(0); ch < chunks; ch++ {
		r := l2.Replicas(ch)
		conn := c.dial(t, r[0], &tok)
		resp, st := do(conn, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: ch * l.ChunkSize, Length: 4096, Epoch: l2.Epoch})
		if st != wire.StatusOK || !bytes.Equal(resp.Data, fill(4096, byte(ch))) {
			t.Fatalf("chunk %d from %v: %v", ch, r, st)
		}
	}
}
