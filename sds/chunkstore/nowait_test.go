package chunkstore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The page-cache fast path and the ordinary calls must agree, whichever serves a request and
// wherever one hands over to the other.
func TestNowaitPathsAgree(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dev.img")
	d, err := openDevice(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.f.Close()
	data := pattern(256<<10, 9)
	if err := d.writeAt(data, 4096); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := d.readAt(got, 4096); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("readAt after writeAt: %v, equal %v", err, bytes.Equal(got, data))
	}
	if d.nowaitRead.Off() {
		t.Log("this kernel or filesystem refuses RWF_NOWAIT reads; the ordinary path served them")
	}
	// Half from the fast path, half from the ordinary one: the fast path stops where it must.
	n := d.nowaitRead.Do(got[:4096], 4096)
	if n != 0 && n != 4096 {
		t.Fatalf("fast path read %d of 4096 cached bytes", n)
	}
	// A read beyond the end of the file: the fast path reads nothing, the ordinary call says EOF.
	if err := d.readAt(make([]byte, 10), 2<<20); err == nil {
		t.Fatal("read beyond the end of the device succeeded")
	}
	on, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(on[4096:4096+len(data)], data) {
		t.Fatalf("file content differs from what was written (%v)", err)
	}
}
