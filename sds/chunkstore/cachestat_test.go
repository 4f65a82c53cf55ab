package chunkstore

import (
	"bytes"
	"path/filepath"
	"testing"
)

func TestResidentSeesWrittenPagesAndNotHoles(t *testing.T) {
	d, err := openDevice(filepath.Join(t.TempDir(), "dev.img"), 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.f.Close()
	if d.resident.off.Load() {
		t.Skip("this kernel has no cachestat(2) (Linux < 6.5): writes always go in pieces")
	}
	data := bytes.Repeat([]byte{7}, 1<<20)
	if err := d.writeAt(data, 1<<20); err != nil { // a fresh range: written in pieces
		t.Fatal(err)
	}
	if !d.resident.all(1<<20, 1<<20) || !d.resident.all(1<<20+100, 5000) {
		t.Fatal("pages just written are not reported cached")
	}
	if d.resident.all(0, 1<<20) || d.resident.all(2<<20-4096, 8192) {
		t.Fatal("a never-written range (or one half of it) is reported cached")
	}
	// An overwrite of the cached range (one system call) lands like any other write.
	data2 := bytes.Repeat([]byte{9}, 1<<20-10)
	if err := d.writeAt(data2, 1<<20+5); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if err := d.readAt(got, 1<<20); err != nil {
		t.Fatal(err)
	}
	if got[4] != 7 || got[5] != 9 || got[1<<20-6] != 9 || got[1<<20-5] != 7 {
		t.Fatalf("overwrite landed wrong: %v %v %v %v", got[4], got[5], got[1<<20-6], got[1<<20-5])
	}
}
