package wire

import (
	"math/bits"
	"sync"
)

// bufPool recycles payload buffers in power-of-two size classes from 512 B to 16 MiB, so that a
// steady stream of same-sized IOs does not allocate.
type bufPool struct {
	classes [maxClass - minClass + 1]sync.Pool // of *[]byte with cap 1<<class
}

const (
	minClass = 9  // 512 B
	maxClass = 24 // 16 MiB
)

var buffers bufPool

// get returns a buffer of length n. The capacity is n rounded up to a size class unless that
// would exceed limit, in which case the buffer is exactly n bytes and is not recycled.
func (p *bufPool) get(n, limit int) *[]byte {
	c := minClass
	if n > 1<<minClass {
		c = bits.Len(uint(n - 1))
	}
	if c > maxClass || 1<<c > limit && n < 1<<c {
		b := make([]byte, n)
		return &b
	}
	if v := p.classes[c-minClass].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// put recycles b if it came from a size class.
func (p *bufPool) put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minClass || c > 1<<maxClass || c&(c-1) != 0 {
		return
	}
	p.classes[bits.Len(uint(c))-1-minClass].Put(b)
}
