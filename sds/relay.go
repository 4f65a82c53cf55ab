package sds

import (
	"context"
	"fmt"

	"pflex/internal/wire"
)

// Relayed IO (sdc/DESIGN.md "Relayed IO"). An SDC that cannot reach a chunk's primary sends the
// request flagged FlagRelay to the chunk's secondary, or, when it cannot reach that either or
// the chunk has one copy in service, to another SDS of the volume's layout. That SDS passes it on
// to the primary over its own peer connection, under the client's token, and answers with the
// primary's answer. The primary serves it as any client request: it orders the write, writes locally,
// forwards to the secondary and counts it in the token's ledger. The relaying SDS counts
// nothing, so the ledger sees each IO once. A relay that cannot reach the primary either is
// answered Retry, and the SDC goes on as for any unreachable SDS.

// relay serves a FlagRelay READ, WRITE, TRIM or WRITE_ZEROES of chunk t. Called after the
// request's token, lease and epoch were checked.
func (d *DataServer) relay(ctx context.Context, cs *connState, req *wire.Request, t target) wire.Response {
	// Any SDS in service in the volume's layout may relay: it only passes the request on, and
	// the primary checks it again. One taken out of the layout has no lease to lend it.
	self := d.cfg.SelfID()
	if _, member := t.l.Member(self); !member || t.l.IsExcluded(self) {
		return statusResp(wire.StatusNotPrimary, t.epoch, fmt.Sprintf("SDS %d relays only IO of volumes whose layout it serves in; volume %d's epoch %d does not have it", self, req.VolumeID, t.l.Epoch))
	}
	if len(t.replicas) == 0 {
		return statusResp(wire.StatusRetry, t.epoch, fmt.Sprintf("chunk %d has no copy in service", t.key.Chunk))
	}
	m, ok := t.l.Member(t.replicas[0])
	if !ok || m.Addr == "" {
		return statusResp(wire.StatusRetry, t.epoch, fmt.Sprintf("no address for SDS %d, primary of chunk %d", t.replicas[0], t.key.Chunk))
	}
	return d.relayTo(ctx, cs, req, t.replicas[0], m.Addr)
}

// relayFlush serves a FlagRelay FLUSH: the SDS whose id is in Offset, a member of the volume's
// layout, flushes.
func (d *DataServer) relayFlush(ctx context.Context, cs *connState, req *wire.Request) wire.Response {
	if _, err := cs.cache.Authorize(req.VolumeID, false, d.cfg.Now()); err != nil {
		return statusResp(tokenStatus(err), 0, err.Error())
	}
	if req.Offset == d.cfg.SelfID() {
		return d.flush()
	}
	l, err := d.layouts.get(ctx, req.VolumeID)
	if err != nil {
		return statusResp(wire.StatusRetry, 0, err.Error())
	}
	m, ok := l.Member(req.Offset)
	if !ok || m.Addr == "" {
		return statusResp(wire.StatusStaleEpoch, l.Epoch, fmt.Sprintf("SDS %d is not in volume %d's layout", req.Offset, req.VolumeID))
	}
	return d.relayTo(ctx, cs, req, req.Offset, m.Addr)
}

// relayTo passes req on to the SDS id at addr under the token the client registered on cs.
func (d *DataServer) relayTo(ctx context.Context, cs *connState, req *wire.Request, id int64, addr string) wire.Response {
	cs.mu.Lock()
	tok, ok := cs.tokens[req.VolumeID]
	cs.mu.Unlock()
	if !ok {
		return statusResp(wire.StatusAuth, 0, fmt.Sprintf("no token registered for volume %d on this connection", req.VolumeID))
	}
	r := wire.Request{Op: req.Op, Flags: req.Flags &^ wire.FlagRelay, VolumeID: req.VolumeID, Offset: req.Offset,
		Length: req.Length, Epoch: req.Epoch, Tag: req.Tag, Data: req.Data}
	switch req.Op {
	case wire.OpRead:
		r.ReadInto = req.ReplyBuffer(int(req.Length))
	case wire.OpFlush:
		r.Offset = 0
	}
	d.stats.relayed.Add(1)
	resp, err := d.replicas.forward(ctx, addr, tok, r)
	if err != nil {
		if _, isStatus := wire.StatusOf(err); !isStatus {
			d.stats.relayFailed.Add(1)
			return statusResp(wire.StatusRetry, 0, fmt.Sprintf("relay to SDS %d at %s: %v", id, addr, err))
		}
	}
	return resp // the primary's answer, a refusal included
}
