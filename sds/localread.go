package sds

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"pflex/internal/shm"
	"pflex/internal/token"
	"pflex/internal/wire"
	"pflex/sds/chunkstore"
)

// Local reads (DESIGN.md "Local reads"): an SDC on this host that has attached its region may
// ask for a read grant on a chunk this SDS is primary for. The grant names the chunk's extent
// on a device, which the SDC then reads itself (opening the device through /proc), and its
// state is an entry in the SDC's region that this SDS keeps current: odd while the chunk is
// written, revoked (generation 0) the moment anything the grant relied on changes, expired
// when the lease or the token ends. The SDC checks the entry before and after each read, so a
// read that overlapped any of this is done again over the socket.

// DefaultReadGrantTTL is how far a grant reaches when there is no lease to bound it (tests).
const DefaultReadGrantTTL = 10 * time.Second

// grantExtendEvery is how often the grants' expiries are moved on with the lease.
const grantExtendEvery = 200 * time.Millisecond

// maxGrantsConn bounds the grants of one connection (the SDC's table has this many entries).
const maxGrantsConn = shm.GrantEntries

// One read report covers half a second of an SDC's local reads of a volume. Reports beyond these
// bounds are refused, so that no SDC can send the ledger counts that are not IO (a wrapped
// negative, or a sum past what the MDM accepts); both are far beyond what can be read in one.
const (
	maxReportOps   = 1 << 32
	maxReportBytes = 1 << 40
)

// readGrants is the grants this SDS keeps. Every change of an entry happens under mu, so that
// one removed here (revoked) is never touched again, and its connection can unmap the region.
// mu is a leaf: nothing else is locked, and the store is not called, while it is held.
type readGrants struct {
	n  atomic.Int64 // grants held: writes skip mu while there are none
	mu sync.Mutex
	by map[chunkstore.Key][]*readGrant
}

// readGrant is one grant: chunk key, to the connection cs, on the entry at off in its region.
type readGrant struct {
	key      chunkstore.Key
	cs       *connState
	off      uint64
	e        *shm.GrantEntry
	tokenExp int64 // unix ms: the expiry of the token registered for the volume on cs
}

// add records g (replacing the grant cs had on the same entry) and starts it as generation gen,
// valid until expires; false: the connection holds too many grants.
func (rg *readGrants) add(g *readGrant, gen uint32, expires int64) bool {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	if old := g.cs.grants[g.off]; old != nil {
		rg.remove(old)
	} else if len(g.cs.grants) >= maxGrantsConn {
		return false
	}
	if rg.by == nil {
		rg.by = map[chunkstore.Key][]*readGrant{}
	}
	rg.by[g.key] = append(rg.by[g.key], g)
	g.cs.grants[g.off] = g
	rg.n.Add(1)
	g.e.Grant(gen, expires)
	return true
}

// remove forgets g without touching its entry. Under mu.
func (rg *readGrants) remove(g *readGrant) {
	list := rg.by[g.key]
	for i, x := range list {
		if x == g {
			list[i] = list[len(list)-1]
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(rg.by, g.key)
	} else {
		rg.by[g.key] = list
	}
	delete(g.cs.grants, g.off)
	rg.n.Add(-1)
}

// revoke ends and forgets every grant for which drop is true.
func (rg *readGrants) revoke(drop func(*readGrant) bool) {
	if rg.n.Load() == 0 {
		return
	}
	rg.mu.Lock()
	defer rg.mu.Unlock()
	for k := range rg.by {
		rg.revokeLocked(k, drop)
	}
}

// revokeKey ends the grants on chunk k.
func (rg *readGrants) revokeKey(k chunkstore.Key) {
	if rg.n.Load() == 0 {
		return
	}
	rg.mu.Lock()
	defer rg.mu.Unlock()
	rg.revokeLocked(k, nil)
}

// revokeLocked ends and forgets the grants on chunk k for which drop is true (nil: all).
// Under mu.
func (rg *readGrants) revokeLocked(k chunkstore.Key, drop func(*readGrant) bool) {
	for _, g := range slices.Clone(rg.by[k]) {
		if drop == nil || drop(g) {
			g.e.Revoke()
			rg.remove(g)
		}
	}
}

// begin marks chunk k as being written (its entries odd); called under the chunk's write
// lock, so no grant on k is added until the matching end.
func (rg *readGrants) begin(k chunkstore.Key) { rg.each(k, func(e *shm.GrantEntry) { e.Begin() }) }

// end closes what begin opened, still under the chunk's lock. With revoke, the grants end
// instead (the write changed where the chunk is, or left it unreplicated).
func (rg *readGrants) end(k chunkstore.Key, revoke bool) {
	if revoke {
		rg.revokeKey(k)
		return
	}
	rg.each(k, func(e *shm.GrantEntry) { e.End() })
}

// each calls f on the entry of every grant on chunk k, under mu (skipped while none is held).
func (rg *readGrants) each(k chunkstore.Key, f func(*shm.GrantEntry)) {
	if rg.n.Load() == 0 {
		return
	}
	rg.mu.Lock()
	for _, g := range rg.by[k] {
		f(g.e)
	}
	rg.mu.Unlock()
}

// tokenRenewed moves the token expiry of cs's grants on volume vol to expMs (a new token was
// registered on the connection).
func (rg *readGrants) tokenRenewed(cs *connState, vol, expMs int64) {
	if rg.n.Load() == 0 {
		return
	}
	rg.mu.Lock()
	defer rg.mu.Unlock()
	for _, g := range cs.grants {
		if g.key.VolumeID == vol {
			g.tokenExp = expMs
		}
	}
}

// extend sets every grant's expiry to what it may be: at most ttl after mono (the monotonic
// time taken before ttl was), and never past its token (now: wall time at mono).
func (rg *readGrants) extend(mono int64, ttl time.Duration, now time.Time) {
	if rg.n.Load() == 0 {
		return
	}
	rg.mu.Lock()
	defer rg.mu.Unlock()
	for _, list := range rg.by {
		for _, g := range list {
			left := min(ttl, time.UnixMilli(g.tokenExp).Sub(now))
			g.e.Extend(mono + int64(left))
		}
	}
}

// extendGrants moves the grants' expiries on with the lease (every grantExtendEvery), so that
// a grant lasts as long as the lease and the token do, without the SDC asking again: the lease
// (2 s by default) would otherwise end every grant within seconds.
func (d *DataServer) extendGrants() {
	// The clocks first, the lease after: a pause in between can only shorten the expiry.
	mono, now := shm.Now(), d.cfg.Now()
	if ttl := d.leaseTTL(); ttl > 0 {
		d.grants.extend(mono, ttl, now)
	}
}

// count is the number of grants held.
func (rg *readGrants) count() int { return int(rg.n.Load()) }

// grantRead answers OpReadGrant: the chunk at req.Offset of req.VolumeID, for the entry the
// payload names in the connection's region, under the same checks as a READ (token, lease,
// layout epoch, primary), for an allocated chunk with no unreplicated writes.
func (d *DataServer) grantRead(ctx context.Context, cs *connState, req *wire.Request) wire.Response {
	if !d.cfg.LocalReads || d.cfg.SharedMemory == nil {
		return statusResp(wire.StatusProto, 0, "local reads are off on this SDS")
	}
	gr, err := wire.DecodeGrantRequest(req.Data)
	if err != nil {
		return statusResp(wire.StatusProto, 0, err.Error())
	}
	ref := gr.Entry
	cs.mu.Lock()
	m, owner := cs.regions[ref.Region], cs.clients[ref.Region]
	cs.mu.Unlock()
	if m == nil || !owner {
		return statusResp(wire.StatusProto, 0, fmt.Sprintf("shared region %x is not attached by its owner on this connection", ref.Region))
	}
	e, err := m.GrantEntry(ref.Offset)
	if err != nil || ref.Length != shm.GrantEntrySize {
		return statusResp(wire.StatusProto, 0, fmt.Sprintf("grant entry [%d, +%d) is not one of the region's entries", ref.Offset, ref.Length))
	}
	// The clocks before the lease and token are read: the expiry is counted from here, so a
	// pause (or a layout fetch) before the grant is made can only shorten it.
	mono, now := shm.Now(), d.cfg.Now()
	claims, err := cs.cache.Authorize(req.VolumeID, false, now)
	if err != nil {
		return statusResp(tokenStatus(err), 0, err.Error())
	}
	self := d.cfg.SelfID()
	if self == 0 {
		return statusResp(wire.StatusRetry, 0, "this SDS is not registered with the MDM yet")
	}
	ttl := d.grantTTL(claims, now)
	if ttl <= 0 {
		return d.noLease()
	}
	r := wire.Request{Op: wire.OpRead, VolumeID: req.VolumeID, Offset: req.Offset, Length: 1, Epoch: req.Epoch}
	t, resp, ok := d.resolve(ctx, &r)
	if !ok {
		return resp
	}
	if len(t.replicas) == 0 || t.replicas[0] != self {
		return statusResp(wire.StatusNotPrimary, t.epoch, fmt.Sprintf("SDS %d is not the primary of chunk %d (replicas %v)", self, t.key.Chunk, t.replicas))
	}
	mu := d.lock(t.key)
	mu.Lock() // no write of the chunk in progress, none starts until the grant is in place
	defer mu.Unlock()
	if d.unrepl.has(t.key) {
		return statusResp(wire.StatusRetry, t.epoch, fmt.Sprintf("chunk %d has writes its other replicas lack", t.key.Chunk))
	}
	// Under the lock: a primary's chunk is freed (a whole-chunk TRIM, a dropped copy) only
	// under it, so the extent stays the chunk's until the grant is in place (then OnFree).
	ext, ok := d.cfg.Store.Locate(t.key)
	if !ok || ext.Size != t.l.ChunkSize {
		return statusResp(wire.StatusRetry, t.epoch, fmt.Sprintf("chunk %d holds no data here yet: read it over the connection", t.key.Chunk))
	}
	if !d.grants.add(&readGrant{key: t.key, cs: cs, off: ref.Offset, e: e, tokenExp: claims.ExpiresAt}, gr.Gen, mono+int64(ttl)) {
		return statusResp(wire.StatusRetry, t.epoch, fmt.Sprintf("%d read grants on this connection already", maxGrantsConn))
	}
	d.stats.grants.Add(1)
	return wire.Response{Epoch: t.epoch, Data: wire.ReadGrant{PID: uint32(ext.PID), FD: uint32(ext.FD),
		Dev: ext.Dev, Ino: ext.Ino, Offset: ext.Off, Size: ext.Size}.Encode()}
}

// grantTTL is how long a grant made now may last: no longer than the lease (after which the
// MDM may move the chunk) or the token. <= 0: no grant.
func (d *DataServer) grantTTL(c token.Claims, now time.Time) time.Duration {
	return min(d.leaseTTL(), time.UnixMilli(c.ExpiresAt).Sub(now))
}

// leaseTTL is how much longer a grant may reach by the lease alone (<= 0: none).
func (d *DataServer) leaseTTL() time.Duration {
	if d.cfg.LeaseRemaining != nil {
		return d.cfg.LeaseRemaining()
	}
	if !d.leaseValid() {
		return 0
	}
	return DefaultReadGrantTTL
}

// readReport enters the reads an SDC did under this SDS's grants in the token ledger, under
// the token the connection holds for the volume, as if this SDS had served them.
func (d *DataServer) readReport(cs *connState, req *wire.Request) wire.Response {
	rep, err := wire.DecodeReadReport(req.Data)
	if err != nil {
		return statusResp(wire.StatusProto, 0, err.Error())
	}
	cs.mu.Lock()
	tok, ok := cs.tokens[req.VolumeID]
	cs.mu.Unlock()
	if !ok {
		return statusResp(wire.StatusAuth, 0, fmt.Sprintf("no token registered for volume %d on this connection", req.VolumeID))
	}
	if rep.Ops > maxReportOps || rep.Bytes > maxReportBytes {
		return statusResp(wire.StatusProto, 0, fmt.Sprintf("read report of %d reads and %d bytes: one report holds at most %d reads and %d bytes", rep.Ops, rep.Bytes, uint64(maxReportOps), uint64(maxReportBytes)))
	}
	if !d.reports.first(tok.Claims.SDCID, rep.ID, d.cfg.Now()) {
		return wire.Response{} // counted when it first came; its answer was lost
	}
	d.stats.localReads.Add(int64(rep.Ops))
	d.stats.localReadBytes.Add(int64(rep.Bytes))
	if d.acks != nil {
		d.acks.add(tok.Claims, int64(rep.Ops), int64(rep.Bytes), 0, 0)
	}
	return wire.Response{}
}
