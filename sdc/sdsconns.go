package sdc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"pflex/internal/reach"
	"pflex/internal/shm"
	"pflex/internal/wire"
)

// SDSConns holds one wire connection per SDS data address, shared by every volume and
// goroutine (the connection pipelines). A failed connection is replaced on the next use; the
// tokens registered on it (OpAuth) are registered again on the new one.
type SDSConns struct {
	opts        wire.ClientOptions
	dialTimeout time.Duration
	shm         *shm.Region   // write payloads SDSs on this host can map; nil: off
	localReads  bool          // ask SDSs that map shm for read grants (localread.go)
	reach       *reach.Prober // which SDS addresses answer probes (relay.go); nil: not probed
	stopProbes  context.CancelFunc

	mu     sync.Mutex
	addrs  map[string]*sdsEndpoint
	dials  int64 // connections made, for /status
	closed bool  // Close was called: no more connections
}

// sdsEndpoint is one SDS address; mu serialises dialing so concurrent IO makes one connection.
type sdsEndpoint struct {
	addr string

	mu       sync.Mutex
	conn     *sdsConn
	failedAt time.Time // last failed dial
	failErr  error
	// shmOffUntil: the SDS closed the connection on OpShmAttach (a version without shared
	// memory): connections made before this time do not offer the region.
	shmOffUntil time.Time
}

// sdsConn is one connection and the token registered on it for each volume.
type sdsConn struct {
	c     *wire.Conn
	shm   bool        // the SDS has mapped the pool's shared region (set before the conn is shared)
	local *localReads // read grants from this SDS (nil: none asked for)

	authMu sync.Mutex // serialises OpAuth on this connection (rare: once per token)
	mu     sync.Mutex
	authed map[int64]*issuedToken
}

var errConnsClosed = errors.New("the SDC is stopping: no new SDS connections")

// redialHold is how long a failed dial is remembered: IO retrying against a dead SDS backs off
// anyway, and this keeps a burst of requests from each dialing it.
const redialHold = 20 * time.Millisecond

// NewSDSConns returns an empty pool. region (nil: none) is offered to every SDS it connects
// to; those on this host map it and take write payloads from it.
func NewSDSConns(opts wire.ClientOptions, region *shm.Region) *SDSConns {
	return &SDSConns{opts: opts, dialTimeout: 2 * time.Second, addrs: map[string]*sdsEndpoint{}, shm: region}
}

// get returns a live connection to addr, dialing if there is none.
func (p *SDSConns) get(ctx context.Context, addr string) (*sdsConn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errConnsClosed
	}
	ep := p.addrs[addr]
	if ep == nil {
		ep = &sdsEndpoint{addr: addr}
		p.addrs[addr] = ep
	}
	p.mu.Unlock()

	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.conn != nil && ep.conn.c.Err() == nil {
		return ep.conn, nil
	}
	if ep.failErr != nil && time.Since(ep.failedAt) < redialHold {
		return nil, ep.failErr
	}
	dctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
	defer cancel()
	c, err := wire.Dial(dctx, addr, p.opts)
	if err != nil {
		ep.conn, ep.failErr, ep.failedAt = nil, err, time.Now()
		return nil, err
	}
	ep.failErr = nil
	if old := ep.conn; old != nil && old.local != nil {
		old.local.close()
	}
	sc := &sdsConn{c: c, authed: map[int64]*issuedToken{}}
	if p.shm != nil && time.Now().After(ep.shmOffUntil) && !p.attachShm(dctx, sc) {
		ep.shmOffUntil = time.Now().Add(shm.RefusedRetryAfter)
	}
	if sc.shm && p.localReads {
		sc.local = newLocalReads(p.shm, sc, p.opts.Logger)
		sc.local.conns, sc.local.addr = p, addr
	}
	ep.conn = sc
	p.mu.Lock()
	p.dials++
	p.mu.Unlock()
	return ep.conn, nil
}

// Dials is how many connections the pool has made.
func (p *SDSConns) Dials() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dials
}

// endpoints returns the pool's endpoints (each to be used under its own mu).
func (p *SDSConns) endpoints() []*sdsEndpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	eps := make([]*sdsEndpoint, 0, len(p.addrs))
	for _, ep := range p.addrs {
		eps = append(eps, ep)
	}
	return eps
}

// Forget drops what every connection remembers about volumeID (the volume was unmapped).
func (p *SDSConns) Forget(volumeID int64) {
	for _, ep := range p.endpoints() {
		ep.mu.Lock()
		if c := ep.conn; c != nil {
			c.forget(volumeID)
			if c.local != nil {
				c.local.forget(volumeID)
			}
		}
		ep.mu.Unlock()
	}
}

// Close reports the reads done under grants (bounded by a second) and closes every connection.
func (p *SDSConns) Close() {
	if p.stopProbes != nil {
		p.stopProbes()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, ep := range p.endpoints() {
		ep.mu.Lock()
		c := ep.conn
		ep.mu.Unlock()
		if c != nil && c.local != nil {
			c.local.close()
			c.local.report(ctx, true)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, ep := range p.addrs {
		ep.mu.Lock()
		if ep.conn != nil {
			ep.conn.c.Close()
		}
		ep.mu.Unlock()
	}
}

// auth registers t for volumeID on the connection unless it is already registered.
func (sc *sdsConn) auth(ctx context.Context, volumeID int64, t *issuedToken) error {
	sc.mu.Lock()
	done := sc.authed[volumeID] == t
	sc.mu.Unlock()
	if done {
		return nil
	}
	sc.authMu.Lock()
	defer sc.authMu.Unlock()
	sc.mu.Lock()
	done = sc.authed[volumeID] == t
	sc.mu.Unlock()
	if done {
		return nil
	}
	if _, err := sc.c.Do(ctx, wire.Request{Op: wire.OpAuth, VolumeID: volumeID, Data: t.bytes}); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	sc.mu.Lock()
	sc.authed[volumeID] = t
	sc.mu.Unlock()
	return nil
}

// token is the token registered on the connection for volumeID (nil: none).
func (sc *sdsConn) token(volumeID int64) *issuedToken {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.authed[volumeID]
}

// forget makes the next IO of volumeID register its token again (the SDS said it has none).
func (sc *sdsConn) forget(volumeID int64) {
	sc.mu.Lock()
	delete(sc.authed, volumeID)
	sc.mu.Unlock()
}

// attachShm offers the pool's shared region to the SDS behind sc; sc.shm says whether it took
// it (same host, shared memory on there). One round trip per connection. It returns false when
// the connection failed instead of answering: the IO in progress fails over to a new
// connection, which must not offer the region again for a while.
func (p *SDSConns) attachShm(ctx context.Context, sc *sdsConn) bool {
	desc, _ := p.shm.Desc().MarshalBinary()
	_, err := sc.c.Do(ctx, wire.Request{Op: wire.OpShmAttach, Data: desc})
	sc.shm = err == nil
	_, isStatus := wire.StatusOf(err)
	return err == nil || isStatus
}
