package sdc

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/wire"
	"pflex/sdc/nbd"
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/251)
	}
	return b
}

func TestIOSplitAcrossChunksLandsOnPrimaries(t *testing.T) {
	c := newFakeCluster(t, 3)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()

	// 5 chunks and a half, starting mid-chunk: 7 spans.
	off := int64(testChunkSize/2 + 100)
	data := pattern(5*testChunkSize+testChunkSize/2, 3)
	if err := v.WriteAt(ctx, data, off, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := v.ReadAt(ctx, got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("read back differs from what was written")
	}

	l := c.trueLayout(1)
	spans, _ := l.Split(off, int64(len(data)))
	if len(spans) != 7 {
		t.Fatalf("want 7 spans, got %d", len(spans))
	}
	primaries := map[int64]bool{}
	for _, sp := range spans {
		primary := l.Replicas(sp.Chunk)[0]
		primaries[primary] = true
		// The data of the chunk is on its primary, and on no other SDS.
		in := sp.Offset - sp.Chunk*testChunkSize
		want := data[sp.Offset-off : sp.Offset-off+sp.Length]
		for id, s := range c.sds {
			ch := s.chunk(1, sp.Chunk)
			has := len(ch) > 0 && bytes.Equal(ch[in:in+sp.Length], want)
			if has != (id == primary) {
				t.Fatalf("chunk %d: SDS %d has data %v, primary is %d", sp.Chunk, id, has, primary)
			}
		}
	}
	if len(primaries) < 2 {
		t.Fatalf("placement put every chunk on one SDS (%v): test proves little", primaries)
	}
	// Every write carried FUA, its chunk's epoch, and stayed in one chunk.
	n := 0
	for _, s := range c.sds {
		for _, o := range s.opsOf(wire.OpWrite) {
			n++
			if o.flags&wire.FlagFUA == 0 || o.status != wire.StatusOK {
				t.Fatalf("write %+v", o)
			}
			if o.offset/testChunkSize != (o.offset+o.length-1)/testChunkSize {
				t.Fatalf("write crosses a chunk boundary: %+v", o)
			}
		}
	}
	if n != 7 {
		t.Fatalf("want 7 writes to SDSs, got %d", n)
	}
	// One token for all of it; one connection per SDS, authenticated once.
	if got := c.issueCount(1); got != 1 {
		t.Fatalf("tokens issued: %d, want 1", got)
	}
	for id, s := range c.sds {
		if s.accepts.Load() > 1 || s.auths.Load() > 1 {
			t.Fatalf("SDS %d: %d connections, %d auths", id, s.accepts.Load(), s.auths.Load())
		}
	}

	// Flush reaches every SDS of the layout.
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for id, s := range c.sds {
		if len(s.opsOf(wire.OpFlush)) != 1 {
			t.Fatalf("SDS %d: %d flushes", id, len(s.opsOf(wire.OpFlush)))
		}
	}

	// Trim and write-zeroes go per chunk too, and read back as zeroes.
	if err := v.WriteZeroes(ctx, off, testChunkSize, false, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Trim(ctx, off+testChunkSize, testChunkSize); err != nil {
		t.Fatal(err)
	}
	if err := v.ReadAt(ctx, got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:2*testChunkSize], make([]byte, 2*testChunkSize)) || !bytes.Equal(got[2*testChunkSize:], data[2*testChunkSize:]) {
		t.Fatal("zeroed/trimmed range wrong")
	}
	st := v.Status()
	if st.Writes != 1 || st.Reads != 2 || st.WriteBytes != int64(len(data)) || st.LayoutEpoch != 1 || st.TokenIssues != 1 {
		t.Fatalf("status %+v", st)
	}
}

func TestStaleEpochRefreshesLayout(t *testing.T) {
	c := newFakeCluster(t, 3)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()
	if err := v.WriteAt(ctx, []byte("before"), 0, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first layout", time.Second, func() bool { return v.Status().LayoutEpoch == 1 })
	fetches := c.layoutCount(1)

	// A rebuild moves chunk 0 to other SDSs at epoch 2: the old primary refuses the old epoch.
	tl := c.trueLayout(1)
	old := tl.Replicas(0)
	var others []int64
	for id := range c.sds {
		if id != old[0] {
			others = append(others, id)
		}
	}
	c.moveChunk(1, 0, others)
	if err := v.WriteAt(ctx, []byte("after"), 0, false); err != nil {
		t.Fatal(err)
	}
	if got := c.sds[others[0]].chunk(1, 0); string(got[:5]) != "after" {
		t.Fatalf("new primary has %q", got[:5])
	}
	stale := c.sds[old[0]].opsOf(wire.OpWrite)
	if len(stale) != 2 || stale[1].status != wire.StatusStaleEpoch {
		t.Fatalf("old primary saw %+v", stale)
	}
	if c.layoutCount(1) != fetches+1 {
		t.Fatalf("layout fetched %d times for one stale epoch", c.layoutCount(1)-fetches)
	}
	st := v.Status()
	if st.LayoutEpoch != 2 || st.StaleEpochs != 1 {
		t.Fatalf("status %+v", st)
	}
	// The cache has the new epoch.
	cached, err := e.cfg.Cache.LoadAll()
	if err != nil || cached[1].Epoch != 2 {
		t.Fatalf("cache: %+v %v", cached[1], err)
	}
}

func TestNotPrimaryRefreshesLayout(t *testing.T) {
	c := newFakeCluster(t, 3)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	waitFor(t, "first layout", time.Second, func() bool { return v.Status().LayoutEpoch == 1 })
	// Swap primary and secondary of chunk 3 without the SDC knowing: the one it asks says
	// NotPrimary (its epoch is not older: the chunk epoch moved, the SDC's is stale... the SDS
	// checks the primary after the epoch, so make the chunk epoch unchanged).
	l := c.trueLayout(1)
	reps := l.Replicas(3)
	c.mu.Lock()
	nl := *c.layouts[1]
	nl.Overrides = map[int64][]int64{3: {reps[1], reps[0]}}
	c.layouts[1] = &nl
	c.mu.Unlock()
	if err := v.WriteAt(context.Background(), []byte("x"), 3*testChunkSize, false); err != nil {
		t.Fatal(err)
	}
	if ops := c.sds[reps[0]].opsOf(wire.OpWrite); len(ops) != 1 || ops[0].status != wire.StatusNotPrimary {
		t.Fatalf("old primary saw %+v", ops)
	}
	if got := c.sds[reps[1]].chunk(1, 3); got[0] != 'x' {
		t.Fatal("write did not reach the new primary")
	}
}

func TestRetryStatusThenSuccess(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	var left atomic.Int32
	left.Store(3)
	var mu sync.Mutex
	var tags []uint64 // of every WRITE attempt
	for _, s := range c.sds {
		s.setInject(func(req *wire.Request) (wire.Status, bool) {
			if req.Op != wire.OpWrite {
				return 0, false
			}
			mu.Lock()
			tags = append(tags, req.Tag)
			mu.Unlock()
			if left.Add(-1) >= 0 {
				return wire.StatusRetry, true
			}
			return 0, false
		})
	}
	if err := v.WriteAt(context.Background(), []byte("hello"), 10, false); err != nil {
		t.Fatal(err)
	}
	if st := v.Status(); st.Retries != 3 || st.Errors != 0 {
		t.Fatalf("status %+v", st)
	}
	// Every attempt is the same write to the SDS (sds/DESIGN.md, "Retried writes").
	if err := v.WriteAt(context.Background(), []byte("again"), 10, false); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(tags) != 5 || tags[0] == 0 || tags[1] != tags[0] || tags[2] != tags[0] || tags[3] != tags[0] || tags[4] == tags[0] {
		t.Fatalf("tags of the attempts %v: want 4 equal non-zero, then a new one", tags)
	}
	mu.Unlock()
	got := make([]byte, 5)
	if err := v.ReadAt(context.Background(), got, 10); err != nil || string(got) != "again" {
		t.Fatalf("read %q %v", got, err)
	}
}

func TestTimeoutGivesEIO(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 300*time.Millisecond)
	v := exportedVolume(t, e, "vol1")
	for _, s := range c.sds {
		s.setInject(func(req *wire.Request) (wire.Status, bool) {
			return wire.StatusRetry, req.Op != wire.OpAuth
		})
	}
	start := time.Now()
	err := v.WriteAt(context.Background(), []byte("hello"), 0, false)
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, nbd.ErrIO) {
		t.Fatalf("want a timeout (EIO), got %v", err)
	}
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("gave up after %s with io_timeout 300ms", took)
	}
	if st := v.Status(); st.Timeouts != 1 || st.Retries < 3 {
		t.Fatalf("status %+v", st)
	}
	// Final errors are not retried: a range error answers at once.
	for _, s := range c.sds {
		s.setInject(func(req *wire.Request) (wire.Status, bool) { return wire.StatusRange, req.Op != wire.OpAuth })
	}
	retries := v.Status().Retries
	if err := v.ReadAt(context.Background(), make([]byte, 10), 0); !errors.Is(err, nbd.ErrInvalid) || errors.Is(err, ErrTimeout) {
		t.Fatalf("range: %v", err)
	}
	if v.Status().Retries != retries {
		t.Fatal("a range error was retried")
	}
}

func TestSDSConnectionLossReconnects(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()
	data := pattern(4*testChunkSize, 9)
	if err := v.WriteAt(ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	for _, s := range c.sds {
		s.dropConns()
	}
	got := make([]byte, len(data))
	if err := v.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after reconnect: %v", err)
	}
	for id, s := range c.sds {
		if s.accepts.Load() != 2 || s.auths.Load() != 2 {
			t.Fatalf("SDS %d: %d connections, %d auths; want 2 and 2 (re-auth on the new connection)", id, s.accepts.Load(), s.auths.Load())
		}
	}
	if c.issueCount(1) != 1 {
		t.Fatalf("a reconnect fetched a new token: %d issues", c.issueCount(1))
	}
}

func TestTokenRenewalCadence(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.ttl = 400 * time.Millisecond // renewed every 200 ms
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()
	start := time.Now()
	ios := 0
	buf := make([]byte, 512)
	for time.Since(start) < 1100*time.Millisecond {
		if err := v.WriteAt(ctx, buf, int64(ios%16)*testChunkSize, false); err != nil {
			t.Fatal(err)
		}
		if err := v.ReadAt(ctx, buf, int64(ios%16)*testChunkSize); err != nil {
			t.Fatal(err)
		}
		ios += 2
	}
	elapsed := time.Since(start)
	issues := c.issueCount(1)
	// One at export time, then one per 200 ms: ~6 in 1.1 s. Thousands of IOs must not add any.
	want := 1 + int(elapsed/(200*time.Millisecond))
	if issues < want-2 || issues > want+1 {
		t.Fatalf("%d tokens issued in %s over %d IOs; want about %d (one per half lifetime)", issues, elapsed, ios, want)
	}
	if ios < 100 {
		t.Fatalf("only %d IOs", ios)
	}
	// Each renewal was registered on the connections (lazily, by the next IO).
	for id, s := range c.sds {
		if a := s.auths.Load(); a < int64(issues-3) || a > int64(issues) {
			t.Fatalf("SDS %d: %d auths for %d tokens", id, a, issues)
		}
	}
	if st := v.Status(); st.TokenIssues != int64(issues) || time.Until(st.TokenExpiresAt) <= 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestRevokedTokenIsReplaced(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()
	if err := v.WriteAt(ctx, []byte("one"), 0, false); err != nil {
		t.Fatal(err)
	}
	c.revoke(1) // generation 2: the SDSs refuse tokens of generation 1
	if err := v.WriteAt(ctx, []byte("two"), 0, false); err != nil {
		t.Fatal(err)
	}
	if n := c.issueCount(1); n != 2 {
		t.Fatalf("%d tokens issued, want 2", n)
	}
	tok, _ := v.tokens.Current()
	if tok.tok.Claims.MapGeneration != 2 {
		t.Fatalf("new token has generation %d", tok.tok.Claims.MapGeneration)
	}
	var revoked int
	for _, s := range c.sds {
		for _, o := range s.opsOf(wire.OpWrite) {
			if o.status == wire.StatusRevoked {
				revoked++
			}
		}
	}
	if revoked != 1 {
		t.Fatalf("%d revoked replies, want 1", revoked)
	}
	// An expired token (the SDS says so) is replaced the same way.
	for _, s := range c.sds {
		var once atomic.Bool
		s.setInject(func(req *wire.Request) (wire.Status, bool) {
			return wire.StatusExpired, req.Op == wire.OpRead && once.CompareAndSwap(false, true)
		})
	}
	if err := v.ReadAt(ctx, make([]byte, 3), 0); err != nil {
		t.Fatal(err)
	}
	if n := c.issueCount(1); n != 3 {
		t.Fatalf("%d tokens issued, want 3", n)
	}
}

func TestUnmappedVolumeExportGone(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	c.addVolume(2, "vol2", fsm.ReadWrite)
	e := newTestExporter(t, c, 5*time.Second)
	var removed []string
	e.cfg.Removed = func(name string) { removed = append(removed, name) }
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()
	if err := v.WriteAt(ctx, []byte("data"), 0, false); err != nil {
		t.Fatal(err)
	}
	if len(e.Exports().List()) != 2 {
		t.Fatalf("exports %+v", e.Exports().List())
	}

	// Unmapped (generation bumped): the next IO is refused as revoked, the MDM refuses a new
	// token (403): the IO fails with EIO and the volume is gone at the next poll.
	c.unmap(1)
	err := v.WriteAt(ctx, []byte("more"), 0, false)
	if !errors.Is(err, ErrUnmapped) || !errors.Is(err, nbd.ErrIO) {
		t.Fatalf("want ErrUnmapped, got %v", err)
	}
	if err := e.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Exports().Lookup("vol1"); ok {
		t.Fatal("vol1 still exported")
	}
	if _, ok := e.Exports().Lookup("vol2"); !ok {
		t.Fatal("vol2 not exported")
	}
	if len(removed) != 1 || removed[0] != "vol1" {
		t.Fatalf("ExportRemoved calls: %v", removed)
	}
	if _, ok := e.Volume(1); ok {
		t.Fatal("volume 1 still known")
	}
	if err := v.ReadAt(ctx, make([]byte, 4), 0); !errors.Is(err, ErrClosed) && !errors.Is(err, ErrUnmapped) {
		t.Fatalf("IO on a removed volume: %v", err)
	}

	// A new mapping appears; an extend is picked up.
	c.addVolume(3, "vol3", fsm.ReadWrite)
	c.mu.Lock()
	c.vols[2].size = 2 * testVolSize
	c.mu.Unlock()
	if err := e.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Exports().Lookup("vol3"); !ok {
		t.Fatal("vol3 not exported")
	}
	v2, _ := e.VolumeByName("vol2")
	if v2.Size() != 2*testVolSize {
		t.Fatalf("vol2 size %d after extend", v2.Size())
	}
	// IO beyond the old size works once the layout is refreshed (at once, or by the IO itself).
	if err := v2.WriteAt(ctx, []byte("far"), testVolSize+10, false); err != nil {
		t.Fatal(err)
	}
}

func TestUnmapSeenByPollingAlone(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 5*time.Second)
	e.Start()
	waitFor(t, "export", 2*time.Second, func() bool { _, ok := e.Exports().Lookup("vol1"); return ok })
	c.unmap(1)
	waitFor(t, "unexport", 2*time.Second, func() bool { _, ok := e.Exports().Lookup("vol1"); return !ok })
	// The export goes first, then the volume is closed and its cache entry deleted.
	waitFor(t, "layout of the unmapped volume deleted from the cache", 2*time.Second, func() bool {
		cached, _ := e.cfg.Cache.LoadAll()
		_, ok := cached[1]
		return !ok
	})
}

func TestReadOnlyMappingRefusesWrites(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadOnly)
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()
	if !v.ReadOnly() {
		t.Fatal("export not read-only")
	}
	for _, err := range []error{
		v.WriteAt(ctx, []byte("x"), 0, false),
		v.Trim(ctx, 0, 512),
		v.WriteZeroes(ctx, 0, 512, false, true),
	} {
		if !errors.Is(err, nbd.ErrPerm) {
			t.Fatalf("want EPERM, got %v", err)
		}
	}
	if err := v.ReadAt(ctx, make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	tok, _ := v.tokens.Current()
	if tok.tok.Claims.Mode.String() != "ro" {
		t.Fatalf("token mode %v", tok.tok.Claims.Mode)
	}
	for _, s := range c.sds {
		if len(s.opsOf(wire.OpWrite)) != 0 {
			t.Fatal("a write reached an SDS")
		}
	}
}

func TestLayoutCacheKeepsNewestEpoch(t *testing.T) {
	dir := t.TempDir()
	lc, err := OpenLayoutCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	l := c.trueLayout(1)
	l.Epoch = 5
	if err := lc.Put(l); err != nil {
		t.Fatal(err)
	}
	older := l
	older.Epoch = 4
	lc.Put(older)
	lc.Close()
	lc, err = OpenLayoutCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	m, err := lc.LoadAll()
	if err != nil || m[1].Epoch != 5 || len(m[1].Members) != 2 || m[1].Members[0].Addr == "" {
		t.Fatalf("%+v %v", m, err)
	}
}

func TestCachedLayoutServesWithoutMDM(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 2*time.Second)
	l := c.trueLayout(1)
	e.cached[1] = l
	v := exportedVolume(t, e, "vol1")
	if v.Status().LayoutEpoch != 1 {
		t.Fatal("cached layout not used at export time")
	}
	if err := v.WriteAt(context.Background(), []byte("x"), 0, false); err != nil {
		t.Fatal(err)
	}
}

func TestIOContinuesWhileMDMIsDown(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.ttl = 2 * time.Second
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()
	if err := v.WriteAt(ctx, []byte("up"), 0, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first layout", time.Second, func() bool { return v.Status().LayoutEpoch == 1 })
	c.mu.Lock()
	c.mdmDown = true
	c.mu.Unlock()
	// Past the renewal point (1 s): renewals fail, the current token keeps serving IO.
	deadline := time.Now().Add(1300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if err := v.WriteAt(ctx, []byte("down"), 0, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.mu.Lock()
	c.mdmDown = false
	c.mu.Unlock()
	waitFor(t, "renewal after the MDM is back", 3*time.Second, func() bool { return c.issueCount(1) >= 2 })
}

func TestUnmappedAndMappedAgainStartsOver(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()
	if err := v.WriteAt(ctx, []byte("a"), 0, false); err != nil {
		t.Fatal(err)
	}
	c.unmap(1)
	if err := v.WriteAt(ctx, []byte("b"), 0, false); !errors.Is(err, ErrUnmapped) {
		t.Fatalf("want ErrUnmapped, got %v", err)
	}
	c.mu.Lock()
	c.vols[1].mode = fsm.ReadWrite // mapped again before the SDC polled
	c.mu.Unlock()
	v2 := exportedVolume(t, e, "vol1")
	if v2 == v {
		t.Fatal("the volume refused a token but was kept")
	}
	if err := v2.WriteAt(ctx, []byte("c"), 0, false); err != nil {
		t.Fatal(err)
	}
}
