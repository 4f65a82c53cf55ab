package sds

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/internal/ratelimit"
	"pflex/internal/shm"
	"pflex/internal/token"
	"pflex/internal/wire"
	"pflex/sds/chunkstore"
)

// DataConfig configures a DataServer.
type DataConfig struct {
	// SelfID is this SDS's id as the MDM knows it (0 until registered: IO is refused with
	// StatusRetry until then).
	SelfID func() int64
	// LeaseValid reports whether this SDS holds its lease from the MDM leader; IO is refused
	// with StatusRetry without one. nil: no lease is needed (tests).
	LeaseValid func() bool
	Store      *chunkstore.Store
	Verifier   *token.Verifier
	Layouts    LayoutSource
	// Acks posts token ACK batches; nil counts nothing.
	Acks AckPoster
	// ReplicaTimeout bounds a forwarded write; default DefaultReplicaTimeout.
	ReplicaTimeout time.Duration
	// AckInterval and AckBatch tune the ACK batcher; defaults DefaultAckInterval, DefaultAckBatch.
	AckInterval time.Duration
	AckBatch    int
	// SignRebuild signs the tokens of this SDS's rebuild copies; nil: this SDS copies nothing
	// (it still takes copies as a target).
	SignRebuild TokenSigner
	// SignPeer signs the Peer token this SDS presents to the SDSs it forwards and copies to
	// (OpPeerAuth); nil: it presents none, and they refuse its replica and rebuild writes.
	SignPeer func(ttl time.Duration) (token.Token, error)
	// Rebuild posts rebuild progress to the MDM leader; nil: none is posted.
	Rebuild RebuildPoster
	// RebuildMBps caps the rebuild bytes this SDS sends per second (0: unthrottled);
	// RebuildParallel is how many chunks it copies at once (default DefaultRebuildParallel).
	RebuildMBps     int
	RebuildParallel int
	// SharedMemory maps the regions of same-host clients (sharedmem.go); nil: clients send
	// the bytes of every write over the connection.
	SharedMemory *shm.Registry
	// LocalReads grants same-host SDCs that attached their region reads of this SDS's chunks
	// straight from its devices (localread.go); it needs SharedMemory.
	LocalReads bool
	// LeaseRemaining is how long the lease still runs, which bounds a read grant; nil: grants
	// last DefaultReadGrantTTL while LeaseValid holds (tests).
	LeaseRemaining func() time.Duration
	// Wire configures the server side; its MaxPayload is also used by the replica connections.
	Wire   wire.ServerOptions
	Logger hclog.Logger
	Now    func() time.Time // default time.Now
}

// DataServer serves the binary data protocol (internal/wire) on data_addr: token-checked reads
// and writes of the chunks this SDS is primary for, replicated to their secondaries, and the
// replicated writes its primaries forward to it.
type DataServer struct {
	cfg      DataConfig
	log      hclog.Logger
	layouts  *layoutCache
	replicas *replicaPool
	acks     *ackBatcher
	locks    [1024]sync.RWMutex // per chunk (striped), held by the primary across the forward
	// copyLocks (per chunk, striped) are held around every change of a chunk's local copy and
	// never across a network wait: a replica write checks its order and epoch and is applied
	// under one, so nothing it was checked against changes before it lands.
	copyLocks [1024]sync.Mutex
	seed      maphash.Seed

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	lns   []net.Listener
	conns map[net.Conn]struct{}

	stats dataCounters

	// Copies superseded by a newer layout: volumes to check, with the epoch that asked.
	recMu      sync.Mutex
	recPending map[int64]int64
	reconciled map[int64]int64 // epoch each volume was last checked at
	recWake    chan struct{}

	// Layout epochs of the last IO state (volume -> epoch), which the rebuild executor scans.
	epochs   atomic.Pointer[map[int64]int64]
	rebuild  rebuildState
	throttle *ratelimit.Limiter // rebuild bytes per second
	dirty    dirtyChunks
	writeIDs *writeIDs     // tagged writes applied here recently (writeids.go)
	order    *replicaOrder // the newest replica write each chunk took (replicaorder.go)
	unrepl   unreplicated  // chunks with writes not on all their replicas (unreplicated.go)

	shmMu      sync.Mutex
	shmClients map[uint64]int // per shared region, connections its owner attached it on

	grants  readGrants // local reads (localread.go)
	reports reportIDs  // read reports counted lately (reportids.go)

	// stallReplica, when set, is called before a replica write takes its copy lock: fault
	// injection for tests (a write delayed in the secondary while its primary gives up on it).
	stallReplica atomic.Pointer[func(*wire.Request)]
}

type dataCounters struct {
	conns, reads, writes, replWrites, trims, flushes, refused, retries atomic.Int64
	degradedWrites, noLease, dropped, replays                          atomic.Int64
	shmAttached, shmWrites, shmReads                                   atomic.Int64
	grants, localReads, localReadBytes                                 atomic.Int64
	relayed, relayFailed                                               atomic.Int64
}

// DataStats is what /status reports about the data path.
type DataStats struct {
	Connections    int   `json:"connections"`
	Layouts        int   `json:"layouts"`
	Reads          int64 `json:"reads"`
	Writes         int64 `json:"writes"`
	ReplicaWrites  int64 `json:"replica_writes"`
	Trims          int64 `json:"trims"` // TRIM and WRITE_ZEROES, primary and replica
	Flushes        int64 `json:"flushes"`
	Refused        int64 `json:"refused"`         // auth, epoch, role or range refusals
	Retries        int64 `json:"retries"`         // StatusRetry answers (secondary unreachable, ...)
	DegradedWrites int64 `json:"degraded_writes"` // acknowledged with this SDS's copy alone
	NoLease        int64 `json:"no_lease"`        // requests refused: no valid lease
	DroppedCopies  int64 `json:"dropped_copies"`  // copies freed: a newer layout placed them elsewhere
	// Retried writes (writeids.go): re-sent writes this SDS already held and did not apply
	// again, the writes remembered, and those forgotten early because of the cap.
	ReplayedWrites  int64 `json:"replayed_writes"`
	WriteIDs        int   `json:"write_ids"`
	WriteIDsEvicted int64 `json:"write_ids_evicted"`
	// Replica order (replicaorder.go): replica and rebuild writes refused because a newer one
	// of their chunk from the same primary was applied first (or their primary restarted since),
	// and the chunks whose newest replica write is remembered.
	ReplicaOutOfOrder int64        `json:"replica_out_of_order"`
	ReplicaOrders     int          `json:"replica_orders"`
	Rebuild           RebuildStats `json:"rebuild"`
	AckBatchesSent    int64        `json:"ack_batches_sent"`
	AckFailures       int64        `json:"ack_failures"`
	AckDroppedCount   int64        `json:"ack_dropped"`
	AckRefused        int64        `json:"ack_refused"` // batches the leader refused as malformed, dropped
	// Shared memory (sharedmem.go): regions attached by connections, writes whose data came
	// from a region (as primary or replica), forwards to a secondary that passed a reference
	// instead of the bytes, and reads answered into a region.
	ShmRegions  int   `json:"shm_regions"`
	ShmAttached int64 `json:"shm_attached"`
	ShmWrites   int64 `json:"shm_writes"`
	ShmForwards int64 `json:"shm_forwards"`
	ShmReads    int64 `json:"shm_reads"`
	// Local reads (localread.go): grants held now and made so far, and the reads SDCs
	// reported doing under them.
	ReadGrants     int   `json:"read_grants"`
	GrantsMade     int64 `json:"read_grants_made"`
	LocalReads     int64 `json:"local_reads"`
	LocalReadBytes int64 `json:"local_read_bytes"`
	// Relayed IO (relay.go): requests passed on to a primary (or, for FLUSH, another SDS) for
	// a client that cannot reach it, and those this SDS could not deliver either.
	Relayed     int64 `json:"relayed"`
	RelayFailed int64 `json:"relay_failed"`
}

// NewDataServer returns a server; Serve runs it on listeners, Close stops it.
func NewDataServer(cfg DataConfig) *DataServer {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReplicaTimeout <= 0 {
		cfg.ReplicaTimeout = DefaultReplicaTimeout
	}
	if cfg.Wire.Logger == nil {
		cfg.Wire.Logger = cfg.Logger.Named("wire")
	}
	d := &DataServer{cfg: cfg, log: cfg.Logger, seed: maphash.MakeSeed(), conns: map[net.Conn]struct{}{}, shmClients: map[uint64]int{},
		recPending: map[int64]int64{}, reconciled: map[int64]int64{}, recWake: make(chan struct{}, 1)}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.writeIDs = newWriteIDs(DefaultWriteIDRetention, DefaultWriteIDMax, cfg.Now)
	d.order = newReplicaOrder(DefaultOrderRetention, DefaultOrderMax, cfg.Now)
	d.layouts = newLayoutCache(cfg.Layouts, d.learned)
	cfg.Store.OnFree(d.grants.revokeKey)
	d.replicas = newReplicaPool(wire.ClientOptions{MaxPayload: cfg.Wire.MaxPayload, Logger: cfg.Wire.Logger}, cfg.ReplicaTimeout, cfg.SignPeer, cfg.SelfID)
	if cfg.Acks != nil {
		d.acks = newAckBatcher(cfg.Acks, cfg.SelfID, cfg.Logger.Named("acks"))
		if cfg.AckInterval > 0 {
			d.acks.interval = cfg.AckInterval
		}
		if cfg.AckBatch > 0 {
			d.acks.batch = cfg.AckBatch
		}
		d.wg.Go(func() { d.acks.run(d.ctx) })
	}
	d.wg.Go(d.reconcileLoop)
	if cfg.LocalReads && cfg.SharedMemory != nil {
		d.wg.Go(func() { d.every(grantExtendEvery, d.extendGrants) })
	}
	d.rebuild.finished, d.rebuild.lastSent = map[batchKey]api.RebuildReport{}, map[batchKey]time.Time{}
	d.throttle = ratelimit.New(float64(cfg.RebuildMBps)*(1<<20), 0)
	if cfg.RebuildParallel <= 0 {
		d.cfg.RebuildParallel = DefaultRebuildParallel
	}
	if cfg.SignRebuild != nil {
		d.wg.Go(func() { d.every(rebuildScanInterval, d.rebuildScan) })
	}
	return d
}

// every runs f every interval until the server closes.
func (d *DataServer) every(interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// Serve accepts connections on ln and serves each with wire.Serve until ln is closed.
func (d *DataServer) Serve(ln net.Listener) error {
	d.mu.Lock()
	d.lns = append(d.lns, ln)
	d.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if d.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("sds: data listener: %w", err)
		}
		d.mu.Lock()
		if d.ctx.Err() != nil {
			d.mu.Unlock()
			nc.Close()
			return nil
		}
		d.conns[nc] = struct{}{}
		d.wg.Add(1) // under mu: Close cannot be waiting yet
		d.mu.Unlock()
		go func() {
			defer d.wg.Done()
			_ = wire.Serve[*connState](nc, wireHandler{d}, d.cfg.Wire)
			d.mu.Lock()
			delete(d.conns, nc)
			d.mu.Unlock()
		}()
	}
}

// Close stops accepting, closes every connection, waits for the handlers and sends the last
// ACK batch (bounded by a second).
func (d *DataServer) Close() error {
	d.mu.Lock()
	d.cancel()
	for _, ln := range d.lns {
		ln.Close()
	}
	for nc := range d.conns {
		nc.Close()
	}
	d.mu.Unlock()
	d.replicas.close()
	d.wg.Wait()
	return nil
}

// Stats reports the data path's counters.
func (d *DataServer) Stats() DataStats {
	d.mu.Lock()
	n := len(d.conns)
	d.mu.Unlock()
	st := DataStats{
		Connections: n, Layouts: d.layouts.count(),
		Reads: d.stats.reads.Load(), Writes: d.stats.writes.Load(), ReplicaWrites: d.stats.replWrites.Load(),
		Trims: d.stats.trims.Load(), Flushes: d.stats.flushes.Load(), Refused: d.stats.refused.Load(),
		Retries: d.stats.retries.Load(), DegradedWrites: d.stats.degradedWrites.Load(), NoLease: d.stats.noLease.Load(),
		DroppedCopies: d.stats.dropped.Load(), Rebuild: d.rebuild.stats(),
		ReplayedWrites: d.stats.replays.Load(), WriteIDs: d.writeIDs.size(), WriteIDsEvicted: d.writeIDs.evicted.Load(),
		ReplicaOutOfOrder: d.order.refused.Load(), ReplicaOrders: d.order.size(),
		ShmAttached: d.stats.shmAttached.Load(), ShmWrites: d.stats.shmWrites.Load(), ShmForwards: d.replicas.shmForwards.Load(),
		ShmReads: d.stats.shmReads.Load(), ReadGrants: d.grants.count(), GrantsMade: d.stats.grants.Load(),
		LocalReads: d.stats.localReads.Load(), LocalReadBytes: d.stats.localReadBytes.Load(),
		Relayed: d.stats.relayed.Load(), RelayFailed: d.stats.relayFailed.Load(),
	}
	if d.cfg.SharedMemory != nil {
		st.ShmRegions = d.cfg.SharedMemory.Len()
	}
	if d.acks != nil {
		st.AckBatchesSent, st.AckFailures, st.AckDroppedCount = d.acks.sent.Load(), d.acks.failed.Load(), d.acks.dropped.Load()
		st.AckRefused = d.acks.refused.Load()
	}
	return st
}

// connState is one client connection's verified tokens.
type connState struct {
	cache *token.Cache
	peer  atomic.Bool // an SDS of the cluster (OpPeerAuth): replica and rebuild writes are taken
	// from is the peer's PeerHello (nil: its request ids are not ordered; replicaorder.go).
	from atomic.Pointer[wire.PeerHello]

	mu      sync.Mutex
	tokens  map[int64]token.Token   // the token registered per volume, to forward to secondaries
	regions map[uint64]*shm.Mapping // shared regions attached (sharedmem.go)
	clients map[uint64]bool         // those attached by their owner (not passed on by a primary)

	grants map[uint64]*readGrant // read grants by entry offset (localread.go; under readGrants.mu)
}

// wireHandler is the DataServer as a wire.Handler.
type wireHandler struct{ *DataServer }

// Open implements wire.Handler.
func (h wireHandler) Open(net.Conn) *connState {
	h.stats.conns.Add(1)
	return &connState{cache: token.NewCache(h.cfg.Verifier), tokens: map[int64]token.Token{},
		regions: map[uint64]*shm.Mapping{}, clients: map[uint64]bool{}, grants: map[uint64]*readGrant{}}
}

// Close implements wire.Handler: the connection's grants end before its regions are unmapped.
func (h wireHandler) Close(cs *connState) {
	h.grants.revoke(func(g *readGrant) bool { return g.cs == cs })
	h.releaseShm(cs)
}

// Handle serves one request of a connection (wire.Handler).
func (d *DataServer) Handle(ctx context.Context, cs *connState, req *wire.Request) wire.Response {
	switch req.Op {
	case wire.OpPing:
		return wire.Response{}
	case wire.OpAuth:
		return d.auth(cs, req)
	case wire.OpPeerAuth:
		return d.peerAuth(cs, req)
	case wire.OpFlush, wire.OpReplFlush:
		if req.Op == wire.OpFlush && req.Flags&wire.FlagRelay != 0 {
			return d.relayFlush(ctx, cs, req)
		}
		return d.flush()
	case wire.OpShmAttach:
		return d.attachShm(cs, req)
	case wire.OpReadGrant:
		return d.grantRead(ctx, cs, req)
	case wire.OpReadReport:
		return d.readReport(cs, req)
	case wire.OpRead, wire.OpWrite, wire.OpTrim, wire.OpWriteZeroes, wire.OpReplWrite, wire.OpChunkWrite,
		wire.OpShmWrite, wire.OpShmReplWrite, wire.OpShmRead:
		var resp wire.Response
		if req.Op == wire.OpShmWrite || req.Op == wire.OpShmReplWrite || req.Op == wire.OpShmRead {
			r, src, refused, ok := d.fromShm(cs, req)
			if ok {
				resp = d.io(ctx, cs, &r, src)
			} else {
				resp = refused
			}
		} else {
			resp = d.io(ctx, cs, req, nil)
		}
		switch resp.Status {
		case wire.StatusOK:
		case wire.StatusRetry:
			d.stats.retries.Add(1)
		default:
			d.stats.refused.Add(1)
		}
		return resp
	}
	return statusResp(wire.StatusProto, 0, req.Op.String()+" is not served by this SDS")
}

// flush makes everything this SDS acknowledged durable.
func (d *DataServer) flush() wire.Response {
	d.stats.flushes.Add(1)
	if err := d.cfg.Store.Flush(); err != nil {
		d.log.Error("flush failed", "error", err)
		return statusResp(wire.StatusIO, 0, err.Error())
	}
	return wire.Response{}
}

func statusResp(s wire.Status, epoch int64, detail string) wire.Response {
	r := wire.Response{Status: s, Epoch: epoch}
	if detail != "" {
		r.Data = []byte(detail)
	}
	return r
}

// auth verifies the token in the payload and registers it for its volume on the connection.
func (d *DataServer) auth(cs *connState, req *wire.Request) wire.Response {
	t, err := token.Parse(req.Data)
	if err != nil {
		return statusResp(wire.StatusAuth, 0, err.Error())
	}
	if t.Claims.VolumeID != req.VolumeID {
		return statusResp(wire.StatusAuth, 0, fmt.Sprintf("token is for volume %d, not %d", t.Claims.VolumeID, req.VolumeID))
	}
	if err := cs.cache.Register(t, d.cfg.Now()); err != nil {
		return statusResp(tokenStatus(err), 0, err.Error())
	}
	cs.mu.Lock()
	cs.tokens[t.Claims.VolumeID] = t
	cs.mu.Unlock()
	d.grants.tokenRenewed(cs, t.Claims.VolumeID, t.Claims.ExpiresAt)
	return wire.Response{}
}

// peerAuth marks the connection as coming from an SDS of the cluster, on a Peer token signed
// with a key this SDS holds.
func (d *DataServer) peerAuth(cs *connState, req *wire.Request) wire.Response {
	t, err := token.Parse(req.Data)
	if err == nil {
		err = d.cfg.Verifier.VerifyPeer(t, d.cfg.Now())
	}
	if err != nil {
		return statusResp(wire.StatusAuth, 0, "peer authentication: "+err.Error())
	}
	if h, ok := wire.PeerHelloOf(req); ok {
		d.order.hello(h)
		cs.from.Store(&h)
	} else {
		cs.from.Store(nil)
	}
	cs.peer.Store(true)
	return wire.Response{}
}

// tokenStatus maps a token verification error to its wire status.
func tokenStatus(err error) wire.Status {
	switch {
	case errors.Is(err, token.ErrExpired):
		return wire.StatusExpired
	case errors.Is(err, token.ErrRevoked):
		return wire.StatusRevoked
	case errors.Is(err, token.ErrReadOnly):
		return wire.StatusReadOnly
	}
	return wire.StatusAuth // no token, bad signature, unknown key, malformed, wrong volume
}

// storeStatus maps a chunk store error to its wire status.
func storeStatus(err error) wire.Status {
	switch {
	case errors.Is(err, chunkstore.ErrNoSpace):
		return wire.StatusNoSpace
	case errors.Is(err, chunkstore.ErrRange):
		return wire.StatusRange
	case errors.Is(err, chunkstore.ErrClosed):
		return wire.StatusRetry
	}
	return wire.StatusIO
}

func (d *DataServer) lock(k chunkstore.Key) *sync.RWMutex {
	return &d.locks[d.stripe(k)%uint64(len(d.locks))]
}

func (d *DataServer) copyLock(k chunkstore.Key) *sync.Mutex {
	return &d.copyLocks[d.stripe(k)%uint64(len(d.copyLocks))]
}

// stripe hashes k for the striped lock tables.
func (d *DataServer) stripe(k chunkstore.Key) uint64 {
	var h maphash.Hash
	h.SetSeed(d.seed)
	var b [16]byte
	for i := range 8 {
		b[i] = byte(k.VolumeID >> (8 * i))
		b[8+i] = byte(k.Chunk >> (8 * i))
	}
	h.Write(b[:])
	return h.Sum64()
}

// target is a request resolved against the layout: the chunk, its replicas and epoch.
type target struct {
	l        *layout.Layout
	key      chunkstore.Key
	inChunk  int64 // offset within the chunk
	length   int64
	epoch    int64
	replicas []int64
}

// io serves READ, WRITE, TRIM, WRITE_ZEROES (client, or replica with FlagReplica) and REPL_WRITE.
// src is where a write's data lies, or where a read's data goes, in shared memory (nil: not).
func (d *DataServer) io(ctx context.Context, cs *connState, req *wire.Request, src *shmSource) wire.Response {
	replica := req.Op == wire.OpReplWrite || (req.Flags&wire.FlagReplica != 0 && req.Op != wire.OpRead)
	write := req.Op != wire.OpRead
	if (replica || req.Op == wire.OpChunkWrite) && !cs.peer.Load() {
		// A client writing one replica alone would leave the two copies different.
		return statusResp(wire.StatusAuth, 0, req.Op.String()+" (a replica or rebuild write) is taken only from SDS peers, after PEER_AUTH")
	}
	claims, err := cs.cache.Authorize(req.VolumeID, write, d.cfg.Now())
	if err != nil {
		return statusResp(tokenStatus(err), 0, err.Error())
	}
	self := d.cfg.SelfID()
	if self == 0 {
		return statusResp(wire.StatusRetry, 0, "this SDS is not registered with the MDM yet")
	}
	if !d.leaseValid() {
		return d.noLease()
	}
	t, resp, ok := d.resolve(ctx, req)
	if !ok {
		return resp
	}
	if req.Op == wire.OpChunkWrite {
		return d.applyChunkCopy(req, t, cs.peerWrite(req))
	}
	if t.length == 0 {
		return wire.Response{Epoch: t.epoch}
	}
	if req.Flags&wire.FlagRelay != 0 && !replica && (len(t.replicas) == 0 || t.replicas[0] != self) {
		if src != nil {
			return statusResp(wire.StatusProto, t.epoch, "a relayed request carries its data inline, not in shared memory")
		}
		return d.relay(ctx, cs, req, t)
	}
	req.Flags &^= wire.FlagRelay // this SDS is the primary now (or the write is a replica's): served here
	if replica {
		if len(t.replicas) < 2 || !slices.Contains(t.replicas[1:], self) {
			return statusResp(wire.StatusNotPrimary, t.epoch, fmt.Sprintf("SDS %d is not the secondary of chunk %d (replicas %v)", self, t.key.Chunk, t.replicas))
		}
		return d.applyReplica(ctx, claims, req, t, cs.peerWrite(req))
	}
	if len(t.replicas) == 0 || t.replicas[0] != self {
		return statusResp(wire.StatusNotPrimary, t.epoch, fmt.Sprintf("SDS %d is not the primary of chunk %d (replicas %v)", self, t.key.Chunk, t.replicas))
	}
	if req.Op == wire.OpRead {
		var into []byte
		if src != nil {
			into = src.data
		}
		return d.read(claims, req, t, into)
	}
	cs.mu.Lock()
	tok, ok := cs.tokens[req.VolumeID]
	cs.mu.Unlock()
	if !ok || tok.Claims.TokenID != claims.TokenID {
		// Only a concurrent re-AUTH gets here; the client retries.
		return statusResp(wire.StatusRetry, t.epoch, "token changed while the write was in flight")
	}
	return d.writePrimary(ctx, claims, tok, req, t, src)
}

// span is where in its chunk the request lies.
func (t target) span() span { return span{t.inChunk, t.length} }

func (d *DataServer) leaseValid() bool { return d.cfg.LeaseValid == nil || d.cfg.LeaseValid() }

// noLease refuses a request: without a lease the MDM may already have given this SDS's chunks to
// their other copies, so nothing here can be trusted to be current until a heartbeat brings a
// lease with the current layout epochs.
func (d *DataServer) noLease() wire.Response {
	d.stats.noLease.Add(1)
	return statusResp(wire.StatusRetry, 0, "this SDS holds no valid lease from the MDM leader: not serving IO")
}

// resolve checks the request against the volume's layout (fetched or refreshed as needed):
// range, chunk boundary and epoch.
func (d *DataServer) resolve(ctx context.Context, req *wire.Request) (target, wire.Response, bool) {
	l, err := d.layouts.get(ctx, req.VolumeID)
	if err != nil {
		return target{}, statusResp(wire.StatusRetry, 0, err.Error()), false
	}
	off, n := req.Offset, int64(req.Length)
	if req.Op.HasPayload() {
		n = int64(len(req.Data))
	}
	if off < 0 || off+n > l.SizeBytes {
		// The volume may have grown since the layout was cached.
		if l2, err := d.layouts.refresh(ctx, req.VolumeID, l); err == nil {
			l = l2
		}
		if off < 0 || off+n > l.SizeBytes {
			return target{}, statusResp(wire.StatusRange, 0, fmt.Sprintf("[%d, +%d) is outside the volume (%d bytes)", off, n, l.SizeBytes)), false
		}
	}
	chunk := off / l.ChunkSize
	if n > 0 && (off+n-1)/l.ChunkSize != chunk {
		return target{}, statusResp(wire.StatusRange, 0, fmt.Sprintf("[%d, +%d) crosses a chunk boundary (chunk size %d)", off, n, l.ChunkSize)), false
	}
	epoch := l.ChunkEpoch(chunk)
	if req.Epoch > epoch {
		if l2, err := d.layouts.refresh(ctx, req.VolumeID, l); err == nil {
			l = l2
			epoch = l.ChunkEpoch(chunk)
		}
		if req.Epoch > epoch {
			return target{}, statusResp(wire.StatusRetry, epoch, fmt.Sprintf("request epoch %d is newer than this SDS knows (%d)", req.Epoch, epoch)), false
		}
	}
	if req.Epoch < epoch {
		return target{}, statusResp(wire.StatusStaleEpoch, epoch, fmt.Sprintf("chunk %d is at epoch %d, request has %d", chunk, epoch, req.Epoch)), false
	}
	return target{
		l: l, key: chunkstore.Key{VolumeID: req.VolumeID, Chunk: chunk}, inChunk: off - chunk*l.ChunkSize,
		length: n, epoch: epoch, replicas: l.Replicas(chunk),
	}, wire.Response{}, true
}

// read serves a READ into a reply buffer, or into into (shared memory: the reply carries no
// data).
func (d *DataServer) read(claims token.Claims, req *wire.Request, t target, into []byte) wire.Response {
	buf := into
	if buf == nil {
		buf = req.ReplyBuffer(int(t.length))
	}
	mu := d.lock(t.key)
	// Under the chunk's read lock: a read never returns data of a write the secondary does not
	// have yet (and that might still fail).
	mu.RLock()
	if d.unrepl.has(t.key) {
		mu.RUnlock()
		if resp, ok := d.readUnreplicated(t); !ok {
			return resp
		}
		mu.RLock()
	}
	err := d.cfg.Store.ReadAt(t.key, t.l.ChunkSize, buf, t.inChunk)
	mu.RUnlock()
	if err != nil {
		d.log.Error("read failed", "volume", t.key.VolumeID, "chunk", t.key.Chunk, "error", err)
		return statusResp(storeStatus(err), t.epoch, err.Error())
	}
	if !d.leaseValid() { // lost while reading (a pause): the data may be stale by now
		return d.noLease()
	}
	d.stats.reads.Add(1)
	if d.acks != nil {
		d.acks.record(claims, t.length, 0, false)
	}
	if into != nil {
		d.stats.shmReads.Add(1)
		return wire.Response{Epoch: t.epoch}
	}
	return wire.Response{Epoch: t.epoch, Data: buf}
}

// apply performs a write, trim or write-zeroes on the local copy, under the chunk's copy lock.
func (d *DataServer) apply(req *wire.Request, t target) error {
	mu := d.copyLock(t.key)
	mu.Lock()
	defer mu.Unlock()
	return d.applyLocked(req, t)
}

// applyLocked is apply with the chunk's copy lock held.
func (d *DataServer) applyLocked(req *wire.Request, t target) error {
	fua := req.Flags&wire.FlagFUA != 0
	switch req.Op {
	case wire.OpWrite, wire.OpReplWrite:
		return d.cfg.Store.WriteAt(t.key, t.l.ChunkSize, t.epoch, req.Data, t.inChunk, fua)
	default: // TRIM, WRITE_ZEROES
		return d.cfg.Store.Zero(t.key, t.l.ChunkSize, t.epoch, t.inChunk, t.length, t.l.Thick, fua)
	}
}

// writePrimary applies a client write locally and on the other replicas (the secondary, and a
// pending rebuild or move target), under the chunk's lock so that every replica applies the
// writes of a chunk in the same order, and answers OK only when all have it.
func (d *DataServer) writePrimary(ctx context.Context, claims token.Claims, tok token.Token, req *wire.Request, t target, src *shmSource) wire.Response {
	if len(t.replicas) == 1 {
		return d.writeDegraded(claims, req, t)
	}
	secs := make([]layout.Member, 0, len(t.replicas)-1)
	for _, id := range t.replicas[1:] {
		m, ok := t.l.Member(id)
		if !ok || m.Addr == "" {
			return statusResp(wire.StatusRetry, t.epoch, fmt.Sprintf("%v: SDS %d has no data address", errNoSecondary, id))
		}
		secs = append(secs, m)
	}
	fwd := wire.Request{Op: req.Op, Flags: req.Flags &^ wire.FlagResync, VolumeID: req.VolumeID, Offset: req.Offset, Length: req.Length, Epoch: req.Epoch, Tag: req.Tag, Data: req.Data}
	if req.Op == wire.OpWrite {
		fwd.Op = wire.OpReplWrite
	} else {
		fwd.Flags |= wire.FlagReplica
	}

	type result struct {
		resp wire.Response
		err  error
	}
	results := make([]result, len(secs))
	mu := d.lock(t.key)
	mu.Lock()
	d.grants.begin(t.key)
	if d.unrepl.has(t.key) { // an earlier write first, or this one is not applied either
		if resp, ok := d.settle(ctx, t, secs, tok); !ok {
			d.unlockWritten(mu, t.key)
			return resp
		}
	}
	if held, reused := d.writeIDs.applied(claims.SDCID, req.Tag, t.key, t.span()); reused {
		d.unlockWritten(mu, t.key)
		return tagReused(req, t)
	} else if held {
		resp := d.replay(ctx, claims, tok, req, t, secs)
		d.unlockWritten(mu, t.key)
		return resp
	}
	var wg sync.WaitGroup
	for i, sec := range secs {
		wg.Go(func() { results[i].resp, results[i].err = d.replicas.forwardFrom(ctx, sec.Addr, tok, fwd, src) })
	}
	lerr := d.apply(req, t)
	if lerr == nil {
		d.writeIDs.add(claims.SDCID, req.Tag, t.key, t.span())
	}
	wg.Wait()
	failed := slices.IndexFunc(results, func(r result) bool { return r.err != nil })
	if lerr == nil && failed >= 0 {
		// Applied here, maybe not there: not read here until it is (unreplicated.go), and a
		// maintenance re-sync must copy it.
		d.unrepl.add(t.key, t.inChunk, t.length, tok)
		d.dirty.mark(t.key)
	}
	d.unlockWritten(mu, t.key)

	if lerr != nil {
		d.log.Error("local write failed", "op", req.Op.String(), "volume", t.key.VolumeID, "chunk", t.key.Chunk, "error", lerr)
		return statusResp(storeStatus(lerr), t.epoch, lerr.Error())
	}
	if failed >= 0 {
		return d.secondaryFailed(t, secs[failed], results[failed].resp, results[failed].err)
	}
	if !d.leaseValid() {
		return d.noLease()
	}
	d.countOnce(claims, req, t)
	return wire.Response{Epoch: t.epoch}
}

// tagReused refuses a write whose tag this chunk's copy holds for a write of another span: a
// client reusing tags, whose write taken as a retry would be acknowledged without being applied.
func tagReused(req *wire.Request, t target) wire.Response {
	return statusResp(wire.StatusProto, t.epoch, fmt.Sprintf("write tag %d was already used for another write of chunk %d; every write needs a tag of its own", req.Tag, t.key.Chunk))
}

// unlockWritten ends a write of chunk k begun with grants.begin under its lock mu, and
// releases mu. A chunk left with writes its other replicas lack loses its read grants.
func (d *DataServer) unlockWritten(mu *sync.RWMutex, k chunkstore.Key) {
	d.grants.end(k, d.unrepl.has(k))
	mu.Unlock()
}

// writeDegraded applies a write to a chunk whose layout leaves this SDS its only copy (the
// other SDS went down and the MDM committed a layout without it): acknowledged with one copy,
// which is what degraded means, until a rebuild re-protects the chunk.
func (d *DataServer) writeDegraded(claims token.Claims, req *wire.Request, t target) wire.Response {
	mu := d.lock(t.key)
	mu.Lock()
	d.unrepl.clear(t.key) // no other replica left to send it to
	if held, reused := d.writeIDs.applied(claims.SDCID, req.Tag, t.key, t.span()); reused {
		mu.Unlock()
		return tagReused(req, t)
	} else if held {
		mu.Unlock()
		d.stats.replays.Add(1)
		if !d.leaseValid() {
			return d.noLease()
		}
		// Its first attempt may have been refused for the lease, uncounted.
		d.countOnce(claims, req, t)
		return wire.Response{Epoch: t.epoch} // this copy, the only one, has it
	}
	d.grants.begin(t.key)
	err := d.apply(req, t)
	if err == nil {
		d.writeIDs.add(claims.SDCID, req.Tag, t.key, t.span())
	}
	d.unlockWritten(mu, t.key)
	if err != nil {
		d.log.Error("local write failed", "op", req.Op.String(), "volume", t.key.VolumeID, "chunk", t.key.Chunk, "error", err)
		return statusResp(storeStatus(err), t.epoch, err.Error())
	}
	if !d.leaseValid() {
		return d.noLease()
	}
	d.stats.degradedWrites.Add(1)
	d.dirty.mark(t.key)
	d.countOnce(claims, req, t)
	return wire.Response{Epoch: t.epoch}
}

// replay answers a write that this SDS's copy already holds (an earlier attempt was applied here
// and then refused, abandoned or lost on the way back): it is not applied again, since newer
// writes to the same blocks may have been acknowledged since. The other replicas may lack it,
// so the range's current bytes, which include it, are sent to them as a REPL_WRITE; then the
// write is acknowledged like any other. Called under the chunk's write lock.
func (d *DataServer) replay(ctx context.Context, claims token.Claims, tok token.Token, req *wire.Request, t target, secs []layout.Member) wire.Response {
	d.stats.replays.Add(1)
	buf := make([]byte, t.length)
	if err := d.cfg.Store.ReadAt(t.key, t.l.ChunkSize, buf, t.inChunk); err != nil {
		d.log.Error("replay: reading the local copy failed", "volume", t.key.VolumeID, "chunk", t.key.Chunk, "error", err)
		return statusResp(storeStatus(err), t.epoch, err.Error())
	}
	fwd := wire.Request{Op: wire.OpReplWrite, Flags: req.Flags &^ (wire.FlagReplica | wire.FlagResync), VolumeID: req.VolumeID,
		Offset: req.Offset, Epoch: req.Epoch, Tag: req.Tag, Data: buf}
	if resp, ok := d.forwardAll(ctx, t, secs, tok, fwd); !ok {
		return resp
	}
	if !d.leaseValid() {
		return d.noLease()
	}
	d.countOnce(claims, req, t)
	return wire.Response{Epoch: t.epoch}
}

// secondaryFailed chooses the client's answer when the secondary did not take a write. What
// the client can act on passes through (its token, its layout, space); anything else is
// StatusRetry: the write is not acknowledged with one replica.
func (d *DataServer) secondaryFailed(t target, sec layout.Member, resp wire.Response, err error) wire.Response {
	st, isStatus := wire.StatusOf(err)
	switch {
	case isStatus && st == wire.StatusStaleEpoch:
		return statusResp(wire.StatusStaleEpoch, resp.Epoch, fmt.Sprintf("secondary SDS %d: %s", sec.SDSID, resp.Data))
	case isStatus && (st == wire.StatusExpired || st == wire.StatusRevoked || st == wire.StatusReadOnly || st == wire.StatusNoSpace):
		return statusResp(st, t.epoch, fmt.Sprintf("secondary SDS %d: %s", sec.SDSID, resp.Data))
	}
	d.log.Warn("secondary did not take a write; not acknowledged", "volume", t.key.VolumeID, "chunk", t.key.Chunk,
		"secondary", sec.SDSID, "addr", sec.Addr, "error", err)
	return statusResp(wire.StatusRetry, t.epoch, fmt.Sprintf("secondary SDS %d at %s: %v", sec.SDSID, sec.Addr, err))
}

// applyReplica applies a write forwarded by the chunk's primary. The primary holds the chunk's
// lock until this answers, so the chunk lock is not taken here (that could deadlock two SDSs
// that are each other's secondary); the copy lock, held for the local write alone, orders it
// against a forward the primary gave up on (inOrder).
func (d *DataServer) applyReplica(ctx context.Context, claims token.Claims, req *wire.Request, t target, w peerWrite) wire.Response {
	if ctx.Err() != nil {
		// The primary's connection is gone: it has already answered its client.
		return statusResp(wire.StatusRetry, t.epoch, "connection closing")
	}
	if stall := d.stallReplica.Load(); stall != nil {
		(*stall)(req)
	}
	mu := d.copyLock(t.key)
	mu.Lock()
	resp, ok := d.inOrder(t, w)
	var err error
	if ok {
		err = d.applyLocked(req, t)
	}
	mu.Unlock()
	if !ok {
		return resp
	}
	if err != nil {
		d.log.Error("replica write failed", "op", req.Op.String(), "volume", t.key.VolumeID, "chunk", t.key.Chunk, "error", err)
		return statusResp(storeStatus(err), t.epoch, err.Error())
	}
	// Always applied, even when already recorded: the primary orders the writes of a chunk, and a
	// replay (below) carries the primary's current bytes.
	d.writeIDs.add(claims.SDCID, req.Tag, t.key, t.span())
	if d.unrepl.has(t.key) {
		d.unrepl.clear(t.key) // left from when this SDS was primary: the primary decides now
	}
	if req.Flags&wire.FlagResync == 0 { // a re-sync of unreplicated bytes is no client IO
		d.countOnce(claims, req, t)
	}
	return wire.Response{Epoch: t.epoch}
}

// inOrder decides, under t's copy lock, whether w, a replica or rebuild write resolved as t, may
// be applied now: the chunk must still be at the epoch it was resolved at (while it waited the
// layout may have moved on, and a new primary written the chunk), and no newer write from its
// primary may have been applied before it (replicaorder.go).
func (d *DataServer) inOrder(t target, w peerWrite) (wire.Response, bool) {
	if l := d.layouts.snapshot(t.key.VolumeID); l != nil {
		if e := l.ChunkEpoch(t.key.Chunk); e > t.epoch {
			return statusResp(wire.StatusStaleEpoch, e, fmt.Sprintf("chunk %d moved to epoch %d while a write of epoch %d waited", t.key.Chunk, e, t.epoch)), false
		}
	}
	if err := d.order.admit(t.key, w); err != nil {
		d.log.Warn("replica write out of order; not applied", "volume", t.key.VolumeID, "chunk", t.key.Chunk, "error", err)
		return statusResp(wire.StatusRetry, t.epoch, err.Error()), false
	}
	return wire.Response{}, true
}

// peerWrite is who sent req on this connection (replicaorder.go).
func (cs *connState) peerWrite(req *wire.Request) peerWrite {
	if h := cs.from.Load(); h != nil {
		return peerWrite{from: *h, seq: req.ID}
	}
	return peerWrite{}
}

// countOnce counts a write in the ledger unless this copy already counted it (a replay of an
// earlier attempt; writeIDs.firstCount): each copy counts each write once, however often the
// SDC sent it.
func (d *DataServer) countOnce(claims token.Claims, req *wire.Request, t target) {
	if d.writeIDs.firstCount(claims.SDCID, req.Tag, t.key, t.span()) {
		d.count(claims, req, t)
	}
}

// count records a successful write-type op in the token ledger and the counters.
func (d *DataServer) count(claims token.Claims, req *wire.Request, t target) {
	var bytes int64
	switch req.Op {
	case wire.OpWrite:
		d.stats.writes.Add(1)
		bytes = t.length
	case wire.OpReplWrite:
		d.stats.replWrites.Add(1)
		bytes = t.length
	default:
		d.stats.trims.Add(1)
	}
	if d.acks != nil {
		d.acks.record(claims, 0, bytes, true)
	}
}

// learned drops the copies l no longer places here and allocates, for a thick volume, every
// chunk this SDS holds a copy of.
func (d *DataServer) learned(l *layout.Layout) {
	// Roles or copies may have moved: grants are asked for again under the new layout.
	d.grants.revoke(func(g *readGrant) bool { return g.key.VolumeID == l.VolumeID })
	d.dirty.seen(l)
	d.dropSuperseded(l)
	if !l.Thick {
		return
	}
	self := d.cfg.SelfID()
	if self == 0 {
		return
	}
	var mine []int64
	for c := range l.Chunks() {
		for _, id := range l.Replicas(c) {
			if id == self {
				mine = append(mine, c)
			}
		}
	}
	if err := d.cfg.Store.Allocate(l.VolumeID, mine, l.ChunkSize, l.Epoch); err != nil {
		d.log.Error("thick volume: allocating its chunks failed", "volume", l.VolumeID, "chunks", len(mine), "error", err)
		return
	}
	d.log.Debug("thick volume: chunks allocated", "volume", l.VolumeID, "chunks", len(mine))
}
