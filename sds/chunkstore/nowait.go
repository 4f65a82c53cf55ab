package chunkstore

import (
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reads and writes first try the page cache without blocking: preadv2/pwritev2 with
// RWF_NOWAIT, issued as raw system calls. Those return what the page cache can serve at once
// and EAGAIN instead of waiting for the disk, so they need none of the scheduler's syscall
// bookkeeping, which on an idle SDS wakes the runtime's monitor thread on every call (a futex
// wake and a burst of sleeps on another core per IO). Whatever is left (a cache miss, a block
// still to allocate, a kernel or filesystem without the flag) goes through os.File as before,
// which also reports the real error if there is one; writes try a raw pwrite first
// (rawwrite.go), since ext4 refuses the flag for them.

// nowait is one device's RWF_NOWAIT path for reads or for writes.
type nowait struct {
	trap uintptr
	rc   syscall.RawConn // the file's: holding it keeps the descriptor open during the call
	off  atomic.Bool     // the device refused the flag once: not asked again
}

func newNowait(trap uintptr, rc syscall.RawConn) *nowait {
	op := &nowait{trap: trap, rc: rc}
	op.off.Store(rc == nil)
	return op
}

// do transfers as much of p at off as the page cache allows without blocking and returns the
// byte count (0 when nothing could be done that way).
func (op *nowait) do(p []byte, off int64) int {
	if len(p) == 0 || op.off.Load() {
		return 0
	}
	done := 0
	f := func(fd uintptr) {
		for done < len(p) {
			var iov unix.Iovec
			iov.Base = &p[done]
			iov.SetLen(len(p) - done)
			pos := uint64(off) + uint64(done)
			n, _, e := syscall.RawSyscall6(op.trap, fd, uintptr(unsafe.Pointer(&iov)), 1,
				uintptr(pos), uintptr(pos>>32>>32), unix.RWF_NOWAIT)
			if e == syscall.EOPNOTSUPP || e == syscall.ENOSYS || e == syscall.EINVAL {
				op.off.Store(true)
			}
			if e != 0 || n == 0 {
				break
			}
			done += int(n)
		}
	}
	// Control holds a reference to the descriptor (it cannot be closed under the call) without
	// taking the file's read or write lock, so calls on one device run concurrently.
	_ = op.rc.Control(f)
	return done
}

// readAt reads len(p) bytes at off.
func (d *device) readAt(p []byte, off int64) error {
	n := d.nowaitRead.do(p, off)
	if n == len(p) {
		return nil
	}
	_, err := d.f.ReadAt(p[n:], off+int64(n))
	return err
}

// writePiece bounds one write system call. The page cache sizes a new folio by the write that
// creates it, so a 1 MiB pwrite leaves 1 MiB folios behind, and every later 4 KiB overwrite of
// such a folio walks all its blocks: on Linux 6.18/ext4 a random 4 KiB overwrite cost 8-10 us on
// a file written in 1 MiB writes against 2.2-2.4 us on one written in 32 KiB writes, and the
// 1 MiB writes themselves cost 2.6-3.2 ms per MiB against 0.25-0.3 ms in 32 KiB pieces
// (docs/BENCHMARKS.md). Thirty-two 32 KiB system calls per MiB cost far less than either. A
// write over pages that are all in the page cache creates no folio, so it goes in one piece
// (cachestat.go).
const writePiece = 32 << 10

// writeAt writes p at off, in pieces of at most writePiece bytes unless its pages are cached.
func (d *device) writeAt(p []byte, off int64) error {
	piece := writePiece
	if len(p) > writePiece && d.resident.all(off, len(p)) {
		piece = len(p)
	}
	for len(p) > 0 {
		k := min(len(p), piece)
		n := d.nowaitWrite.do(p[:k], off)
		if n < k {
			n += d.rawWrite.do(p[n:k], off+int64(n))
		}
		if n < k {
			if _, err := d.f.WriteAt(p[n:k], off+int64(n)); err != nil {
				return err
			}
		}
		p, off = p[k:], off+int64(k)
	}
	return nil
}
