package shm

import (
	"bytes"
	"errors"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func newRegion(t *testing.T) *Region {
	t.Helper()
	r, err := Create([]Class{{Size: 64 << 10, Count: 2}, {Size: 1 << 20, Count: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestSlotsAreHandedOutAndTaintedOnesNeverAgain(t *testing.T) {
	r := newRegion(t)
	a, b := r.Get(4096), r.Get(64<<10)
	if a == nil || b == nil || len(a) != 4096 || cap(a) != 64<<10 {
		t.Fatalf("small slots: %d/%d, %v", len(a), cap(a), b == nil)
	}
	c := r.Get(100) // small class full: the 1 MiB class serves it
	if c == nil || cap(c) != 1<<20 {
		t.Fatalf("fallback to the larger class: cap %d", cap(c))
	}
	if r.Get(1) != nil || r.Get(2<<20) != nil {
		t.Fatal("a full region or an oversized request must get nil")
	}
	if r.Put(make([]byte, 10)) {
		t.Fatal("Put claimed a heap buffer")
	}
	r.Taint(a[100:200])
	if !r.Put(a) || !r.Put(b) || !r.Put(c) {
		t.Fatal("Put refused a slot of the region")
	}
	got := map[*byte]bool{}
	for range 3 {
		s := r.Get(10)
		if s == nil {
			break
		}
		got[unsafeAddr(s)] = true
	}
	if len(got) != 2 || got[unsafeAddr(a)] {
		t.Fatalf("after tainting one of three slots, got %d slots back, tainted one among them: %v", len(got), got[unsafeAddr(a)])
	}
	if st := r.Stats(); st.Tainted != 1 || st.Misses != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTheSlotPutBackLastIsHandedOutFirst(t *testing.T) {
	r, err := Create([]Class{{Size: 64 << 10, Count: 3}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a, b, c := r.Get(1), r.Get(1), r.Get(1)
	if a == nil || b == nil || c == nil {
		t.Fatal("the region has no three free slots")
	}
	r.Put(b)
	r.Put(a)
	if got := r.Get(1); unsafeAddr(got) != unsafeAddr(a) {
		t.Fatal("Get did not hand out the slot put back last")
	}
	if got := r.Get(1); unsafeAddr(got) != unsafeAddr(b) {
		t.Fatal("Get did not hand out the slot put back before it")
	}
	r.Put(c)
	if got := r.Get(1); unsafeAddr(got) != unsafeAddr(c) {
		t.Fatal("a slot put back is not the next one handed out")
	}
	r.Put(a)
	r.Put(b)
	r.Put(c)
}

func TestPeerMapsTheRegionAndSeesItsBytes(t *testing.T) {
	r := newRegion(t)
	buf := r.Get(5000)
	copy(buf, bytes.Repeat([]byte{0xab}, 5000))
	off, ok := r.Ref(buf[10:])
	if !ok {
		t.Fatal("Ref of a slot failed")
	}
	if _, ok := r.Ref(make([]byte, 3)); ok {
		t.Fatal("Ref of a heap buffer succeeded")
	}
	d := r.Desc()
	enc, _ := d.MarshalBinary()
	var d2 Desc
	if err := d2.UnmarshalBinary(enc); err != nil || d2 != d {
		t.Fatalf("descriptor round trip: %v %+v", err, d2)
	}
	g := NewRegistry(1)
	m, err := g.Attach(d2)
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Slice(off, 4990)
	if err != nil || !bytes.Equal(s, buf[10:]) {
		t.Fatalf("peer's view differs: %v", err)
	}
	for _, bad := range [][2]uint64{{0, 10}, {d.Size - 10, 11}, {1 << 63, 1 << 31}} {
		if _, err := m.Slice(bad[0], uint32(bad[1])); !errors.Is(err, ErrBadDesc) {
			t.Fatalf("Slice(%d, %d): %v", bad[0], bad[1], err)
		}
	}
	m2, err := g.Attach(d2)
	if err != nil || m2 != m || g.Len() != 1 {
		t.Fatalf("second attach: %v, same %v, %d mapped", err, m2 == m, g.Len())
	}
	other := d2
	other.ID++
	if _, err := g.Attach(other); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("attach beyond the registry's bound: %v", err)
	}
	g.Release(m)
	g.Release(m2)
	if g.Len() != 0 {
		t.Fatal("last release did not unmap")
	}
}

func TestPeerRefusesWhatIsNotTheRegion(t *testing.T) {
	r := newRegion(t)
	d := r.Desc()
	wrong := d
	wrong.Nonce[0] ^= 1
	if _, err := Open(wrong); !errors.Is(err, ErrBadDesc) {
		t.Fatalf("wrong nonce: %v", err)
	}
	wrong = d
	wrong.Size += 4096
	if _, err := Open(wrong); !errors.Is(err, ErrBadDesc) {
		t.Fatalf("wrong size: %v", err)
	}
	wrong = d
	wrong.FD = 1 << 20
	if _, err := Open(wrong); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("no such descriptor: %v", err)
	}
	// An unsealed memfd could be truncated under the peer (SIGBUS): refused.
	fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.Ftruncate(fd, int64(d.Size))
	wrong = d
	wrong.FD = uint32(fd)
	if _, err := Open(wrong); !errors.Is(err, ErrBadDesc) {
		t.Fatalf("unsealed memfd: %v", err)
	}
}

func unsafeAddr(b []byte) *byte { return unsafe.SliceData(b) }

func TestCloseWaitsForSlotsAndNeverUnmapsOneInUse(t *testing.T) {
	r, err := Create([]Class{{Size: 4096, Count: 2}})
	if err != nil {
		t.Fatal(err)
	}
	b := r.Get(10)
	go func() {
		time.Sleep(30 * time.Millisecond)
		b[0] = 1 // still mapped while handed out
		r.Put(b)
	}()
	if err := r.Close(); err != nil {
		t.Fatalf("close after the slot came back: %v", err)
	}

	r2, err := Create([]Class{{Size: 4096, Count: 2}})
	if err != nil {
		t.Fatal(err)
	}
	kept := r2.Get(10)
	if err := r2.Close(); err == nil {
		t.Fatal("close with a slot never returned reported no error")
	}
	kept[0] = 2 // the region was left mapped: no fault
}
