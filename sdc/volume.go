package sdc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/internal/wire"
	"pflex/sdc/nbd"
)

// maxSpan bounds one request to an SDS (the wire protocol's payload limit); a chunk bigger than
// this is sent in several requests.
const maxSpan = wire.DefaultMaxPayload

// Retry backoff between attempts of one IO.
const (
	retryFirst = 5 * time.Millisecond
	retryMax   = 250 * time.Millisecond
	// layoutPoll: an IO an SDS keeps refusing with Retry, or that cannot reach its SDS, asks the
	// MDM for a newer layout this often — when an SDS dies, the MDM commits a layout without it
	// (its chunks go on with their other copy), and this is how the IO finds out.
	layoutPoll = 250 * time.Millisecond
	// attemptPatience is how long an attempt waits for its SDS before it also watches the
	// layout (see watched).
	attemptPatience = 500 * time.Millisecond
)

// Volume is one mapped volume: the IO engine behind its NBD export and the control API. It
// cuts each request at chunk boundaries, sends the pieces in parallel to their chunks' primaries
// and retries what may succeed again (new layout, new token, reconnect) until io_timeout.
// It implements nbd.Export.
type Volume struct {
	id       int64
	name     string
	sdcID    int64  // the SDC id its tokens are issued to
	mode     string // fsm.ReadWrite or fsm.ReadOnly
	readOnly bool
	timeout  time.Duration

	mdm    MDM
	conns  *SDSConns
	cache  *LayoutCache // nil: no persistence
	tokens *tokenSource
	log    hclog.Logger

	size       atomic.Int64
	generation atomic.Int64
	lay        atomic.Pointer[layout.Layout]
	layMu      sync.Mutex // serialises layout fetches
	// polledAt is when an IO that kept failing against an SDS last asked the MDM for a newer
	// layout (unix ns): at most once per layoutPoll per volume.
	polledAt atomic.Int64

	ctx    context.Context // ends when the volume is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup

	stats volumeCounters
	qos   *qos // the mapping's IOPS and bandwidth limits
}

// volumeCounters are the per-volume IO counters of /status.
type volumeCounters struct {
	reads, writes, flushes, trims, zeroes atomic.Int64
	readBytes, writeBytes                 atomic.Int64
	errors, timeouts, retries             atomic.Int64
	layoutRefreshes, staleEpochs          atomic.Int64
	localReads                            atomic.Int64
	relayed                               atomic.Int64
}

// volumeOptions are what a Volume is built from besides its mapping.
type volumeOptions struct {
	MDM       MDM
	Conns     *SDSConns
	Cache     *LayoutCache
	Layout    *layout.Layout // cached layout, may be nil
	SDCID     int64
	IOTimeout time.Duration
	Logger    hclog.Logger
	OnLost    func() // the MDM says the volume is no longer mapped here
}

// newVolume makes the engine of a mapped volume and starts its token renewal and a first layout
// fetch. Close stops them.
func newVolume(mv api.MappedVolume, o volumeOptions) *Volume {
	mode := mv.AccessMode
	if mode == "" {
		mode = fsm.ReadWrite
	}
	v := &Volume{
		id: mv.VolumeID, name: mv.Name, sdcID: o.SDCID, mode: mode, readOnly: mode == fsm.ReadOnly,
		timeout: o.IOTimeout, mdm: o.MDM, conns: o.Conns, cache: o.Cache,
		qos: newQoS(mv.IOPSLimit, mv.BandwidthLimitMBps),
		log: o.Logger.With("volume", mv.Name, "volume_id", mv.VolumeID),
	}
	v.size.Store(mv.SizeBytes)
	v.generation.Store(mv.MapGeneration)
	if o.Layout != nil && o.Layout.VolumeID == mv.VolumeID {
		l := *o.Layout
		v.lay.Store(&l)
	}
	v.ctx, v.cancel = context.WithCancel(context.Background())
	v.tokens = newTokenSource(v.ctx, o.MDM, api.TokenRequest{VolumeID: mv.VolumeID, SDCID: o.SDCID, AccessMode: mode}, v.log, o.OnLost)
	v.wg.Add(2)
	go func() {
		defer v.wg.Done()
		v.tokens.run(v.ctx)
	}()
	go func() {
		defer v.wg.Done()
		ctx, cancel := context.WithTimeout(v.ctx, 10*time.Second)
		defer cancel()
		if _, err := v.refreshLayout(ctx, v.lay.Load()); err != nil && v.ctx.Err() == nil {
			v.log.Warn("layout fetch failed; IO will retry it", "error", err)
		}
	}()
	return v
}

// Close stops the volume's background work; IO still running fails with ErrClosed.
func (v *Volume) Close() {
	v.cancel()
	v.wg.Wait()
}

// ID is the volume id.
func (v *Volume) ID() int64 { return v.id }

// Name is the volume name (the export name).
func (v *Volume) Name() string { return v.name }

// Size implements nbd.Export.
func (v *Volume) Size() int64 { return v.size.Load() }

// ReadOnly implements nbd.Export.
func (v *Volume) ReadOnly() bool { return v.readOnly }

// setSize records a new size (extend) and fetches the layout, which carries it.
func (v *Volume) setSize(n int64) {
	if v.size.Swap(n) == n {
		return
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		ctx, cancel := context.WithTimeout(v.ctx, 10*time.Second)
		defer cancel()
		v.refreshLayout(ctx, v.lay.Load())
	}()
}

// setLimits puts the mapping's IOPS and bandwidth limits in force (the MDM's answer to the
// SDC's poll carries them; they change with POST /vol/limits).
func (v *Volume) setLimits(iops, mbps int64) {
	if v.qos.iops.Load() == max(iops, 0) && v.qos.mbps.Load() == max(mbps, 0) {
		return
	}
	v.qos.set(iops, mbps)
	v.log.Info("mapping limits changed", "iops_limit", iops, "bandwidth_limit_mbps", mbps)
}

// WriteBuffer implements nbd.WriteBuffers: a WRITE payload goes into the shared region when
// there is one with a free slot, so that SDSs on this host take it from there.
func (v *Volume) WriteBuffer(n int) []byte {
	if v.conns.shm == nil {
		return nil
	}
	return v.conns.shm.Get(n)
}

// ReleaseWriteBuffer implements nbd.WriteBuffers.
func (v *Volume) ReleaseWriteBuffer(b []byte) bool {
	return v.conns.shm != nil && v.conns.shm.Put(b)
}

// ReadBuffered implements nbd.ReadBuffers: a read of shmReadMin or more goes into a slot of the
// shared region, where SDSs on this host pread it directly, and the NBD reply is sent from
// there (no copy in between). If any attempt ended without a clean answer, the slot (which a
// late SDS may still write into) is dropped and the server reads again into its own buffer.
func (v *Volume) ReadBuffered(ctx context.Context, n int, off int64) ([]byte, error) {
	if v.conns.shm == nil || n < shmReadMin {
		return nil, nil
	}
	slot := v.conns.shm.Get(n)
	if slot == nil {
		return nil, nil
	}
	err := v.ReadAt(ctx, slot, off)
	if err != nil || v.conns.shm.Tainted(slot) {
		v.conns.shm.Put(slot)
		return nil, err
	}
	return slot, nil
}

// ReleaseReadBuffer implements nbd.ReadBuffers.
func (v *Volume) ReleaseReadBuffer(b []byte) { v.conns.shm.Put(b) }

// ReadAt implements nbd.Export.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off int64) error {
	v.stats.reads.Add(1)
	if err := v.qos.admit(ctx, int64(len(p))); err != nil {
		return err
	}
	if v.readLocal(p, off) {
		v.stats.readBytes.Add(int64(len(p)))
		return nil
	}
	err := v.spans(ctx, wire.OpRead, 0, off, int64(len(p)), p)
	if err == nil {
		v.stats.readBytes.Add(int64(len(p)))
	}
	return err
}

// WriteAt implements nbd.Export.
func (v *Volume) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if v.readOnly {
		return ErrReadOnly
	}
	v.stats.writes.Add(1)
	if err := v.qos.admit(ctx, int64(len(p))); err != nil {
		return err
	}
	err := v.spans(ctx, wire.OpWrite, fuaFlag(fua), off, int64(len(p)), p)
	if err == nil {
		v.stats.writeBytes.Add(int64(len(p)))
	}
	return err
}

// Trim implements nbd.Export.
func (v *Volume) Trim(ctx context.Context, off, length int64) error {
	if v.readOnly {
		return ErrReadOnly
	}
	v.stats.trims.Add(1)
	if err := v.qos.admit(ctx, 0); err != nil {
		return err
	}
	return v.spans(ctx, wire.OpTrim, 0, off, length, nil)
}

// WriteZeroes implements nbd.Export. mayTrim is not used: the SDS decides how to zero.
func (v *Volume) WriteZeroes(ctx context.Context, off, length int64, fua, _ bool) error {
	if v.readOnly {
		return ErrReadOnly
	}
	v.stats.zeroes.Add(1)
	if err := v.qos.admit(ctx, 0); err != nil {
		return err
	}
	return v.spans(ctx, wire.OpWriteZeroes, fuaFlag(fua), off, length, nil)
}

// Flush implements nbd.Export: every SDS of the layout makes the writes it acknowledged
// durable (and has its secondaries do the same).
func (v *Volume) Flush(ctx context.Context) error {
	v.stats.flushes.Add(1)
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	l, err := v.layout(ctx)
	if err != nil {
		return v.failed(ctx, "flush", 0, 0, err)
	}
	ids := make([]int64, 0, len(l.Members))
	for _, m := range l.Members {
		// An excluded SDS acknowledged nothing since it was taken out, and everything it had
		// before is on the copies that remain.
		if !l.IsExcluded(m.SDSID) {
			ids = append(ids, m.SDSID)
		}
	}
	err = parallel(len(ids), func(i int) error {
		return v.retry(ctx, func(ctx context.Context, l *layout.Layout, tok *issuedToken) (*sdsConn, error) {
			if _, ok := l.Member(ids[i]); !ok || l.IsExcluded(ids[i]) {
				return nil, nil // no longer in the layout: nothing of ours to flush there
			}
			req := wire.Request{Op: wire.OpFlush, VolumeID: v.id, Epoch: l.Epoch}
			addr, relay := v.flushVia(l, ids[i])
			if relay {
				req.Flags, req.Offset = wire.FlagRelay, ids[i]
				v.stats.relayed.Add(1)
			}
			return v.send(ctx, addr, tok, req)
		})
	})
	if err != nil {
		return v.failed(ctx, "flush", 0, 0, err)
	}
	return nil
}

func fuaFlag(fua bool) wire.Flags {
	if fua {
		return wire.FlagFUA
	}
	return 0
}

// spans runs op over [off, off+length): one request per chunk (at most maxSpan bytes), all in
// parallel, each retried until the IO deadline. data is the read buffer or the write payload.
func (v *Volume) spans(ctx context.Context, op wire.Opcode, flags wire.Flags, off, length int64, data []byte) error {
	if length == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	l, err := v.layout(ctx)
	if err == nil && off+length > l.SizeBytes && off+length <= v.Size() {
		l, err = v.refreshLayout(ctx, l) // extended: the layout carries the new size
	}
	if err != nil {
		return v.failed(ctx, op.String(), off, length, err)
	}
	spans, err := l.Split(off, length)
	if err != nil {
		return v.failed(ctx, op.String(), off, length, fmt.Errorf("%w: %w", nbd.ErrInvalid, err))
	}
	spans = cutSpans(spans, maxSpan)
	err = parallel(len(spans), func(i int) error {
		sp := spans[i]
		req := wire.Request{Op: op, Flags: flags, VolumeID: v.id, Offset: sp.Offset, Length: uint32(sp.Length)}
		if op != wire.OpRead {
			req.Tag = nextTag() // the same on every attempt below: see "Retries" in DESIGN.md
		}
		var buf []byte
		if data != nil {
			buf = data[sp.Offset-off : sp.Offset-off+sp.Length]
		}
		return v.retry(ctx, func(ctx context.Context, l *layout.Layout, tok *issuedToken) (*sdsConn, error) {
			reps := l.Replicas(sp.Chunk)
			if len(reps) == 0 {
				return nil, fmt.Errorf("chunk %d has no replicas: %w", sp.Chunk, wire.StatusStaleEpoch)
			}
			id, addr, relay := v.route(l, reps)
			if addr == "" {
				return nil, fmt.Errorf("chunk %d: SDS %d has no address: %w", sp.Chunk, id, wire.StatusStaleEpoch)
			}
			r := req
			r.Epoch = l.ChunkEpoch(sp.Chunk)
			switch op {
			case wire.OpRead:
				r.ReadInto = buf
			case wire.OpWrite:
				r.Data = buf
			}
			if relay {
				r.Flags |= wire.FlagRelay
				v.stats.relayed.Add(1)
			}
			sc, err := v.sendRead(ctx, addr, tok, r, buf)
			if err == nil && op == wire.OpRead && sc.local != nil && !relay {
				sc.local.ask(chunkRef{v.id, sp.Chunk}, r.Epoch, sp.Offset) // read it here next time
			}
			return sc, err
		})
	})
	if err != nil {
		return v.failed(ctx, op.String(), off, length, err)
	}
	return nil
}

// tags numbers this process's writes. Seeded from the clock so that a restarted SDC (same SDC
// id) does not reuse the tags its previous run sent, which the SDSs still remember for a while.
var tags atomic.Uint64

func init() { tags.Store(uint64(time.Now().UnixNano())) }

func nextTag() uint64 { return tags.Add(1) }

// cutSpans cuts spans longer than n.
func cutSpans(spans []layout.Span, n int64) []layout.Span {
	var out []layout.Span
	for _, sp := range spans {
		for sp.Length > n {
			out = append(out, layout.Span{Chunk: sp.Chunk, Offset: sp.Offset, Length: n})
			sp.Offset += n
			sp.Length -= n
		}
		out = append(out, sp)
	}
	return out
}

// parallel runs f(0..n-1), in goroutines when n > 1, and returns the first error.
func parallel(n int, f func(i int) error) error {
	if n == 1 {
		return f(0)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// sendRead is send, checking that a READ returned exactly the bytes asked for in buf.
func (v *Volume) sendRead(ctx context.Context, addr string, tok *issuedToken, req wire.Request, buf []byte) (*sdsConn, error) {
	sc, err := v.conn(ctx, addr, tok)
	if err != nil {
		return sc, err
	}
	var shared []byte // the payload or read slot, when the data goes through the shared region
	switch {
	case req.Flags&wire.FlagRelay != 0:
		// Relayed: the data goes inline, since the SDS that finally serves it is another.
	case req.Op == wire.OpWrite && sc.shm:
		if off, ok := v.conns.shm.Ref(req.Data); ok {
			shared = req.Data
			req.Op = wire.OpShmWrite
			req.Data = wire.ShmRef{Region: v.conns.shm.Desc().ID, Offset: off, Length: uint32(len(shared))}.Encode()
		}
	case req.Op == wire.OpRead && sc.shm && len(buf) >= shmReadMin:
		if off, ok := v.conns.shm.Ref(buf); ok {
			// buf is a slot itself (ReadBuffered): the SDS reads straight into it, unless an
			// earlier attempt tainted it (then the read goes over the socket, and
			// ReadBuffered drops the slot anyway).
			if v.conns.shm.Tainted(buf) {
				break
			}
			req.Op, req.ReadInto = wire.OpShmRead, nil
			req.Data = wire.ShmRef{Region: v.conns.shm.Desc().ID, Offset: off, Length: uint32(len(buf))}.Encode()
			_, err := sc.c.Do(ctx, req)
			if err != nil {
				v.conns.shm.Taint(buf)
			}
			return sc, err
		}
		if shared = v.conns.shm.Get(len(buf)); shared != nil {
			defer v.conns.shm.Put(shared)
			off, _ := v.conns.shm.Ref(shared)
			req.Op, req.ReadInto = wire.OpShmRead, nil
			req.Data = wire.ShmRef{Region: v.conns.shm.Desc().ID, Offset: off, Length: uint32(len(shared))}.Encode()
		}
	}
	resp, err := sc.c.Do(ctx, req)
	if err != nil && shared != nil {
		// Without an answer that every replica is done with the bytes (the SDS answers only
		// then), one of them may still read them, or an SDS still write into the read slot:
		// the slot must never be reused.
		v.conns.shm.Taint(shared)
	}
	if err == nil && req.Op == wire.OpShmRead {
		copy(buf, shared)
		return sc, nil
	}
	if err == nil && req.Op == wire.OpRead {
		if len(resp.Data) != len(buf) {
			return sc, fmt.Errorf("SDS %s returned %d bytes for a %d-byte read: %w", addr, len(resp.Data), len(buf), wire.StatusIO)
		}
		if len(buf) > 0 && &resp.Data[0] != &buf[0] {
			copy(buf, resp.Data)
		}
	}
	return sc, err
}

// send sends req to the SDS at addr after registering the token there.
func (v *Volume) send(ctx context.Context, addr string, tok *issuedToken, req wire.Request) (*sdsConn, error) {
	return v.sendRead(ctx, addr, tok, req, nil)
}

// conn is the connection to addr with tok registered for this volume.
func (v *Volume) conn(ctx context.Context, addr string, tok *issuedToken) (*sdsConn, error) {
	sc, err := v.conns.get(ctx, addr)
	if err != nil {
		return nil, err
	}
	return sc, sc.auth(ctx, v.id, tok)
}

// retry runs attempt until it succeeds, fails for good or ctx ends. Between attempts it does
// what the failure asks: a new layout (StaleEpoch, NotPrimary), a new token (Auth, Expired,
// Revoked), a backoff (Retry, connection errors).
func (v *Volume) retry(ctx context.Context, attempt func(ctx context.Context, l *layout.Layout, tok *issuedToken) (*sdsConn, error)) error {
	backoff := retryFirst
	for n := 0; ; n++ {
		if v.ctx.Err() != nil {
			return ErrClosed
		}
		if n > 0 {
			v.stats.retries.Add(1)
		}
		l, err := v.layout(ctx)
		if err != nil {
			return err
		}
		tok, err := v.tokens.Get(ctx)
		if err != nil {
			if errors.Is(err, ErrUnmapped) || ctx.Err() != nil {
				return err
			}
			// The MDM did not answer: the token fetch already retried; wait and ask again.
			if !sleep(ctx, &backoff) {
				return fmt.Errorf("%w (token: %w)", ctx.Err(), err)
			}
			continue
		}
		sc, abandoned, err := v.watched(ctx, l, tok, attempt)
		if err == nil {
			return nil
		}
		if abandoned && ctx.Err() == nil {
			v.stats.staleEpochs.Add(1)
			continue // a newer layout came while the SDS did not answer: go by it at once
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		}
		st, isStatus := wire.StatusOf(err)
		switch {
		case !isStatus: // connection failed, dial refused: back off and reconnect
			if errors.Is(err, wire.ErrTooLarge) || errors.Is(err, wire.ErrBadOp) {
				return fmt.Errorf("%w: %w", nbd.ErrInvalid, err)
			}
			v.pollLayout(ctx, l)
		case st == wire.StatusStaleEpoch || st == wire.StatusNotPrimary:
			v.stats.staleEpochs.Add(1)
			if _, rerr := v.refreshLayout(ctx, l); rerr != nil && ctx.Err() != nil {
				return fmt.Errorf("%w (layout: %w)", ctx.Err(), rerr)
			}
			if n == 0 {
				continue // the new layout is likely right: no wait
			}
		case st == wire.StatusAuth:
			if sc != nil {
				sc.forget(v.id)
			}
			v.tokens.Invalidate(tok)
		case st == wire.StatusExpired || st == wire.StatusRevoked:
			v.tokens.Invalidate(tok)
			if n == 0 {
				continue
			}
		case st == wire.StatusRetry:
			v.pollLayout(ctx, l)
		case st == wire.StatusReadOnly:
			return fmt.Errorf("%w: %w", ErrReadOnly, err)
		case st == wire.StatusRange:
			return fmt.Errorf("%w: %w", nbd.ErrInvalid, err)
		case st == wire.StatusNoSpace:
			return fmt.Errorf("%w: %w", nbd.ErrNoSpace, err)
		default: // StatusIO, StatusProto, unknown
			return fmt.Errorf("%w: %w", nbd.ErrIO, err)
		}
		v.log.Trace("IO attempt failed; retrying", "attempt", n+1, "error", err)
		if !sleep(ctx, &backoff) {
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		}
	}
}

// watched runs one attempt under layout l. An SDS that does not answer within attemptPatience
// (paused, partitioned, its connection silently gone) makes the IO poll the layout every
// layoutPoll; when the MDM has a newer one (the SDS was taken out), the attempt is abandoned
// (abandoned = true) so the IO goes to the chunk's new primary. An abandoned request still
// queued at the SDS is harmless: by the time it could run, that SDS's lease has expired, and the
// lease it gets next comes with the new epochs (it answers StaleEpoch).
func (v *Volume) watched(ctx context.Context, l *layout.Layout, tok *issuedToken,
	attempt func(ctx context.Context, l *layout.Layout, tok *issuedToken) (*sdsConn, error)) (*sdsConn, bool, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	timer := time.AfterFunc(attemptPatience, func() {
		seen := l
		for {
			cur, err := v.refreshLayout(actx, seen)
			if err == nil {
				if cur.Epoch != l.Epoch {
					v.log.Trace("SDS slow to answer and the layout moved: attempt abandoned", "epoch", l.Epoch, "new_epoch", cur.Epoch)
					cancel()
					return
				}
				seen = cur
			}
			t := time.NewTimer(layoutPoll)
			select {
			case <-done:
				t.Stop()
				return
			case <-actx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	})
	sc, err := attempt(actx, l, tok)
	timer.Stop()
	close(done)
	return sc, err != nil && actx.Err() != nil && ctx.Err() == nil, err
}

// pollLayout asks the MDM for a newer layout than l, at most once per layoutPoll per volume.
func (v *Volume) pollLayout(ctx context.Context, l *layout.Layout) {
	now := time.Now().UnixNano()
	last := v.polledAt.Load()
	if now-last < int64(layoutPoll) || !v.polledAt.CompareAndSwap(last, now) {
		return
	}
	if _, err := v.refreshLayout(ctx, l); err != nil {
		v.log.Trace("layout poll failed", "error", err)
	}
}

// sleep waits *backoff (jittered) or until ctx ends, and doubles *backoff up to retryMax.
func sleep(ctx context.Context, backoff *time.Duration) bool {
	d := *backoff/2 + rand.N(*backoff/2+1)
	*backoff = min(*backoff*2, retryMax)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// failed turns the error of a whole IO into what the NBD server and the control API report,
// and counts it. A deadline reached inside the IO is ErrTimeout (EIO).
func (v *Volume) failed(ctx context.Context, what string, off, length int64, err error) error {
	v.stats.errors.Add(1)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		v.stats.timeouts.Add(1)
		err = fmt.Errorf("%w after %s: %w", ErrTimeout, v.timeout, err)
	}
	v.log.Debug("IO failed", "op", what, "offset", off, "length", length, "error", err)
	return fmt.Errorf("volume %s: %s at %d+%d: %w", v.name, what, off, length, err)
}

// layout returns the current layout, fetching one if there is none yet.
func (v *Volume) layout(ctx context.Context) (*layout.Layout, error) {
	if l := v.lay.Load(); l != nil {
		return l, nil
	}
	backoff := retryFirst
	for {
		l, err := v.refreshLayout(ctx, nil)
		if err == nil {
			return l, nil
		}
		if !sleep(ctx, &backoff) {
			return nil, fmt.Errorf("%w: %w (last: %w)", ErrNoLayout, ctx.Err(), err)
		}
	}
}

// refreshLayout fetches the layout from the MDM unless another caller replaced seen meanwhile
// (then the newer one is returned). Fetches are serialised, so a burst of StaleEpoch replies
// costs one round trip.
func (v *Volume) refreshLayout(ctx context.Context, seen *layout.Layout) (*layout.Layout, error) {
	v.layMu.Lock()
	defer v.layMu.Unlock()
	if cur := v.lay.Load(); cur != seen && cur != nil {
		return cur, nil
	}
	l, err := v.mdm.Layout(ctx, v.id)
	if err != nil {
		return nil, err
	}
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("layout of volume %d from the MDM: %w", v.id, err)
	}
	if l.VolumeID != v.id {
		return nil, fmt.Errorf("layout from the MDM is for volume %d, not %d", l.VolumeID, v.id)
	}
	v.stats.layoutRefreshes.Add(1)
	old := v.lay.Swap(&l)
	if old == nil || old.Epoch != l.Epoch || old.SizeBytes != l.SizeBytes {
		v.log.Debug("layout updated", "epoch", l.Epoch, "size_bytes", l.SizeBytes, "members", len(l.Members))
	}
	if v.cache != nil {
		if err := v.cache.Put(l); err != nil {
			v.log.Warn("layout cache write failed", "error", err)
		}
	}
	return &l, nil
}

// VolumeStatus is one export in GET /status.
type VolumeStatus struct {
	VolumeID        int64     `json:"volume_id"`
	Name            string    `json:"name"`
	SizeBytes       int64     `json:"size_bytes"`
	AccessMode      string    `json:"access_mode"`
	MapGeneration   int64     `json:"map_generation"`
	LayoutEpoch     int64     `json:"layout_epoch"` // -1: no layout yet
	TokenExpiresAt  time.Time `json:"token_expires_at,omitzero"`
	TokenIssues     int64     `json:"token_issues"`
	Unmapped        bool      `json:"unmapped,omitempty"`
	Reads           int64     `json:"reads"`
	Writes          int64     `json:"writes"`
	ReadBytes       int64     `json:"read_bytes"`
	WriteBytes      int64     `json:"write_bytes"`
	Flushes         int64     `json:"flushes"`
	Trims           int64     `json:"trims"`
	WriteZeroes     int64     `json:"write_zeroes"`
	Errors          int64     `json:"errors"`
	Timeouts        int64     `json:"timeouts"`
	Retries         int64     `json:"retries"`
	StaleEpochs     int64     `json:"stale_epochs"` // StaleEpoch and NotPrimary replies
	LayoutRefreshes int64     `json:"layout_refreshes"`
	LocalReads      int64     `json:"local_reads"` // served from SDS devices on this host (localread.go)
	Relayed         int64     `json:"relayed"`     // attempts sent through a secondary (relay.go)
	QoS             QoSStatus `json:"qos"`
}

// Status is the volume's line in GET /status.
func (v *Volume) Status() VolumeStatus {
	s := VolumeStatus{
		VolumeID: v.id, Name: v.name, SizeBytes: v.Size(), AccessMode: v.mode,
		MapGeneration: v.generation.Load(), LayoutEpoch: -1, TokenIssues: v.tokens.Issues(),
		Reads: v.stats.reads.Load(), Writes: v.stats.writes.Load(),
		ReadBytes: v.stats.readBytes.Load(), WriteBytes: v.stats.writeBytes.Load(),
		Flushes: v.stats.flushes.Load(), Trims: v.stats.trims.Load(), WriteZeroes: v.stats.zeroes.Load(),
		Errors: v.stats.errors.Load(), Timeouts: v.stats.timeouts.Load(), Retries: v.stats.retries.Load(),
		StaleEpochs: v.stats.staleEpochs.Load(), LayoutRefreshes: v.stats.layoutRefreshes.Load(),
		LocalReads: v.stats.localReads.Load(), Relayed: v.stats.relayed.Load(), QoS: v.qos.status(),
	}
	if l := v.lay.Load(); l != nil {
		s.LayoutEpoch = l.Epoch
	}
	if t, unmapped := v.tokens.Current(); t != nil {
		s.TokenExpiresAt = t.expiresAt
	} else {
		s.Unmapped = unmapped
	}
	return s
}
