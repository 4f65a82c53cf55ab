package sds

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"pflex/internal/shm"
	"pflex/internal/token"
	"pflex/internal/wire"
)

// askGrant asks the SDS behind conn for a read grant on the chunk at off, on entry i of r.
func askGrant(conn *wire.Conn, r *shm.Region, i int, gen uint32, vol, off, epoch int64) (wire.ReadGrant, wire.Status) {
	_, eoff := r.GrantEntry(i)
	resp, st := do(conn, wire.Request{Op: wire.OpReadGrant, VolumeID: vol, Offset: off, Epoch: epoch,
		Data: wire.GrantRequest{Entry: wire.ShmRef{Region: r.Desc().ID, Offset: eoff, Length: shm.GrantEntrySize}, Gen: gen}.Encode()})
	if st != wire.StatusOK {
		return wire.ReadGrant{}, st
	}
	g, err := wire.DecodeReadGrant(resp.Data)
	if err != nil {
		return wire.ReadGrant{}, wire.Status(998)
	}
	return g, st
}

// The SDS grants reads of an allocated chunk it is primary for, keeps the entry current while
// the chunk is written, and revokes it when the chunk is freed, the connection closes or an IO
// state arrives; it refuses what it must not grant, and enters reported reads in the ledger.
func TestReadGrants(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	r, err := shm.Create([]shm.Class{{Size: testChunk, Count: 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const ch = 0
	epoch := l.ChunkEpoch(ch)
	reps := l.Replicas(ch)
	conn := c.dial(t, reps[0], &tok)
	if st := attach(conn, r); st != wire.StatusOK {
		t.Fatalf("attach: %v", st)
	}
	e, _ := r.GrantEntry(0)

	if _, st := askGrant(conn, r, 0, 1, 1, 0, epoch); st != wire.StatusRetry {
		t.Fatalf("grant on a chunk never written: %v, want Retry (read it over the connection)", st)
	}
	data := fill(testChunk, 3)
	if _, st := do(conn, wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: 0, Epoch: epoch, Data: data}); st != wire.StatusOK {
		t.Fatalf("write: %v", st)
	}
	g, st := askGrant(conn, r, 0, 7, 1, 100, epoch)
	if st != wire.StatusOK {
		t.Fatalf("grant: %v", st)
	}
	if s := e.Load(); !e.Usable(s, 7, shm.Now()) || e.Usable(s, 6, shm.Now()) {
		t.Fatalf("entry state %x after the grant", s)
	}
	exp := e.Expires()
	waitFor(t, "the grant's expiry to move on with the lease", func() bool { return e.Expires() > exp })
	f, err := os.Open(fmt.Sprintf("/proc/%d/fd/%d", g.PID, g.FD))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, testChunk)
	if _, err := f.ReadAt(got, g.Offset); err != nil || !bytes.Equal(got, data) || g.Size != testChunk {
		t.Fatalf("reading the granted extent: %v, equal %v, size %d", err, bytes.Equal(got, data), g.Size)
	}

	// A write changes the state (a reader that straddled it sees that) and leaves it usable.
	s := e.Load()
	if _, st := do(conn, wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: 4096, Epoch: epoch, Data: fill(4096, 9)}); st != wire.StatusOK {
		t.Fatalf("write: %v", st)
	}
	if s2 := e.Load(); s2 == s || !e.Usable(s2, 7, shm.Now()) {
		t.Fatalf("state %x before the write, %x after", s, s2)
	}

	// Refusals: not the primary, region not attached, not an entry, a bad generation.
	sec := c.dial(t, reps[1], &tok)
	attach(sec, r)
	if _, st := askGrant(sec, r, 1, 8, 1, 0, epoch); st != wire.StatusNotPrimary {
		t.Fatalf("grant from a secondary: %v", st)
	}
	bare := c.dial(t, reps[0], &tok)
	if _, st := askGrant(bare, r, 1, 8, 1, 0, epoch); st != wire.StatusProto {
		t.Fatalf("grant without the region attached: %v", st)
	}
	bad := []wire.GrantRequest{
		{Entry: wire.ShmRef{Region: r.Desc().ID, Offset: 4096 + 3, Length: shm.GrantEntrySize}, Gen: 9},
		{Entry: wire.ShmRef{Region: r.Desc().ID, Offset: 4096 + shm.GrantEntries*shm.GrantEntrySize, Length: shm.GrantEntrySize}, Gen: 9},
	}
	for _, b := range bad {
		if _, st := do(conn, wire.Request{Op: wire.OpReadGrant, VolumeID: 1, Epoch: epoch, Data: b.Encode()}); st != wire.StatusProto {
			t.Fatalf("grant on %+v: %v", b.Entry, st)
		}
	}
	zeroGen := append(wire.ShmRef{Region: r.Desc().ID, Offset: 4096, Length: shm.GrantEntrySize}.Encode(), 0, 0, 0, 0)
	if _, st := do(conn, wire.Request{Op: wire.OpReadGrant, VolumeID: 1, Epoch: epoch, Data: zeroGen}); st != wire.StatusProto {
		t.Fatalf("grant with generation 0: %v", st)
	}
	if !e.Usable(e.Load(), 7, shm.Now()) {
		t.Fatal("a refused request changed the grant in effect")
	}

	// Reads done under the grant reach the ledger.
	if _, st := do(conn, wire.Request{Op: wire.OpReadReport, VolumeID: 1, Data: wire.ReadReport{Ops: 3, Bytes: 12288}.Encode()}); st != wire.StatusOK {
		t.Fatalf("report: %v", st)
	}
	waitFor(t, "the reported reads in the ledger", func() bool { return c.mdm.ledger()[reps[0]].ReadBytes >= 12288 })
	// Reports beyond what one can hold are refused, and nothing of them reaches the ledger (a
	// count of 1<<63 would be negative there, and the MDM would refuse the whole batch).
	for _, rep := range []wire.ReadReport{{Ops: 1 << 63, Bytes: 1}, {Ops: 1, Bytes: 1 << 63}, {Ops: maxReportOps + 1}, {Bytes: maxReportBytes + 1}} {
		if _, st := do(conn, wire.Request{Op: wire.OpReadReport, VolumeID: 1, Data: rep.Encode()}); st != wire.StatusProto {
			t.Fatalf("report %+v: %v", rep, st)
		}
	}
	if _, st := do(conn, wire.Request{Op: wire.OpReadReport, VolumeID: 1, Data: wire.ReadReport{Ops: 1, Bytes: 4096}.Encode()}); st != wire.StatusOK {
		t.Fatalf("report: %v", st)
	}
	waitFor(t, "the next report in the ledger", func() bool { return c.mdm.ledger()[reps[0]].ReadBytes >= 12288+4096 })
	if l := c.mdm.ledger()[reps[0]]; l.ReadBytes != 12288+4096 || l.ReadOps != 4 {
		t.Fatalf("ledger after refused reports: %+v", l)
	}
	// A report sent again (its answer was lost), on the same or another connection, is counted
	// once; one without an id (an SDC of before ids) is counted every time.
	before := c.sdss[reps[0]].data.Stats().LocalReads
	again := wire.ReadReport{Ops: 2, Bytes: 8192, ID: 77}
	for _, cn := range []*wire.Conn{conn, conn, bare} {
		if _, st := do(cn, wire.Request{Op: wire.OpReadReport, VolumeID: 1, Data: again.Encode()}); st != wire.StatusOK {
			t.Fatalf("report sent again: %v", st)
		}
	}
	noID := wire.ReadReport{Ops: 1, Bytes: 4096}.Encode()[:wire.ReadReportSizeNoID]
	for range 2 {
		if _, st := do(bare, wire.Request{Op: wire.OpReadReport, VolumeID: 1, Data: noID}); st != wire.StatusOK {
			t.Fatalf("report without an id: %v", st)
		}
	}
	if n := c.sdss[reps[0]].data.Stats().LocalReads - before; n != 2+2 {
		t.Fatalf("%d reads counted for a report sent three times and two without an id, want 4", n)
	}
	waitFor(t, "the reports in the ledger", func() bool { return c.mdm.ledger()[reps[0]].ReadOps >= 4+2+2 })
	if l := c.mdm.ledger()[reps[0]]; l.ReadBytes != 12288+4096+8192+2*4096 || l.ReadOps != 4+2+2 {
		t.Fatalf("ledger after a report sent three times and two without an id: %+v", l)
	}

	// Freeing the chunk (a TRIM of all of it) revokes.
	if _, st := do(conn, wire.Request{Op: wire.OpTrim, VolumeID: 1, Offset: 0, Length: testChunk, Epoch: epoch}); st != wire.StatusOK {
		t.Fatalf("trim: %v", st)
	}
	if s := e.Load(); s>>32 != 0 {
		t.Fatalf("state %x after the chunk was freed", s)
	}
	if _, st := askGrant(conn, r, 0, 10, 1, 0, epoch); st != wire.StatusRetry {
		t.Fatalf("grant on a freed chunk: %v", st)
	}

	// An IO state (an unmap here) revokes; so does closing the connection.
	do(conn, wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: 0, Epoch: epoch, Data: data})
	if _, st := askGrant(conn, r, 0, 11, 1, 0, epoch); st != wire.StatusOK {
		t.Fatalf("grant: %v", st)
	}
	c.mdm.bump()
	waitFor(t, "the grant to be revoked by the IO state", func() bool { return e.Load()>>32 == 0 })
	tok2 := c.token(1, token.ReadWrite, time.Minute)
	conn2 := c.dial(t, reps[0], &tok2)
	attach(conn2, r)
	if _, st := askGrant(conn2, r, 0, 12, 1, 0, epoch); st != wire.StatusOK {
		t.Fatalf("grant: %v", st)
	}
	conn2.Close()
	waitFor(t, "the grant to be revoked with its connection", func() bool { return e.Load()>>32 == 0 })
	if n := c.sdss[reps[0]].data.Stats().ReadGrants; n != 0 {
		t.Fatalf("%d grants held after every connection with one closed or was revoked", n)
	}
}

// A grant lasts no longer than the token it was made under.
func TestReadGrantEndsWithTheToken(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, 2*time.Second)
	r, err := shm.Create([]shm.Class{{Size: testChunk, Count: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := l.Replicas(0)[0]
	conn := c.dial(t, p, &tok)
	attach(conn, r)
	do(conn, wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: 0, Epoch: l.ChunkEpoch(0), Data: fill(4096, 1)})
	if _, st := askGrant(conn, r, 0, 5, 1, 0, l.ChunkEpoch(0)); st != wire.StatusOK {
		t.Fatalf("grant: %v", st)
	}
	e, _ := r.GrantEntry(0)
	if left := time.Duration(e.Expires() - shm.Now()); left > 2*time.Second || left <= 0 {
		t.Fatalf("grant runs %v more under a token that expires in 2s", left)
	}
}
