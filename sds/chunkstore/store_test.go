package chunkstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

const cs = 64 << 10 // chunk size in tests

func open(t *testing.T, dir string, devSize int64, devs ...string) *Store {
	t.Helper()
	var paths []string
	for _, d := range devs {
		paths = append(paths, filepath.Join(dir, d))
	}
	s, err := Open(Config{Dir: dir, Devices: paths, DeviceSize: devSize})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func read(t *testing.T, s *Store, k Key, off, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	for i := range p {
		p[i] = 0xee // must be overwritten
	}
	if err := s.ReadAt(k, cs, p, int64(off)); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWriteReadZerosAndRestart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 8*cs, "d0.img", "d1.img")
	k := Key{VolumeID: 1, Chunk: 3}
	if got := read(t, s, k, 100, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("unallocated chunk does not read zeros")
	}
	if s.Has(k) {
		t.Fatal("a read allocated the chunk")
	}
	data := pattern(4096, 1)
	if err := s.WriteAt(k, cs, 5, data, 8192, false); err != nil {
		t.Fatal(err)
	}
	if got := read(t, s, k, 8192, 4096); !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	if got := read(t, s, k, 0, 8192); !bytes.Equal(got, make([]byte, 8192)) {
		t.Fatal("unwritten part of an allocated chunk is not zero")
	}
	k2 := Key{VolumeID: 1, Chunk: 4}
	if err := s.WriteAt(k2, cs, 5, pattern(cs, 9), 0, true); err != nil {
		t.Fatal(err)
	}
	ch := s.Chunks(1)
	if len(ch) != 2 || ch[0].Chunk != 3 || ch[0].Epoch != 5 || ch[0].Device == ch[1].Device {
		t.Fatalf("chunks not spread over the devices: %+v", ch)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	sum1, _ := s.Checksum(k, cs)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(k, cs, 5, data, 0, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}

	s = open(t, dir, 8*cs, "d0.img", "d1.img")
	defer s.Close()
	if got := read(t, s, k, 8192, 4096); !bytes.Equal(got, data) {
		t.Fatal("data lost across restart")
	}
	if sum2, _ := s.Checksum(k, cs); sum2 != sum1 {
		t.Fatal("checksum changed across restart")
	}
	if st := s.Stats(); st.Chunks != 2 || st.FreeBytes != st.CapacityBytes-2*cs {
		t.Fatalf("allocation state not rebuilt: %+v", st)
	}
	// A new chunk does not land on top of an old one.
	k3 := Key{VolumeID: 2, Chunk: 0}
	if err := s.WriteAt(k3, cs, 1, pattern(cs, 77), 0, false); err != nil {
		t.Fatal(err)
	}
	if got := read(t, s, k2, 0, cs); !bytes.Equal(got, pattern(cs, 9)) {
		t.Fatal("new allocation overwrote an existing chunk")
	}
}

func TestTrimAndFree(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 2*cs, "d0.img")
	defer s.Close()
	k := Key{1, 0}
	if err := s.WriteAt(k, cs, 1, pattern(cs, 3), 0, false); err != nil {
		t.Fatal(err)
	}
	// Partial trim: a hole inside the chunk.
	if err := s.Zero(k, cs, 1, 4096, 8192, false, true); err != nil {
		t.Fatal(err)
	}
	want := pattern(cs, 3)
	clear(want[4096 : 4096+8192])
	if got := read(t, s, k, 0, cs); !bytes.Equal(got, want) {
		t.Fatal("partial trim wrong")
	}
	if !s.Has(k) {
		t.Fatal("partial trim freed the chunk")
	}
	// Full trim of a thin chunk frees it; reallocation reads zeros, not the old data.
	if err := s.Zero(k, cs, 1, 0, cs, false, false); err != nil {
		t.Fatal(err)
	}
	if s.Has(k) || s.Stats().FreeBytes != 2*cs {
		t.Fatalf("full trim did not free: %+v", s.Stats())
	}
	other := Key{1, 5}
	if err := s.WriteAt(other, cs, 1, []byte{1}, 0, false); err != nil {
		t.Fatal(err)
	}
	if got := read(t, s, other, 1, cs-1); !bytes.Equal(got, make([]byte, cs-1)) {
		t.Fatal("reused extent shows old data")
	}
	// Thick: a full zero keeps the chunk.
	if err := s.Zero(other, cs, 1, 0, cs, true, false); err != nil || !s.Has(other) {
		t.Fatalf("thick zero: %v has=%v", err, s.Has(other))
	}
	// Out of range.
	if err := s.WriteAt(k, cs, 1, make([]byte, 10), cs-5, false); !errors.Is(err, ErrRange) {
		t.Fatalf("write across the chunk end: %v", err)
	}
}

func TestNoSpaceAndThickAllocate(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 2*cs, "a.img", "b.img")
	defer s.Close()
	if err := s.Allocate(7, []int64{0, 1, 2}, cs, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Allocate(7, []int64{0, 1, 2}, cs, 1); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := s.WriteAt(Key{8, 0}, cs, 1, []byte{1}, 0, false); err != nil {
		t.Fatal(err)
	}
	err := s.WriteAt(Key{8, 1}, cs, 1, []byte{1}, 0, false)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("want ErrNoSpace, got %v", err)
	}
	if got := read(t, s, Key{7, 2}, 0, cs); !bytes.Equal(got, make([]byte, cs)) {
		t.Fatal("thick chunk not zero")
	}
	// Freeing makes room again.
	if err := s.Zero(Key{8, 0}, cs, 1, 0, cs, false, false); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAt(Key{8, 1}, cs, 1, []byte{1}, 0, false); err != nil {
		t.Fatal(err)
	}
}

func TestMissingDeviceRefused(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 4*cs, "a.img", "b.img")
	for c := range int64(4) {
		if err := s.WriteAt(Key{1, c}, cs, 1, []byte{1}, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if _, err := Open(Config{Dir: dir, Devices: []string{filepath.Join(dir, "a.img")}, DeviceSize: 4 * cs}); err == nil {
		t.Fatal("opened with a device holding chunks missing")
	}
	fi, err := os.Stat(filepath.Join(dir, "a.img"))
	if err != nil || fi.Size() != 4*cs {
		t.Fatalf("device file: %v %v", fi, err)
	}
}

func TestConcurrentChunks(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 64*cs, "a.img", "b.img", "c.img")
	defer s.Close()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			k := Key{1, int64(i)}
			for j := range 16 {
				if err := s.WriteAt(k, cs, 1, pattern(4096, byte(i)), int64(j*4096), false); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range 16 {
		if got := read(t, s, Key{1, int64(i)}, 4096, 4096); !bytes.Equal(got, pattern(4096, byte(i))) {
			t.Fatalf("chunk %d", i)
		}
	}
}

func TestSpace(t *testing.T) {
	var sp space
	sp.size = 10
	a, _ := sp.alloc(2)
	b, _ := sp.alloc(3)
	c, _ := sp.alloc(2)
	if a != 0 || b != 2 || c != 5 {
		t.Fatal(a, b, c)
	}
	sp.release(a, 2)
	sp.release(b, 3)
	if len(sp.free) != 1 || sp.free[0] != (extent{0, 5}) {
		t.Fatalf("not coalesced: %+v", sp.free)
	}
	sp.release(c, 2)
	if sp.bump != 0 || len(sp.free) != 0 || sp.available() != 10 {
		t.Fatalf("bump not lowered: %+v", sp)
	}
	sp.rebuild([]extent{{6, 2}, {1, 2}})
	if sp.bump != 8 || len(sp.free) != 2 || sp.free[0] != (extent{0, 1}) || sp.free[1] != (extent{3, 3}) {
		t.Fatalf("rebuild: %+v", sp)
	}
	if _, ok := sp.alloc(4); ok {
		t.Fatal("alloc of 4 with 3 contiguous and 2 at the end")
	}
	if off, ok := sp.alloc(3); !ok || off != 3 {
		t.Fatal(off, ok)
	}
}
