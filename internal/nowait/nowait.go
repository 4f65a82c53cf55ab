// Package nowait is the page-cache fast path of file IO: preadv2/pwritev2 with RWF_NOWAIT,
// issued as raw system calls. Those return what the page cache can serve at once and EAGAIN
// instead of waiting for the disk, so they need none of the scheduler's syscall bookkeeping,
// which on an idle process wakes the runtime's monitor thread on every call (a futex wake and a
// burst of sleeps on another core per IO). Whatever is left (a cache miss, a block still to
// allocate, a kernel or filesystem without the flag) is the caller's to do through os.File,
// which also reports the real error if there is one. The SDS's chunk store reads and writes
// its devices this way; an SDC reads them this way under a read grant.
package nowait

import (
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Op is one file's RWF_NOWAIT path for reads (unix.SYS_PREADV2) or writes (SYS_PWRITEV2).
type Op struct {
	trap uintptr
	rc   syscall.RawConn // the file's: holding it keeps the descriptor open during the call
	off  atomic.Bool     // the file refused the flag once: not asked again
}

// New returns the path for trap on the file behind rc (nil: always off).
func New(trap uintptr, rc syscall.RawConn) *Op {
	op := &Op{trap: trap, rc: rc}
	op.off.Store(rc == nil)
	return op
}

// Off reports whether the file refused the flag (or there is none): Do does nothing.
func (op *Op) Off() bool { return op.off.Load() }

// Disable turns the path off, as if the file had refused the flag.
func (op *Op) Disable() { op.off.Store(true) }

// Do transfers as much of p at off as the page cache allows without blocking and returns the
// byte count (0 when nothing could be done that way).
func (op *Op) Do(p []byte, off int64) int {
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
