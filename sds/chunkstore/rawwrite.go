package chunkstore

import (
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// rawWrite is a device's optimistic raw pwrite. Buffered writes are refused RWF_NOWAIT by ext4
// (nowait.go), yet almost every one of them only copies into the page cache and returns in
// microseconds; issued through os.File, each still pays the scheduler's syscall entry and exit,
// and under a stream of writes the runtime's monitor hands the processor to another thread
// whenever one takes more than 20 µs (with the futex wakes and thread switches that follow: the
// scheduler and the monitor were 19 % of the pflex processes' CPU during 1 MiB writes). A raw
// system call skips that bookkeeping.
//
// But a buffered write can sleep: dirty-page throttling (balance_dirty_pages, up to 200 ms a
// call), reclaim, a full journal. A raw call keeps its processor while it sleeps, so with
// gomaxprocs = 1 the whole SDS would wait. So a raw write that took longer than slow turns the
// raw path off for backoff: the device's writes then go through os.File, whose syscall entry
// lets the rest of the SDS run while one sleeps, and afterwards raw writes are tried again. A
// throttled device thus stalls the process for more than slow at most once per backoff.
type rawWrite struct {
	rc       syscall.RawConn // the file's: Control keeps the descriptor open during the call
	slow     time.Duration
	backoff  time.Duration
	offUntil atomic.Int64 // raw writes are off until this time (monotonic, since clockBase)
	backoffs atomic.Int64 // times the path was turned off, for tests and status
}

const (
	// A 32 KiB write into the page cache takes 5-20 µs of CPU, but on a busy host the thread
	// can be preempted in the middle: on the two-core demo host (fio, an SDC and three SDSs)
	// 156 of roughly 350,000 such writes took over 1 ms, the longest 5.6 ms. Ten milliseconds
	// is beyond that, and shorter sleeps stall the SDS no longer than the Go runtime's own
	// preemption tick would.
	rawWriteSlow    = 10 * time.Millisecond
	rawWriteBackoff = time.Second
)

var clockBase = time.Now()

func now() int64 { return int64(time.Since(clockBase)) } // monotonic

func newRawWrite(rc syscall.RawConn) *rawWrite {
	w := &rawWrite{rc: rc, slow: rawWriteSlow, backoff: rawWriteBackoff}
	if rc == nil {
		w.offUntil.Store(1 << 62)
	}
	return w
}

// do writes as much of p at off as raw pwrite calls take and returns the byte count; 0 when the
// path is off, and short on any error (the caller's ordinary write retries the rest and reports
// the real error).
func (w *rawWrite) do(p []byte, off int64) int {
	start := now()
	if len(p) == 0 || start < w.offUntil.Load() {
		return 0
	}
	done := 0
	_ = w.rc.Control(func(fd uintptr) {
		for done < len(p) {
			pos := off + int64(done)
			n, _, e := syscall.RawSyscall6(syscall.SYS_PWRITE64, fd, uintptr(unsafe.Pointer(&p[done])),
				uintptr(len(p)-done), uintptr(pos), 0, 0)
			if e != 0 || n == 0 {
				return
			}
			done += int(n)
		}
	})
	if end := now(); time.Duration(end-start) > w.slow {
		w.offUntil.Store(end + int64(w.backoff))
		w.backoffs.Add(1)
	}
	return done
}
