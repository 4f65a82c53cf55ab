package nbd

import (
	"context"
	"fmt"
	"sync"
)

const memPageSize = 4096

// MemExport is a sparse in-memory Export: 4 KiB pages allocated on first
// write, freed by Trim and WriteZeroes. Flush is a no-op (nothing is
// durable). For tests and as a reference backend.
type MemExport struct {
	size  int64
	mu    sync.RWMutex
	pages map[int64][]byte // page index -> page
}

// NewMemExport returns an all-zero export of size bytes.
func NewMemExport(size int64) *MemExport {
	return &MemExport{size: size, pages: make(map[int64][]byte)}
}

// Size implements Export.
func (m *MemExport) Size() int64 { return m.size }

// ReadOnly implements Export.
func (m *MemExport) ReadOnly() bool { return false }

// AllocatedPages reports how many 4 KiB pages hold data.
func (m *MemExport) AllocatedPages() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.pages)
}

func (m *MemExport) check(off, n int64) error {
	if off < 0 || n < 0 || off > m.size || n > m.size-off {
		return fmt.Errorf("%w: range [%d, +%d) outside export of %d bytes", ErrInvalid, off, n, m.size)
	}
	return nil
}

// ReadAt implements Export.
func (m *MemExport) ReadAt(_ context.Context, p []byte, off int64) error {
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	for len(p) > 0 {
		idx, in := off/memPageSize, int(off%memPageSize)
		n := min(len(p), memPageSize-in)
		if page, ok := m.pages[idx]; ok {
			copy(p[:n], page[in:])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// WriteAt implements Export.
func (m *MemExport) WriteAt(_ context.Context, p []byte, off int64, _ bool) error {
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(p) > 0 {
		idx, in := off/memPageSize, int(off%memPageSize)
		n := min(len(p), memPageSize-in)
		page, ok := m.pages[idx]
		if !ok {
			page = make([]byte, memPageSize)
			m.pages[idx] = page
		}
		copy(page[in:], p[:n])
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// Flush implements Export.
func (m *MemExport) Flush(context.Context) error { return nil }

// Trim implements Export: the range reads as zeroes afterwards.
func (m *MemExport) Trim(_ context.Context, off, length int64) error {
	return m.zero(off, length)
}

// WriteZeroes implements Export.
func (m *MemExport) WriteZeroes(_ context.Context, off, length int64, _, _ bool) error {
	return m.zero(off, length)
}

func (m *MemExport) zero(off, length int64) error {
	if err := m.check(off, length); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for length > 0 {
		idx, in := off/memPageSize, off%memPageSize
		n := min(length, memPageSize-in)
		if page, ok := m.pages[idx]; ok {
			if n == memPageSize {
				delete(m.pages, idx)
			} else {
				clear(page[in : in+n])
			}
		}
		off, length = off+n, length-n
	}
	return nil
}
