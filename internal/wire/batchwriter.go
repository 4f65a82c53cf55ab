package wire

import (
	"bufio"
	"sync"
	"sync/atomic"
)

// batchWriter lets many goroutines write frames to one connection and flushes only when no other
// writer is waiting, so frames produced together leave in one syscall (group commit). Every
// frame is flushed by its own writer or by a writer queued behind it.
type batchWriter struct {
	waiting atomic.Int32 // writers that have announced themselves and not yet written
	mu      sync.Mutex
	bw      *bufio.Writer
	err     error // first write error; sticky
}

func (w *batchWriter) write(hdr, data []byte) error {
	w.waiting.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.err
	if err == nil {
		_, err = w.bw.Write(hdr)
	}
	if err == nil && len(data) > 0 {
		_, err = w.bw.Write(data)
	}
	// The last writer in line flushes for everyone before it.
	if w.waiting.Add(-1) == 0 && err == nil {
		err = w.bw.Flush()
	}
	if err != nil && w.err == nil {
		w.err = err
	}
	return err
}
