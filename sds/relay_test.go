package sds

import (
	"bytes"
	"testing"
	"time"

	"pflex/internal/token"
	"pflex/internal/wire"
)

// A client that reaches only a chunk's secondary has its IO relayed to the primary: the
// primary orders and replicates the write as its own, the read comes from the primary, both
// copies end equal, a relayed FLUSH reaches the SDS it names, and the ledger counts each IO once.
func TestRelayedIO(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	const ch = 2
	reps := l.Replicas(ch)
	p, s := reps[0], reps[1]
	var other int64
	for id := range c.sdss {
		if id != p && id != s {
			other = id
		}
	}
	viaS := c.dial(t, s, &tok)
	off := int64(ch*testChunk + 4096)
	data := fill(8192, 7)
	write := wire.Request{Op: wire.OpWrite, Flags: wire.FlagRelay | wire.FlagFUA, VolumeID: 1, Offset: off, Epoch: l.ChunkEpoch(ch), Tag: 42, Data: data}
	if resp, st := do(viaS, write); st != wire.StatusOK {
		t.Fatalf("relayed write: %v %s", st, resp.Data)
	}
	resp, st := do(viaS, wire.Request{Op: wire.OpRead, Flags: wire.FlagRelay, VolumeID: 1, Offset: off, Length: 8192, Epoch: l.ChunkEpoch(ch)})
	if st != wire.StatusOK || !bytes.Equal(resp.Data, data) {
		t.Fatalf("relayed read: %v, equal %v", st, bytes.Equal(resp.Data, data))
	}
	direct := c.dial(t, p, &tok)
	if resp, st := do(direct, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: off, Length: 8192, Epoch: 1}); st != wire.StatusOK || !bytes.Equal(resp.Data, data) {
		t.Fatalf("read at the primary: %v", st)
	}
	if a, b := c.chunks(t, p, 1)[ch], c.chunks(t, s, 1)[ch]; a.CRC32C == "" || a.CRC32C != b.CRC32C {
		t.Fatalf("copies differ after a relayed write: primary %+v secondary %+v", a, b)
	}
	if _, st := do(viaS, wire.Request{Op: wire.OpWriteZeroes, Flags: wire.FlagRelay, VolumeID: 1, Offset: off, Length: 4096, Epoch: 1, Tag: 43}); st != wire.StatusOK {
		t.Fatalf("relayed write-zeroes: %v", st)
	}
	// Sent again with the same tag, the write is recognised by the primary as a replay.
	if _, st := do(viaS, write); st != wire.StatusOK {
		t.Fatalf("relayed write again: %v", st)
	}
	if resp, _ := do(direct, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: off, Length: 4096, Epoch: 1}); !bytes.Equal(resp.Data, make([]byte, 4096)) {
		t.Fatal("a replayed relayed write was applied again after a newer one")
	}
	flushes := c.sdss[p].data.Stats().Flushes
	if resp, st := do(viaS, wire.Request{Op: wire.OpFlush, Flags: wire.FlagRelay, VolumeID: 1, Offset: p}); st != wire.StatusOK {
		t.Fatalf("relayed flush: %v %s", st, resp.Data)
	}
	if got := c.sdss[p].data.Stats().Flushes; got != flushes+1 {
		t.Fatalf("the primary flushed %d times for one relayed flush", got-flushes)
	}
	if st := c.sdss[s].data.Stats(); st.Relayed != 5 || st.RelayFailed != 0 {
		t.Fatalf("relay counters of the secondary: %d relayed, %d failed", st.Relayed, st.RelayFailed)
	}

	// An SDS of the layout without a copy of the chunk relays too (the SDC's choice when it
	// cannot reach the secondary either).
	viaOther := c.dial(t, other, &tok)
	if resp, st := do(viaOther, wire.Request{Op: wire.OpRead, Flags: wire.FlagRelay, VolumeID: 1, Offset: off, Length: 512, Epoch: 1}); st != wire.StatusOK || !bytes.Equal(resp.Data, make([]byte, 512)) {
		t.Fatalf("relay through an SDS without a copy: %v", st)
	}
	if st := c.sdss[other].data.Stats(); st.Relayed != 1 {
		t.Fatalf("the SDS without a copy relayed %d requests", st.Relayed)
	}

	// Refused: without a token; a flush of an SDS that is not in the layout.
	bare := c.dial(t, s, nil)
	if _, st := do(bare, wire.Request{Op: wire.OpRead, Flags: wire.FlagRelay, VolumeID: 1, Offset: off, Length: 512, Epoch: 1}); st != wire.StatusAuth {
		t.Fatalf("relay without a token: %v", st)
	}
	if _, st := do(bare, wire.Request{Op: wire.OpFlush, Flags: wire.FlagRelay, VolumeID: 1, Offset: p}); st != wire.StatusAuth {
		t.Fatalf("relayed flush without a token: %v", st)
	}
	if _, st := do(viaS, wire.Request{Op: wire.OpFlush, Flags: wire.FlagRelay, VolumeID: 1, Offset: 99}); st != wire.StatusStaleEpoch {
		t.Fatalf("relayed flush of an SDS outside the layout: %v", st)
	}
	// Sent to the primary itself, the flag changes nothing.
	if _, st := do(direct, wire.Request{Op: wire.OpRead, Flags: wire.FlagRelay, VolumeID: 1, Offset: off, Length: 512, Epoch: 1}); st != wire.StatusOK {
		t.Fatalf("relay flag at the primary: %v", st)
	}

	// The ledger: the primary counts the client's IO, the secondary the replica writes, the
	// relaying SDSs nothing more. Writes: 8 KiB and 4 KiB of zeroes (no bytes), each once on
	// each copy, the replay not again; reads: the relayed 8 KiB, the direct 8 KiB, 4 KiB and
	// twice 512 bytes.
	waitFor(t, "token ACKs", func() bool {
		g := c.mdm.ledger()
		return g[p].WriteOps == 2 && g[p].WriteBytes == 8192 && g[p].ReadOps == 5 && g[p].ReadBytes == 8192+8192+4096+512+512 &&
			g[s].WriteOps == 2 && g[s].WriteBytes == 8192 && g[s].ReadOps == 0
	})

	// A primary the relay cannot reach either: Retry, counted as a failed relay.
	c.sdss[p].Close()
	if _, st := do(viaS, wire.Request{Op: wire.OpRead, Flags: wire.FlagRelay, VolumeID: 1, Offset: off, Length: 512, Epoch: 1}); st != wire.StatusRetry {
		t.Fatalf("relay to a closed primary: %v", st)
	}
	if st := c.sdss[s].data.Stats(); st.RelayFailed != 1 {
		t.Fatalf("relay_failed %d, want 1", st.RelayFailed)
	}
}

// A chunk with one copy in service (its other SDS taken out of the layout) is relayed by an SDS
// that holds no copy; the SDS taken out relays nothing.
func TestRelayedIOOfADegradedChunk(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	const ch = 3
	p, s := l.Replicas(ch)[0], l.Replicas(ch)[1]
	var other int64
	for id := range c.sdss {
		if id != p && id != s {
			other = id
		}
	}
	c.mdm.exclude(s)
	l2 := c.mdm.layout(1)
	if reps := l2.Replicas(ch); len(reps) != 1 || reps[0] != p {
		t.Fatalf("chunk %d after the exclusion: replicas %v, want [%d]", ch, reps, p)
	}
	via := c.dial(t, other, &tok)
	off := int64(ch * testChunk)
	data := fill(4096, 9)
	if resp, st := do(via, wire.Request{Op: wire.OpWrite, Flags: wire.FlagRelay | wire.FlagFUA, VolumeID: 1, Offset: off, Epoch: l2.ChunkEpoch(ch), Tag: 7, Data: data}); st != wire.StatusOK {
		t.Fatalf("relayed write of a degraded chunk: %v %s", st, resp.Data)
	}
	resp, st := do(via, wire.Request{Op: wire.OpRead, Flags: wire.FlagRelay, VolumeID: 1, Offset: off, Length: 4096, Epoch: l2.ChunkEpoch(ch)})
	if st != wire.StatusOK || !bytes.Equal(resp.Data, data) {
		t.Fatalf("relayed read of a degraded chunk: %v, equal %v", st, bytes.Equal(resp.Data, data))
	}
	if got := c.sdss[p].Store().Chunks(1); len(got) == 0 {
		t.Fatal("the primary holds no chunk after the relayed write")
	}
	out := c.dial(t, s, &tok)
	if resp, st := do(out, wire.Request{Op: wire.OpRead, Flags: wire.FlagRelay, VolumeID: 1, Offset: off, Length: 4096, Epoch: l2.ChunkEpoch(ch)}); st != wire.StatusNotPrimary || !bytes.Contains(resp.Data, []byte("relays only")) {
		t.Fatalf("relay through the excluded SDS: %v %s, want NotPrimary", st, resp.Data)
	}
}
