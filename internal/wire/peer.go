package wire

// PeerHello is who opens a peer connection, carried by an OpPeerAuth with FlagOrdered: the
// sending SDS's id (in the volume field) and its run, a number chosen at random when its
// process started (in the tag field). Request ids of one run increase across all its peer
// connections, so a receiver can tell a replica write that arrives late, after a newer one of
// the same chunk, from one in order; a new run of the same SDS makes the writes still on their
// way from the earlier one stale. Older receivers ignore the flag and both fields.
type PeerHello struct {
	SDSID int64
	Run   uint64
}

// Request is the OpPeerAuth that presents tok, a token of mode Peer, with h.
func (h PeerHello) Request(tok []byte) Request {
	return Request{Op: OpPeerAuth, Flags: FlagOrdered, VolumeID: h.SDSID, Tag: h.Run, Data: tok}
}

// PeerHelloOf returns the PeerHello of an OpPeerAuth request, and false when it has none (a
// sender whose request ids are not ordered across its connections).
func PeerHelloOf(req *Request) (PeerHello, bool) {
	if req.Op != OpPeerAuth || req.Flags&FlagOrdered == 0 || req.VolumeID <= 0 {
		return PeerHello{}, false
	}
	return PeerHello{SDSID: req.VolumeID, Run: req.Tag}, true
}
