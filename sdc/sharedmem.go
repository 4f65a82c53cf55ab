package sdc

import "pflex/internal/shm"

// Shared-memory slot sizes (sdc/DESIGN.md "Shared memory"): small payloads (4 KiB random
// writes) in 64 KiB slots, chunk-sized ones (1 MiB sequential writes) in 1 MiB slots. A
// payload larger than a slot, or one that finds every slot busy, is sent over the socket.
const (
	smallSlot  = 64 << 10
	smallSlots = 64 // 4 MiB
	largeSlot  = 1 << 20
)

// newSharedRegion makes the SDC's shared region of about mb MiB: 4 MiB of small slots, the
// rest in 1 MiB slots.
func newSharedRegion(mb int) (*shm.Region, error) {
	large := (mb<<20 - smallSlot*smallSlots) / largeSlot
	return shm.Create([]shm.Class{{Size: smallSlot, Count: smallSlots}, {Size: largeSlot, Count: large}})
}

// SharedMemoryStatus is the shared region's part of GET /status.
type SharedMemoryStatus struct {
	shm.Stats
	// AttachedSDS counts the live SDS connections that mapped the region (SDSs on this host).
	AttachedSDS int `json:"attached_sds"`
	// ReadGrants are the grants in effect from those SDSs, LocalReads the reads done under
	// grants by the live connections (localread.go).
	ReadGrants int64 `json:"read_grants"`
	LocalReads int64 `json:"local_reads"`
}

func (p *SDSConns) sharedMemoryStatus() *SharedMemoryStatus {
	if p.shm == nil {
		return nil
	}
	st := &SharedMemoryStatus{Stats: p.shm.Stats()}
	for _, ep := range p.endpoints() {
		ep.mu.Lock()
		if ep.conn != nil && ep.conn.shm && ep.conn.c.Err() == nil {
			st.AttachedSDS++
		}
		if ep.conn != nil && ep.conn.local != nil {
			st.ReadGrants += ep.conn.local.grantsN.Load()
			st.LocalReads += ep.conn.local.reads.Load()
		}
		ep.mu.Unlock()
	}
	return st
}

// shmReadMin is the smallest read that goes through the shared region: the SDS reads into a
// slot and the SDC copies it out, which saves two socket copies of a large read; a small read
// gains nothing from it.
const shmReadMin = smallSlot
