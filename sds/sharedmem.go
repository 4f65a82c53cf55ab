package sds

import (
	"errors"
	"fmt"

	"pflex/internal/shm"
	"pflex/internal/wire"
)

// Shared memory with an SDC (or a primary) on the same host (internal/shm, DESIGN.md "Shared
// memory"): a client attaches its region to a connection with OpShmAttach, then sends writes
// whose payload is a reference into it. The write is applied (and forwarded) from the mapping,
// so its bytes do not cross a socket. The client reuses the bytes only after the reply, and
// this SDS reads them only until it replies, so nothing here copies or keeps them.

const (
	// maxShmRegions bounds the regions mapped by this SDS at once, and per connection.
	maxShmRegions     = 64
	maxShmRegionsConn = 4
)

// sharedMemory is the registry of a data server that takes shared regions (on), or nil.
func sharedMemory(on bool) *shm.Registry {
	if !on {
		return nil
	}
	return shm.NewRegistry(maxShmRegions)
}

// shmSource is where a request's data lies in shared memory: a write's payload (forwarded as
// the reference rather than the bytes), or where a read's data goes.
type shmSource struct {
	m    *shm.Mapping
	ref  wire.ShmRef
	data []byte // the ref's bytes in the mapping
}

// attachShm maps the region described in req's payload for the connection.
func (d *DataServer) attachShm(cs *connState, req *wire.Request) wire.Response {
	if d.cfg.SharedMemory == nil {
		return statusResp(wire.StatusProto, 0, "shared memory is off on this SDS")
	}
	var desc shm.Desc
	if err := desc.UnmarshalBinary(req.Data); err != nil {
		return statusResp(wire.StatusProto, 0, err.Error())
	}
	cs.mu.Lock()
	_, have := cs.regions[desc.ID]
	full := len(cs.regions) >= maxShmRegionsConn
	cs.mu.Unlock()
	if have {
		return wire.Response{}
	}
	if full {
		return statusResp(wire.StatusProto, 0, fmt.Sprintf("%d shared regions attached on this connection already", maxShmRegionsConn))
	}
	m, err := d.cfg.SharedMemory.Attach(desc)
	if err != nil {
		if !errors.Is(err, shm.ErrUnavailable) {
			d.log.Warn("shared region refused", "pid", desc.PID, "error", err)
		}
		return statusResp(wire.StatusProto, 0, err.Error())
	}
	cs.mu.Lock()
	if cs.regions[desc.ID] != nil { // a concurrent attach of the same region won
		cs.mu.Unlock()
		d.cfg.SharedMemory.Release(m)
		return wire.Response{}
	}
	cs.regions[desc.ID] = m
	owner := req.Flags&wire.FlagReplica == 0
	cs.clients[desc.ID] = owner
	cs.mu.Unlock()
	if owner {
		d.shmMu.Lock()
		d.shmClients[desc.ID]++
		d.shmMu.Unlock()
	}
	d.stats.shmAttached.Add(1)
	return wire.Response{}
}

// fromShm turns an OpShmWrite, OpShmReplWrite or OpShmRead into the OpWrite, OpReplWrite or
// OpRead it stands for, with the data in the attached region.
func (d *DataServer) fromShm(cs *connState, req *wire.Request) (wire.Request, *shmSource, wire.Response, bool) {
	ref, err := wire.DecodeShmRef(req.Data)
	if err != nil {
		return wire.Request{}, nil, statusResp(wire.StatusProto, 0, err.Error()), false
	}
	cs.mu.Lock()
	m := cs.regions[ref.Region]
	cs.mu.Unlock()
	if m == nil {
		return wire.Request{}, nil, statusResp(wire.StatusProto, 0, fmt.Sprintf("shared region %x is not attached on this connection", ref.Region)), false
	}
	data, err := m.Slice(ref.Offset, ref.Length)
	if err != nil {
		return wire.Request{}, nil, statusResp(wire.StatusProto, 0, err.Error()), false
	}
	r := wire.Request{Op: wire.OpWrite, Flags: req.Flags, ID: req.ID, VolumeID: req.VolumeID, Offset: req.Offset,
		Length: ref.Length, Epoch: req.Epoch, Tag: req.Tag, Data: data}
	switch req.Op {
	case wire.OpShmReplWrite:
		r.Op = wire.OpReplWrite
	case wire.OpShmRead:
		r.Op, r.Data = wire.OpRead, nil
	}
	if r.Op != wire.OpRead {
		d.stats.shmWrites.Add(1)
	}
	return r, &shmSource{m: m, ref: ref, data: data}, wire.Response{}, true
}

// releaseShm drops the connection's regions; every request of it has been answered. When the
// last connection on which a region's owner (an SDC) attached it closes, the owner is gone or
// reconnecting: the replica connections that passed the region on are closed too, so that the
// secondaries, which hold it per connection, unmap it instead of keeping it for as long as
// both SDSs live (and a reconnecting SDC's new connection attaches it again).
func (d *DataServer) releaseShm(cs *connState) {
	cs.mu.Lock()
	regions, clients := cs.regions, cs.clients
	cs.regions, cs.clients = nil, nil
	cs.mu.Unlock()
	for id, m := range regions {
		d.cfg.SharedMemory.Release(m)
		if !clients[id] {
			continue
		}
		d.shmMu.Lock()
		d.shmClients[id]--
		last := d.shmClients[id] <= 0
		if last {
			delete(d.shmClients, id)
		}
		d.shmMu.Unlock()
		if last {
			d.replicas.dropRegion(id)
		}
	}
}
