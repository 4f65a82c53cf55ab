package sds

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"pflex/internal/shm"
	"pflex/internal/token"
	"pflex/internal/wire"
)

// DefaultReplicaTimeout bounds one forwarded write, its AUTH included.
const DefaultReplicaTimeout = 5 * time.Second

// replicaPool holds the SDS -> SDS connections a primary forwards writes on: one per
// (secondary address, SDC), so that each forwarded write travels under its own client's token
// (the secondary counts it in that token's ledger) and SDCs writing the same volume do not take
// turns re-authenticating a shared connection.
type replicaPool struct {
	opts    wire.ClientOptions
	timeout time.Duration
	peer    func(ttl time.Duration) (token.Token, error) // signs the PEER_AUTH token (nil: none)
	self    func() int64                                 // this SDS's id, named in PEER_AUTH (0: none yet)
	// ids numbers the requests of every connection of the pool (opts.IDs), and run names this
	// process: a secondary orders a chunk's replica writes by them (replicaorder.go).
	ids atomic.Uint64
	run uint64

	mu     sync.Mutex
	conns  map[replicaKey]*replicaConn
	closed bool

	shmForwards atomic.Int64 // forwards sent as a shared-memory reference
	// shmOff: secondaries that closed the connection on OpShmAttach (a version without shared
	// memory), with the time until which they get bytes only.
	shmOff map[string]time.Time
}

type replicaKey struct {
	addr string
	sdc  int64
}

// replicaConn is one connection and the token registered on it per volume.
type replicaConn struct {
	c      *wire.Conn
	peered bool // PEER_AUTH was taken (false: the secondary closed on it, as older versions do)

	mu   sync.Mutex
	vols map[int64]*volAuth
	shm  map[uint64]bool // shared regions: attached on this connection (true) or refused (false)

	shmMu sync.Mutex // serialises OpShmAttach (once per region)
}

// volAuth is the token registered for a volume on a replicaConn. Forwarded writes hold mu for
// reading while in flight; switching the token (a renewal) takes it for writing, so no write is
// in flight under the old token when the new one is registered and every write is counted under
// the token it came with.
type volAuth struct {
	mu      sync.RWMutex
	tokenID uint64
	ok      bool
}

func newReplicaPool(opts wire.ClientOptions, timeout time.Duration, peer func(time.Duration) (token.Token, error), self func() int64) *replicaPool {
	p := &replicaPool{opts: opts, timeout: timeout, peer: peer, self: self, conns: map[replicaKey]*replicaConn{}, shmOff: map[string]time.Time{}}
	p.opts.IDs, p.run = &p.ids, rand.Uint64() // a run needs to differ, not to be secret
	return p
}

// peerTokenTTL: the Peer token is checked once, when the connection begins.
const peerTokenTTL = time.Minute

// dial connects to an SDS and presents this SDS's Peer token; peered tells whether it was
// taken. An SDS of a version without OpPeerAuth closes the connection on it (it takes replica
// writes without one): the dial is then repeated without it, so a rolling upgrade keeps
// replicating. Should a current SDS have closed it instead (the connection failed just then),
// its refusal of the first replica write drops the connection (forwardFrom), and the next
// dial presents the token again.
func (p *replicaPool) dial(ctx context.Context, addr string) (c *wire.Conn, peered bool, err error) {
	c, err = wire.Dial(ctx, addr, p.opts)
	if err != nil || p.peer == nil {
		return c, false, err
	}
	t, err := p.peer(peerTokenTTL)
	if err != nil {
		c.Close()
		return nil, false, fmt.Errorf("sign a peer token: %w", err)
	}
	req := wire.Request{Op: wire.OpPeerAuth, Data: t.Bytes()}
	if id := p.self(); id > 0 {
		req = wire.PeerHello{SDSID: id, Run: p.run}.Request(t.Bytes())
	}
	_, err = c.Do(ctx, req)
	if err == nil {
		return c, true, nil
	}
	c.Close()
	if _, isStatus := wire.StatusOf(err); isStatus || ctx.Err() != nil {
		return nil, false, fmt.Errorf("peer authentication with %s: %w", addr, err)
	}
	c, err = wire.Dial(ctx, addr, p.opts)
	return c, false, err
}

// conn returns a live connection for k, dialing if needed.
func (p *replicaPool) conn(ctx context.Context, k replicaKey) (*replicaConn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, wire.ErrClosed
	}
	rc := p.conns[k]
	if rc != nil && rc.c.Err() == nil {
		p.mu.Unlock()
		return rc, nil
	}
	delete(p.conns, k)
	p.mu.Unlock()

	c, peered, err := p.dial(ctx, k.addr)
	if err != nil {
		return nil, err
	}
	rc = &replicaConn{c: c, peered: peered, vols: map[int64]*volAuth{}, shm: map[uint64]bool{}}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return nil, wire.ErrClosed
	}
	if cur := p.conns[k]; cur != nil && cur.c.Err() == nil {
		c.Close() // another request dialed first
		return cur, nil
	}
	p.conns[k] = rc
	return rc, nil
}

// drop closes rc and forgets it. Used after a forward timed out or failed in transit: the
// secondary may still be applying that write, and a write that follows must not overtake it on
// the same connection.
func (p *replicaPool) drop(k replicaKey, rc *replicaConn) {
	p.mu.Lock()
	if p.conns[k] == rc {
		delete(p.conns, k)
	}
	p.mu.Unlock()
	rc.c.Close()
}

func (p *replicaPool) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[replicaKey]*replicaConn{}
	p.mu.Unlock()
	for _, rc := range conns {
		rc.c.Close()
	}
}

func (rc *replicaConn) vol(id int64) *volAuth {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	va := rc.vols[id]
	if va == nil {
		va = &volAuth{}
		rc.vols[id] = va
	}
	return va
}

// forward sends req to the secondary at addr under tok and waits for its answer. The token is
// registered on the connection first when it is not the one registered there, and once more if
// the secondary answers Auth or Expired (it restarted, or its cache re-verified and refused).
func (p *replicaPool) forward(ctx context.Context, addr string, tok token.Token, req wire.Request) (wire.Response, error) {
	return p.forwardFrom(ctx, addr, tok, req, nil)
}

// forwardFrom is forward for a write whose data lies in a shared region (src, or nil): when the
// secondary can map that region too (same host), the write goes as a reference to it.
func (p *replicaPool) forwardFrom(ctx context.Context, addr string, tok token.Token, req wire.Request, src *shmSource) (wire.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	k := replicaKey{addr: addr, sdc: tok.Claims.SDCID}
	rc, err := p.conn(ctx, k)
	if err != nil {
		return wire.Response{}, err
	}
	if src != nil && req.Op == wire.OpReplWrite && p.shmAttached(ctx, k.addr, rc, src.m) {
		req.Op, req.Data = wire.OpShmReplWrite, src.ref.Encode()
		p.shmForwards.Add(1)
	}
	va := rc.vol(req.VolumeID)
	reauthed := false
	for {
		va.mu.RLock()
		if !va.ok || va.tokenID != tok.Claims.TokenID {
			va.mu.RUnlock()
			if resp, err := p.auth(ctx, rc, va, tok, req.VolumeID); err != nil {
				if _, isStatus := wire.StatusOf(err); !isStatus {
					p.drop(k, rc)
				}
				return resp, fmt.Errorf("auth on secondary %s: %w", addr, err)
			}
			continue
		}
		resp, err := rc.c.Do(ctx, req)
		va.mu.RUnlock()
		st, isStatus := wire.StatusOf(err)
		switch {
		case err == nil:
			return resp, nil
		case !isStatus:
			p.drop(k, rc)
			return resp, err
		case st == wire.StatusAuth && !rc.peered && p.peer != nil:
			p.drop(k, rc) // maybe a current SDS that wants PEER_AUTH: the next dial presents it
			return resp, err
		case (st == wire.StatusAuth || st == wire.StatusExpired) && !reauthed:
			reauthed = true
			va.mu.Lock()
			if va.tokenID == tok.Claims.TokenID {
				va.ok = false
			}
			va.mu.Unlock()
			continue
		}
		return resp, err
	}
}

// dropRegion closes the connections that attached region id (its owner is gone). A forward in
// flight on one of them fails like any lost forward: its write is answered Retry and retried.
func (p *replicaPool) dropRegion(id uint64) {
	p.mu.Lock()
	var drop []*replicaConn
	for k, rc := range p.conns {
		rc.mu.Lock()
		attached := rc.shm[id]
		rc.mu.Unlock()
		if attached {
			delete(p.conns, k)
			drop = append(drop, rc)
		}
	}
	p.mu.Unlock()
	for _, rc := range drop {
		rc.c.Close()
	}
}

// shmAttached reports whether m's region is attached on rc, attaching it the first time. A
// secondary that cannot map it (another host, shared memory off) is asked once per connection.
func (p *replicaPool) shmAttached(ctx context.Context, addr string, rc *replicaConn, m *shm.Mapping) bool {
	id := m.Desc().ID
	rc.mu.Lock()
	ok, known := rc.shm[id]
	rc.mu.Unlock()
	if known {
		return ok
	}
	p.mu.Lock()
	off := time.Now().Before(p.shmOff[addr])
	p.mu.Unlock()
	if off {
		return false
	}
	rc.shmMu.Lock()
	defer rc.shmMu.Unlock()
	rc.mu.Lock()
	ok, known = rc.shm[id]
	rc.mu.Unlock()
	if known {
		return ok
	}
	desc, _ := m.Desc().MarshalBinary()
	// FlagReplica: passed on for its owner, who is not this connection's peer.
	_, err := rc.c.Do(ctx, wire.Request{Op: wire.OpShmAttach, Flags: wire.FlagReplica, Data: desc})
	if _, isStatus := wire.StatusOf(err); err != nil && !isStatus {
		// The connection failed (the forward finds out and drops it); if the secondary closed
		// it over this opcode, asking again on every new connection would fail every write.
		p.mu.Lock()
		p.shmOff[addr] = time.Now().Add(shm.RefusedRetryAfter)
		p.mu.Unlock()
		return false
	}
	rc.mu.Lock()
	rc.shm[id] = err == nil
	rc.mu.Unlock()
	return err == nil
}

// auth registers tok for volumeID on rc, unless a concurrent forward already did.
func (p *replicaPool) auth(ctx context.Context, rc *replicaConn, va *volAuth, tok token.Token, volumeID int64) (wire.Response, error) {
	va.mu.Lock()
	defer va.mu.Unlock()
	if va.ok && va.tokenID == tok.Claims.TokenID {
		return wire.Response{}, nil
	}
	va.ok = false
	resp, err := rc.c.Do(ctx, wire.Request{Op: wire.OpAuth, VolumeID: volumeID, Data: tok.Bytes()})
	if err != nil {
		return resp, err
	}
	va.ok, va.tokenID = true, tok.Claims.TokenID
	return resp, nil
}

// Errors of the data path.
var (
	// errNoSecondary: the layout names no address for the secondary.
	errNoSecondary = errors.New("no secondary for the chunk")
	// errNotRegistered: the SDS has no id from the MDM yet.
	errNotRegistered = errors.New("this SDS is not registered with the MDM yet")
)
