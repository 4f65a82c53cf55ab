package wire

import (
	"bufio"
	"runtime"
	"sync"
)

// batchWriter lets many goroutines write frames to one connection with few syscalls (group
// commit). The first writer to find nothing pending becomes the flusher: it yields the
// processor once (runtime.Gosched) before flushing, so that the goroutines already runnable —
// typically the other requests an NBD client sent in the same burst — add their frames first,
// and all leave in one write. Writers that find a flush pending only buffer their frame: the
// pending flush, which takes mu after them, sends it. With nothing else runnable the yield
// returns at once, so a lone request is not delayed.
type batchWriter struct {
	mu      sync.Mutex
	bw      *bufio.Writer
	pending bool  // a flusher will flush what is buffered
	err     error // first write error; sticky
}

func (w *batchWriter) write(hdr, data []byte) error {
	w.mu.Lock()
	err := w.err
	if err == nil {
		_, err = w.bw.Write(hdr)
	}
	if err == nil && len(data) > 0 {
		_, err = w.bw.Write(data)
	}
	if err != nil {
		if w.err == nil {
			w.err = err
		}
		w.mu.Unlock()
		return err
	}
	if w.pending {
		w.mu.Unlock()
		return nil
	}
	w.pending = true
	w.mu.Unlock()

	runtime.Gosched()

	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = false
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = err
		return err
	}
	return nil
}
