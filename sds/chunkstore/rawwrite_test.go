package chunkstore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Raw writes land where the ordinary ones would, and a slow raw write turns the raw path off for
// the backoff while the device's writes go on through os.File.
func TestRawWriteBacksOffAfterASlowWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.img")
	d, err := openDevice(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.f.Close()
	d.nowaitWrite.Disable() // as on ext4: every write is offered to the raw path
	d.rawWrite.slow = time.Hour

	first := pattern(100<<10, 3) // four pieces, the last one short
	if err := d.writeAt(first, 8192); err != nil {
		t.Fatal(err)
	}
	if n := d.rawWrite.backoffs.Load(); n != 0 {
		t.Fatalf("%d backoffs with nothing slow", n)
	}
	if k := d.rawWrite.do(first[:4096], 8192); k != 4096 {
		t.Fatalf("raw path wrote %d of 4096 bytes while on", k)
	}

	d.rawWrite.slow = -1 // every raw write now counts as slow
	second := pattern(100<<10, 4)
	if err := d.writeAt(second, 300<<10); err != nil {
		t.Fatal(err)
	}
	if n := d.rawWrite.backoffs.Load(); n != 1 {
		t.Fatalf("%d backoffs after a slow write, want 1 (the later pieces must not be tried raw)", n)
	}
	if k := d.rawWrite.do(second[:4096], 300<<10); k != 0 {
		t.Fatalf("raw path wrote %d bytes during its backoff", k)
	}
	d.rawWrite.offUntil.Store(0) // the backoff has passed
	if k := d.rawWrite.do(second[:4096], 300<<10); k != 4096 {
		t.Fatalf("raw path wrote %d of 4096 bytes after its backoff", k)
	}

	on, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(on[8192:8192+len(first)], first) || !bytes.Equal(on[300<<10:300<<10+len(second)], second) {
		t.Fatal("file content differs from what was written")
	}
}

// A write error on the raw path is left to the ordinary call, which reports it.
func TestRawWriteLeavesErrorsToTheOrdinaryCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.img")
	d, err := openDevice(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	d.f.Close()
	if k := d.rawWrite.do(pattern(4096, 1), 0); k != 0 {
		t.Fatalf("raw path wrote %d bytes to a closed device", k)
	}
	if err := d.writeAt(pattern(4096, 1), 0); err == nil {
		t.Fatal("write to a closed device succeeded")
	}
}
