package shm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Mapping is a peer's view of another process's Region: it reads write payloads from it and
// writes read data into it.
type Mapping struct {
	desc Desc
	mem  []byte
	refs int // registry references
}

// Open maps the region d describes. It fails with ErrUnavailable when the region
// cannot be opened from here (another host or PID namespace, no permission, the owner gone) and
// with ErrBadDesc when what it opens is not that region or not sealed against resizing.
func Open(d Desc) (*Mapping, error) {
	if d.Size <= slotsStart || d.Size > MaxSize {
		return nil, fmt.Errorf("%w: size %d", ErrBadDesc, d.Size)
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", d.PID, d.FD), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer f.Close() // the mapping outlives the descriptor
	fd := int(f.Fd())
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: not a sealable memfd: %w", ErrBadDesc, err)
	}
	if seals&unix.F_SEAL_SHRINK == 0 {
		return nil, fmt.Errorf("%w: region is not sealed against shrinking", ErrBadDesc)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("%w: fstat: %w", ErrUnavailable, err)
	}
	if uint64(st.Size) != d.Size {
		return nil, fmt.Errorf("%w: region has %d bytes, descriptor says %d", ErrBadDesc, st.Size, d.Size)
	}
	mem, err := unix.Mmap(fd, 0, int(d.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("%w: mmap: %w", ErrUnavailable, err)
	}
	if string(mem[:8]) != magic || binary.BigEndian.Uint64(mem[8:]) != d.ID || !bytes.Equal(mem[16:16+nonceSize], d.Nonce[:]) {
		unix.Munmap(mem)
		return nil, fmt.Errorf("%w: region header does not match (another process under that PID?)", ErrBadDesc)
	}
	return &Mapping{desc: d, mem: mem}, nil
}

// Desc is the descriptor the mapping was opened with (to pass the region on to another peer).
func (m *Mapping) Desc() Desc { return m.desc }

// Slice returns the n bytes at off, which must lie in the region's slots.
func (m *Mapping) Slice(off uint64, n uint32) ([]byte, error) {
	end := off + uint64(n)
	if off < slotsStart || end < off || end > uint64(len(m.mem)) {
		return nil, fmt.Errorf("%w: [%d, +%d) is outside the region's %d bytes", ErrBadDesc, off, n, len(m.mem))
	}
	return m.mem[off:end:end], nil
}

// Close unmaps the region. No slice of it may be used afterwards.
func (m *Mapping) Close() error { return unix.Munmap(m.mem) }

// Registry shares one Mapping per region among a process's connections: Attach opens a region
// or takes another reference to it, Release drops one and unmaps the region with the last.
type Registry struct {
	max int

	mu   sync.Mutex
	maps map[uint64]*Mapping
}

// NewRegistry returns a registry holding at most max regions at once.
func NewRegistry(max int) *Registry {
	return &Registry{max: max, maps: map[uint64]*Mapping{}}
}

// Attach returns the mapping of d's region, opening it if no one holds it.
func (g *Registry) Attach(d Desc) (*Mapping, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m := g.maps[d.ID]; m != nil {
		if m.desc != d {
			return nil, fmt.Errorf("%w: region %x is already mapped with another descriptor", ErrBadDesc, d.ID)
		}
		m.refs++
		return m, nil
	}
	if len(g.maps) >= g.max {
		return nil, fmt.Errorf("%w: %d regions mapped already", ErrUnavailable, len(g.maps))
	}
	m, err := Open(d)
	if err != nil {
		return nil, err
	}
	m.refs = 1
	g.maps[d.ID] = m
	return m, nil
}

// Release drops a reference taken by Attach and reports whether it was the last (the region
// is unmapped).
func (g *Registry) Release(m *Mapping) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	m.refs--
	if m.refs > 0 {
		return false
	}
	if g.maps[m.desc.ID] == m {
		delete(g.maps, m.desc.ID)
	}
	m.Close()
	return true
}

// Len is the number of regions mapped.
func (g *Registry) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.maps)
}
