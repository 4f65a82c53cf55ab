package chunkstore

import (
	"sync/atomic"
	"syscall"
	"unsafe"
)

// resident tells whether a byte range of a device is all in the page cache, with cachestat(2)
// (Linux 6.5). A write over cached pages lands in the folios that are already there, so it can
// be one system call without creating large folios (writePiece): on the two-vCPU test machine a
// 1 MiB overwrite cost 118-146 µs of CPU per MiB in one or four calls against 210 µs in 32 KiB
// pieces (docs/BENCHMARKS.md, machine E). Off for good once the kernel says it has no such call.
type resident struct {
	rc  syscall.RawConn
	off atomic.Bool
}

const (
	sysCachestat = 451 // x86-64, arm64 and the other architectures of the unified table
	pageSize     = 4096
)

type cachestatRange struct{ off, len uint64 }

type cachestatResult struct {
	nrCache, nrDirty, nrWriteback, nrEvicted, nrRecentlyEvicted uint64
}

func newResident(rc syscall.RawConn) *resident {
	r := &resident{rc: rc}
	r.off.Store(rc == nil)
	return r
}

// all reports whether every page of [off, off+n) is cached; false when it cannot tell.
func (r *resident) all(off int64, n int) bool {
	if n <= 0 || r.off.Load() {
		return false
	}
	first := off &^ (pageSize - 1)
	rng := cachestatRange{off: uint64(first), len: uint64(off + int64(n) - first)}
	pages := (rng.len + pageSize - 1) / pageSize
	var cs cachestatResult
	var e syscall.Errno
	_ = r.rc.Control(func(fd uintptr) {
		_, _, e = syscall.RawSyscall6(sysCachestat, fd, uintptr(unsafe.Pointer(&rng)), uintptr(unsafe.Pointer(&cs)), 0, 0, 0)
	})
	if e == syscall.ENOSYS || e == syscall.EPERM {
		r.off.Store(true)
	}
	return e == 0 && cs.nrCache >= pages
}
