package chunkstore

import "os"

// Extent is where a chunk replica lies: for a reader on the same host that opens the device
// itself (sds/DESIGN.md "Local reads") as /proc/<pid>/fd/<FD>, checking it is the file Dev and
// Ino name.
type Extent struct {
	PID      int
	FD       int
	Dev, Ino uint64
	Off      int64
	Size     int64
}

// Locate returns the extent of replica k, or false when k is not allocated. The extent stays
// k's until the replica is freed: OnFree tells when.
func (s *Store) Locate(k Key) (Extent, bool) {
	if s.closed.Load() {
		return Extent{}, false
	}
	c, ok := s.lookup(k)
	if !ok {
		return Extent{}, false
	}
	d := s.devs[c.dev]
	return Extent{PID: os.Getpid(), FD: int(d.f.Fd()), Dev: d.dev, Ino: d.ino, Off: c.off, Size: c.size}, true
}

// OnFree sets f to be called with every replica about to be freed (dropped, or trimmed
// whole), before its space can go to another replica. Set it before any IO.
func (s *Store) OnFree(f func(Key)) { s.onFree = f }
