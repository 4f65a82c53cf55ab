package nbd

import (
	"math/bits"
	"sync"
)

// limiter bounds the requests in flight on one connection, by count and by
// payload bytes. The request reader blocks in acquire, which pushes back on
// the client through TCP.
type limiter struct {
	mu              sync.Mutex
	cond            sync.Cond
	count, maxCount int
	bytes, maxBytes int64
}

func (l *limiter) init(maxCount int, maxBytes int64) {
	l.cond.L = &l.mu
	l.maxCount, l.maxBytes = maxCount, maxBytes
}

// acquire takes one slot and n bytes (capped at the budget, so a single
// request always fits) and returns the bytes to release.
func (l *limiter) acquire(n int64) int64 {
	n = min(n, l.maxBytes)
	l.mu.Lock()
	for l.count >= l.maxCount || l.bytes+n > l.maxBytes {
		l.cond.Wait()
	}
	l.count++
	l.bytes += n
	l.mu.Unlock()
	return n
}

func (l *limiter) release(n int64) {
	l.mu.Lock()
	l.count--
	l.bytes -= n
	l.mu.Unlock()
	l.cond.Broadcast()
}

// bufferPool recycles payload buffers in power-of-two size classes from
// 4 KiB up, so a 4 KiB read does not pin a MaxPayload buffer.
type bufferPool struct {
	classes [31]sync.Pool
}

const minBufferClass = 12

func (p *bufferPool) get(n int) []byte {
	if n <= 0 {
		return nil
	}
	class := max(bits.Len(uint(n-1)), minBufferClass)
	if class >= len(p.classes) {
		return make([]byte, n)
	}
	if v := p.classes[class].Get(); v != nil {
		return (*(v.(*[]byte)))[:n]
	}
	return make([]byte, n, 1<<class)
}

func (p *bufferPool) put(b []byte) {
	c := cap(b)
	if c == 0 {
		return
	}
	class := bits.Len(uint(c - 1))
	if class < minBufferClass || class >= len(p.classes) || 1<<class != c {
		return
	}
	b = b[:c]
	p.classes[class].Put(&b)
}
