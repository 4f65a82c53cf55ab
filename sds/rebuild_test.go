package sds

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pflex/internal/layout"
	"pflex/internal/token"
	"pflex/internal/wire"
)

// order commits (as the MDM would) rebuild batch [done, ordered) of the rebuild begun at
// epoch begin (0: begin one now); it returns the rebuild's epoch.
func (f *fakeMDM) order(begin, done, ordered int64) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch++
	f.ioVersion++
	if begin == 0 {
		f.rebuilds = append(f.rebuilds, layout.Rebuild{Epoch: f.epoch, Done: done, Ordered: ordered})
		return f.epoch
	}
	for i := range f.rebuilds {
		if f.rebuilds[i].Epoch == begin {
			f.rebuilds[i].Done, f.rebuilds[i].Ordered = done, ordered
		}
	}
	return begin
}

// doneReports lists the SDSs that reported batch (epoch, ordered) done.
func (f *fakeMDM) doneReports(epoch, ordered int64) map[int64]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int64]bool{}
	for _, r := range f.reports {
		if r.Epoch == epoch && r.Ordered == ordered && r.Done {
			out[r.SDSID] = true
		}
	}
	return out
}

// writer writes to a chunk through its current primary, refreshing the layout on StaleEpoch or
// NotPrimary as an SDC would, and remembers what was acknowledged last.
type writer struct {
	c   *cluster
	tok token.Token
	mu  sync.Mutex
	ack map[int64][]byte // chunk -> last acknowledged data at offset 0
}

func (w *writer) write(t *testing.T, ch int64, data []byte) bool {
	var last wire.Status
	var detail string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		l := w.c.mdm.layout(1)
		p := l.Replicas(ch)[0]
		s := w.c.sdss[p]
		if s == nil {
			return false
		}
		conn, err := wire.Dial(context.Background(), s.DataAddr(), wire.ClientOptions{})
		if err != nil {
			return false
		}
		do(conn, wire.Request{Op: wire.OpAuth, VolumeID: 1, Data: w.tok.Bytes()})
		resp, st := do(conn, wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: ch * l.ChunkSize, Epoch: l.ChunkEpoch(ch), Data: data})
		conn.Close()
		if st == wire.StatusOK {
			w.mu.Lock()
			w.ack[ch] = data
			w.mu.Unlock()
			return true
		}
		last, detail = st, string(resp.Data)
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("chunk %d: write never acknowledged (last status %v: %s)", ch, last, detail)
	return false
}

// An SDS dies; its chunks go on with one copy; a rebuild copies each to a new target while
// writes keep arriving; afterwards both copies of every chunk are byte-identical, chunks the
// source never held are not on the target either, and the targets served no reads meanwhile.
func TestRebuildCopiesDegradedChunksUnderWrites(t *testing.T) {
	c := startCluster(t, 4)
	l := c.mdm.layout(1)
	w := &writer{c: c, tok: c.token(1, token.ReadWrite, time.Minute), ack: map[int64][]byte{}}
	n := l.Chunks()
	for ch := range n - 2 { // the last two chunks are never written: the absent path
		if !w.write(t, ch, fill(4096, byte(ch))) {
			t.Fatal("setup write failed")
		}
	}
	x := l.Replicas(0)[0]
	c.sdss[x].Close()
	delete(c.sdss, x)
	c.mdm.exclude(x)
	degraded := c.mdm.layout(1)
	var hit []int64
	for ch := range n {
		if degraded.Degraded(ch) {
			hit = append(hit, ch)
		}
	}
	if len(hit) == 0 {
		t.Fatal("nothing degraded")
	}

	// Writes go on during the rebuild, to degraded chunks and others.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes atomic.Int64
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ch := hit[i%len(hit)]
			if ch >= n-2 {
				continue
			}
			if w.write(t, ch, fill(4096, byte(ch+int64(i)*7))) {
				writes.Add(1)
			}
		}
	})

	// The first batch covers half the volume, the second the rest.
	rb := c.mdm.order(0, 0, n/2)
	sources := func(done, ordered int64) map[int64]bool {
		l := c.mdm.layout(1)
		out := map[int64]bool{}
		for ch := done; ch < ordered; ch++ {
			if ids, pending := l.ReplicaSet(ch); pending {
				out[ids[0]] = true
			}
		}
		return out
	}
	for _, batch := range [][2]int64{{0, n / 2}, {n / 2, n}} {
		want := sources(batch[0], batch[1])
		waitFor(t, "every source reporting the batch done", func() bool {
			got := c.mdm.doneReports(rb, batch[1])
			for id := range want {
				if !got[id] {
					return false
				}
			}
			return true
		})
		if batch[1] < n {
			c.mdm.order(rb, batch[1], n)
		}
	}
	close(stop)
	wg.Wait()
	c.mdm.order(rb, n, n)
	final := c.mdm.layout(1)
	if writes.Load() == 0 {
		t.Fatal("no write landed during the rebuild")
	}

	copies := map[int64]map[int64]ChunkReplica{}
	for id := range c.sdss {
		copies[id] = c.chunks(t, id, 1)
	}
	for ch := range n {
		ids, pending := final.ReplicaSet(ch)
		if len(ids) != 2 || pending {
			t.Fatalf("chunk %d after the rebuild: %v pending=%v", ch, ids, pending)
		}
		a, aok := copies[ids[0]][ch]
		b, bok := copies[ids[1]][ch]
		if ch >= n-2 {
			if aok || bok {
				t.Fatalf("never-written chunk %d is held: %v %v", ch, aok, bok)
			}
			continue
		}
		if !aok || !bok || a.CRC32C != b.CRC32C {
			t.Fatalf("chunk %d: copies differ: %+v / %+v", ch, a, b)
		}
	}
	// What was acknowledged last reads back from the primary.
	tok := w.tok
	for ch, data := range w.ack {
		conn := c.dial(t, final.Replicas(ch)[0], &tok)
		resp, st := do(conn, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: ch * final.ChunkSize, Length: uint32(len(data)), Epoch: final.ChunkEpoch(ch)})
		if st != wire.StatusOK || string(resp.Data) != string(data) {
			t.Fatalf("chunk %d reads back %v / wrong data", ch, st)
		}
	}
	var sent, absent int64
	for _, s := range c.sdss {
		st := s.data.Stats().Rebuild
		sent += st.ChunksSent
		absent += st.AbsentReceived
	}
	if sent < int64(len(hit)) || absent == 0 {
		t.Fatalf("rebuild counters: %d chunks sent for %d degraded, %d absent", sent, len(hit), absent)
	}
}

// A pending target refuses reads, and copies from anyone but the chunk's source.
func TestRebuildTargetRefusesReadsAndStrangers(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	x := l.Replicas(0)[0]
	c.sdss[x].Close()
	delete(c.sdss, x)
	c.mdm.exclude(x)
	// Order a batch but keep the sources from copying (no lease keeps their executors idle).
	c.mdm.mu.Lock()
	for _, s := range c.sdss {
		c.mdm.noLease[s.cfg.ID] = true
	}
	c.mdm.mu.Unlock()
	c.mdm.order(0, 0, l.Chunks())
	l2 := c.mdm.layout(1)
	ids, pending := l2.ReplicaSet(0)
	if !pending {
		t.Fatalf("chunk 0 not pending: %v", ids)
	}
	c.mdm.mu.Lock()
	for _, s := range c.sdss {
		delete(c.mdm.noLease, s.cfg.ID)
	}
	c.mdm.mu.Unlock()
	target := c.dial(t, ids[1], &tok)
	if _, st := do(target, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: 0, Length: 8, Epoch: l2.Epoch}); st != wire.StatusNotPrimary && st != wire.StatusRetry {
		t.Fatalf("read from a pending target: %v", st)
	}
	// A CHUNK_WRITE sent to the chunk's source, which is not its target.
	src := c.dialPeer(t, ids[0], &tok)
	if _, st := do(src, wire.Request{Op: wire.OpChunkWrite, VolumeID: 1, Offset: 0, Epoch: l2.Epoch, Data: []byte("x")}); st != wire.StatusNotPrimary {
		t.Fatalf("CHUNK_WRITE to the source of chunk 0: %v", st)
	}
}

// An SDS in maintenance keeps its copies; on exit only the chunks written meanwhile are copied
// back to it, and both copies are identical afterwards.
func TestMaintenanceReturnCopiesOnlyTheDelta(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	w := &writer{c: c, tok: c.token(1, token.ReadWrite, time.Minute), ack: map[int64][]byte{}}
	n := l.Chunks()
	for ch := range n {
		if !w.write(t, ch, fill(8192, byte(ch))) {
			t.Fatal("setup write failed")
		}
	}
	m := l.Replicas(0)[1]
	held := len(c.sdss[m].Store().Chunks(1))
	// Enter maintenance (an exclusion marked maintenance).
	c.mdm.mu.Lock()
	c.mdm.epoch++
	c.mdm.ioVersion++
	enter := c.mdm.epoch
	c.mdm.excluded = append(c.mdm.excluded, layout.Exclusion{SDSID: m, Epoch: enter, Maintenance: true})
	c.mdm.mu.Unlock()
	waitFor(t, "the maintenance layout on every SDS", func() bool {
		for _, s := range c.sdss {
			if cur := s.data.layouts.snapshot(1); cur == nil || cur.Epoch != enter {
				if s.data.minEpoch(1) < enter {
					return false
				}
			}
		}
		return true
	})
	time.Sleep(100 * time.Millisecond) // the maintenance SDS has reconciled: it must have kept its copies
	if got := len(c.sdss[m].Store().Chunks(1)); got != held {
		t.Fatalf("the SDS in maintenance went from %d to %d copies", held, got)
	}
	// Write a few of its chunks while it is away.
	ml := c.mdm.layout(1)
	var written []int64
	for ch := range n {
		if ml.MaintenanceCopy(ch, m) && len(written) < 2 {
			if !w.write(t, ch, fill(8192, byte(ch)^0x5a)) {
				t.Fatal("degraded write failed")
			}
			written = append(written, ch)
		}
	}
	if len(written) == 0 {
		t.Fatal("no chunk of the maintenance SDS")
	}
	// Exit: readmitted, and a returning rebuild of the whole volume.
	c.mdm.mu.Lock()
	c.mdm.excluded[len(c.mdm.excluded)-1].Readmitted = c.mdm.epoch
	c.mdm.mu.Unlock()
	rb := c.mdm.order(0, 0, n)
	c.mdm.mu.Lock()
	c.mdm.rebuilds[len(c.mdm.rebuilds)-1].Returning = m
	c.mdm.mu.Unlock()
	srcs := map[int64]bool{}
	l2 := c.mdm.layout(1)
	returning := 0
	for ch := range n {
		if ids, pending := l2.ReplicaSet(ch); pending {
			returning++
			if ids[1] != m {
				t.Fatalf("chunk %d returns to %d, not %d", ch, ids[1], m)
			}
			srcs[ids[0]] = true
		}
	}
	waitFor(t, "the sources reporting the re-sync done", func() bool {
		got := c.mdm.doneReports(rb, n)
		for id := range srcs {
			if !got[id] {
				return false
			}
		}
		return true
	})
	c.mdm.order(rb, n, n)
	final := c.mdm.layout(1)
	var sent int64
	for _, s := range c.sdss {
		sent += s.data.Stats().Rebuild.ChunksSent
	}
	// Chunks whose forward ever failed (e.g. while an SDS was still starting) are copied too:
	// the delta is conservative, never short.
	if sent < int64(len(written)) || sent >= int64(returning) {
		t.Fatalf("the re-sync copied %d chunks of %d returning; %d were written during maintenance", sent, returning, len(written))
	}
	copies := map[int64]map[int64]ChunkReplica{}
	for id := range c.sdss {
		copies[id] = c.chunks(t, id, 1)
	}
	for ch := range n {
		ids := final.Replicas(ch)
		a, b := copies[ids[0]][ch], copies[ids[1]][ch]
		if len(ids) != 2 || a.CRC32C == "" || a.CRC32C != b.CRC32C {
			t.Fatalf("chunk %d after the re-sync: %v %+v / %+v", ch, ids, a, b)
		}
	}
}

// A move (rebalance) onto an SDS that joined the layout: moving chunks take writes on all three
// copies, then the new SDS replaces the old one, which drops its copies; the copies are
// identical.
func TestMoveOntoAJoinedSDS(t *testing.T) {
	c := newCluster(t, 4, func(f *fakeMDM) { f.joined[4] = -1 })
	l := c.mdm.layout(1)
	w := &writer{c: c, tok: c.token(1, token.ReadWrite, time.Minute), ack: map[int64][]byte{}}
	n := l.Chunks()
	for ch := range n {
		if !w.write(t, ch, fill(4096, byte(ch))) {
			t.Fatal("setup write failed")
		}
	}
	from := l.Replicas(0)[0]
	c.mdm.mu.Lock()
	c.mdm.joined[4] = c.mdm.epoch + 1
	c.mdm.mu.Unlock()
	mv := c.mdm.order(0, 0, n)
	c.mdm.mu.Lock()
	c.mdm.rebuilds[len(c.mdm.rebuilds)-1].From, c.mdm.rebuilds[len(c.mdm.rebuilds)-1].To = from, 4
	c.mdm.mu.Unlock()
	moving := c.mdm.layout(1)
	srcs := map[int64]bool{}
	count := 0
	for ch := range n {
		if ids, pending := moving.ReplicaSet(ch); pending {
			if len(ids) != 3 || ids[2] != 4 {
				t.Fatalf("chunk %d moving: %v", ch, ids)
			}
			srcs[ids[0]] = true
			count++
			if !w.write(t, ch, fill(4096, byte(ch)^0x33)) { // a write during the move
				t.Fatal("write during the move failed")
			}
		}
	}
	if count == 0 {
		t.Fatal("nothing to move")
	}
	waitFor(t, "the move's sources reporting done", func() bool {
		got := c.mdm.doneReports(mv, n)
		for id := range srcs {
			if !got[id] {
				return false
			}
		}
		return true
	})
	c.mdm.order(mv, n, n)
	final := c.mdm.layout(1)
	waitFor(t, "the old SDS dropping the moved copies", func() bool {
		for _, cr := range c.chunks(t, from, 1) {
			if !slices.Contains(final.Replicas(cr.Chunk), from) {
				return false
			}
		}
		return true
	})
	copies := map[int64]map[int64]ChunkReplica{}
	for id := range c.sdss {
		copies[id] = c.chunks(t, id, 1)
	}
	for ch := range n {
		ids := final.Replicas(ch)
		if slices.Contains(ids, from) || len(ids) != 2 {
			t.Fatalf("chunk %d still on %d: %v", ch, from, ids)
		}
		a, b := copies[ids[0]][ch], copies[ids[1]][ch]
		if a.CRC32C == "" || a.CRC32C != b.CRC32C {
			t.Fatalf("chunk %d copies differ: %+v %+v", ch, a, b)
		}
	}
	for ch, data := range w.ack {
		conn := c.dial(t, final.Replicas(ch)[0], &w.tok)
		resp, st := do(conn, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: ch * final.ChunkSize, Length: uint32(len(data)), Epoch: final.ChunkEpoch(ch)})
		if st != wire.StatusOK || string(resp.Data) != string(data) {
			t.Fatalf("chunk %d reads back %v / wrong data after the move", ch, st)
		}
	}
}
