// Package shm is the same-host shortcut of the data path: an SDC keeps its NBD write payloads
// in a sealed memfd region, and an SDS on the same host maps that region and writes a payload to
// its devices (and forwards it to a secondary on the same host) straight from there, so the
// bytes are not copied through loopback sockets.
//
// The owner (the SDC) creates a Region and hands out its Desc; a peer (an SDS) opens it by
// /proc/<pid>/fd/<fd>, which only works on the same host, in the same PID namespace, with the
// right to look at the owner's descriptors. The region's first page holds a magic, its id and
// a random nonce that the Desc carries too, so a PID that names another process (a container
// with its own PID namespace) is refused instead of mapped. A Region is sealed against
// shrinking and growing before anyone maps it, so a peer's access can never run past the end
// of the file (SIGBUS); peers map it read-only.
package shm

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RefusedRetryAfter is how long a peer that dropped the connection when offered a region (a
// version without shared memory: the attach opcode is unknown to it) is not offered one again;
// asking on every new connection would fail every IO that dials it.
const RefusedRetryAfter = time.Minute

// Errors.
var (
	// ErrUnavailable: the region cannot be created or mapped here (no memfd, another host or
	// PID namespace, no permission). Callers fall back to sending the bytes.
	ErrUnavailable = errors.New("shm: shared region unavailable")
	// ErrBadDesc: a descriptor or reference that does not fit the region it names.
	ErrBadDesc = errors.New("shm: bad region descriptor")
)

const (
	headerSize = 4096 // the first page: magic, id, nonce; the grant table follows, then the slots
	magic      = "PFLXSHM1"
	nonceSize  = 32
	// DescSize is the encoded size of a Desc.
	DescSize = 8 + 4 + 4 + 8 + nonceSize
	// MaxSize bounds the region a peer agrees to map.
	MaxSize = 1 << 30
)

// Desc names a region to a peer on the same host.
type Desc struct {
	ID    uint64 // random; names the region in references
	PID   uint32 // owner's process
	FD    uint32 // owner's descriptor of the memfd
	Size  uint64
	Nonce [nonceSize]byte
}

// MarshalBinary encodes d in DescSize bytes (big-endian).
func (d Desc) MarshalBinary() ([]byte, error) {
	b := make([]byte, DescSize)
	binary.BigEndian.PutUint64(b[0:], d.ID)
	binary.BigEndian.PutUint32(b[8:], d.PID)
	binary.BigEndian.PutUint32(b[12:], d.FD)
	binary.BigEndian.PutUint64(b[16:], d.Size)
	copy(b[24:], d.Nonce[:])
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary encoded.
func (d *Desc) UnmarshalBinary(b []byte) error {
	if len(b) != DescSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadDesc, len(b), DescSize)
	}
	d.ID = binary.BigEndian.Uint64(b[0:])
	d.PID = binary.BigEndian.Uint32(b[8:])
	d.FD = binary.BigEndian.Uint32(b[12:])
	d.Size = binary.BigEndian.Uint64(b[16:])
	copy(d.Nonce[:], b[24:])
	return nil
}

// Class is one size of slot in a region: Count slots of Size bytes.
type Class struct {
	Size  int
	Count int
}

// Region is the owner's side: a sealed memfd mapped read-write, cut into slots of a few sizes.
// Get hands out a slot, Put returns it; a slot that a peer might still read after its request
// ended without a clear answer is Tainted and never handed out again.
type Region struct {
	desc    Desc
	f       *os.File
	mem     []byte
	base    uintptr
	classes []slotClass

	mu      sync.Mutex
	tainted map[int]bool // slot start offsets
	closed  bool

	grants grantTable

	gets, misses, taints atomic.Int64
	held                 atomic.Int64 // slots handed out and not yet put back
}

// slotClass is the slots of one size: their offsets in a free list.
type slotClass struct {
	size  int
	start int // offset of the class's first slot
	count int
	free  []int // slot offsets, under Region.mu; the last one returned is handed out first
}

// Create makes a region with the given slot classes (smallest first), sealed and mapped.
func Create(classes []Class) (*Region, error) {
	size := slotsStart
	for _, c := range classes {
		if c.Size <= 0 || c.Count <= 0 || c.Size%4096 != 0 {
			return nil, fmt.Errorf("shm: slot class %+v: size must be a positive multiple of 4096, count positive", c)
		}
		size += c.Size * c.Count
	}
	if size > MaxSize {
		return nil, fmt.Errorf("shm: region of %d bytes exceeds %d", size, MaxSize)
	}
	fd, err := unix.MemfdCreate("pflex-sdc-buffers", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("%w: memfd_create: %w", ErrUnavailable, err)
	}
	f := os.NewFile(uintptr(fd), "pflex-sdc-buffers")
	fail := func(what string, err error) (*Region, error) {
		f.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return fail("ftruncate", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fail("seal", err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fail("mmap", err)
	}
	r := &Region{f: f, mem: mem, base: uintptr(unsafe.Pointer(&mem[0])), tainted: map[int]bool{}}
	r.desc = Desc{PID: uint32(os.Getpid()), FD: uint32(fd), Size: uint64(size)}
	var id [8]byte
	rand.Read(id[:])
	rand.Read(r.desc.Nonce[:])
	r.desc.ID = binary.BigEndian.Uint64(id[:])
	copy(mem, magic)
	binary.BigEndian.PutUint64(mem[8:], r.desc.ID)
	copy(mem[16:], r.desc.Nonce[:])

	r.grants.free = make([]int, GrantEntries)
	for i := range GrantEntries {
		r.grants.free[i] = GrantEntries - 1 - i
	}
	off := slotsStart
	for _, c := range classes {
		sc := slotClass{size: c.Size, start: off, count: c.Count, free: make([]int, c.Count)}
		for i := range c.Count {
			sc.free[i] = off + (c.Count-1-i)*c.Size
		}
		off += c.Size * c.Count
		r.classes = append(r.classes, sc)
	}
	return r, nil
}

// Desc describes the region for a peer.
func (r *Region) Desc() Desc { return r.desc }

// Get returns an n-byte buffer in a free slot of the smallest class that fits, or nil when
// there is none (n too large, or all such slots busy): the caller then uses ordinary memory.
func (r *Region) Get(n int) []byte {
	if n <= 0 {
		return nil
	}
	for i := range r.classes {
		c := &r.classes[i]
		if n > c.size {
			continue
		}
		if off, ok := r.take(c); ok {
			r.gets.Add(1)
			r.held.Add(1)
			return r.mem[off : off+n : off+c.size]
		}
	}
	r.misses.Add(1)
	return nil
}

// take pops the slot put back last into c. Being the most recently used, it is the likeliest
// to be in the CPU caches: receiving 1 MiB payloads into four slots in turn costs about a
// quarter less CPU than into 28 (internal/shm/DESIGN.md).
func (r *Region) take(c *slotClass) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(c.free) == 0 {
		return 0, false
	}
	off := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	return off, true
}

// slot returns the class and slot start of b when b lies in one of r's slots.
func (r *Region) slot(b []byte) (*slotClass, int, bool) {
	if cap(b) == 0 {
		return nil, 0, false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if p < r.base+slotsStart || p >= r.base+uintptr(len(r.mem)) {
		return nil, 0, false
	}
	off := int(p - r.base)
	for i := range r.classes {
		c := &r.classes[i]
		if off < c.start+c.size*c.count {
			return c, c.start + (off-c.start)/c.size*c.size, true
		}
	}
	return nil, 0, false
}

// Ref returns where b lies in the region, for a peer: the offset of its first byte. ok is
// false when b is not in the region.
func (r *Region) Ref(b []byte) (off uint64, ok bool) {
	if len(b) == 0 {
		return 0, false
	}
	p := uintptr(unsafe.Pointer(&b[0]))
	if p < r.base+slotsStart || p+uintptr(len(b)) > r.base+uintptr(len(r.mem)) {
		return 0, false
	}
	return uint64(p - r.base), true
}

// Put returns b's slot to the free list (unless it is tainted) and reports whether b was a
// slot of r at all; a buffer that is not is left to its owner.
func (r *Region) Put(b []byte) bool {
	c, off, ok := r.slot(b)
	if !ok {
		return false
	}
	r.held.Add(-1)
	r.mu.Lock()
	if r.tainted[off] {
		delete(r.tainted, off) // the slot is gone for good; nothing else refers to it
		r.mu.Unlock()
		return true
	}
	c.free = append(c.free, off)
	r.mu.Unlock()
	return true
}

// Taint keeps b's slot out of use for good: a request that referred to it ended without an
// answer that says every peer is done with it (a connection lost, a request abandoned or
// refused on the way), so a peer may still read it later. Rare; counted in Stats.
func (r *Region) Taint(b []byte) {
	_, off, ok := r.slot(b)
	if !ok {
		return
	}
	r.mu.Lock()
	if !r.tainted[off] {
		r.tainted[off] = true
		r.taints.Add(1)
	}
	r.mu.Unlock()
}

// Tainted reports whether b's slot has been tainted.
func (r *Region) Tainted(b []byte) bool {
	_, off, ok := r.slot(b)
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tainted[off]
}

// Stats are a region's counters.
type Stats struct {
	Bytes   int64 `json:"bytes"`
	Gets    int64 `json:"gets"`    // payloads placed in the region
	Misses  int64 `json:"misses"`  // payloads that found no free slot (or were too large)
	Tainted int64 `json:"tainted"` // slots withdrawn for good
}

// Stats returns the region's counters.
func (r *Region) Stats() Stats {
	return Stats{Bytes: int64(len(r.mem)), Gets: r.gets.Load(), Misses: r.misses.Load(), Tainted: r.taints.Load()}
}

// closeWait bounds how long Close waits for slots still handed out.
const closeWait = time.Second

// Close closes the memfd and unmaps the region once every slot handed out has been put back
// (waiting up to a second: a request finishing during shutdown). A slot still out after that
// keeps the region mapped, so that its holder cannot fault; the memory then goes with the
// process. Peers keep their mappings; the memory is freed when the last one is gone.
func (r *Region) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	err := r.f.Close()
	for end := time.Now().Add(closeWait); r.held.Load() > 0 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := r.held.Load(); n > 0 {
		return errors.Join(err, fmt.Errorf("shm: %d slots still in use after %v: region left mapped", n, closeWait))
	}
	return errors.Join(err, unix.Munmap(r.mem))
}
