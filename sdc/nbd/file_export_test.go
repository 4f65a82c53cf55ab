package nbd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func newTestFileExport(t *testing.T, size int64) (*FileExport, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	fe, err := OpenFileExport(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fe.Close() })
	return fe, path
}

func blocks(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

func TestFileExportFlushAndFUA(t *testing.T) {
	fe, _ := newTestFileExport(t, 1<<20)
	ctx := t.Context()
	if err := fe.WriteAt(ctx, []byte("durable"), 10, true); err != nil {
		t.Fatal(err)
	}
	if err := fe.Flush(ctx); err != nil {
		t.Fatalf("Flush (fdatasync): %v", err)
	}
	b := make([]byte, 7)
	if err := fe.ReadAt(ctx, b, 10); err != nil || string(b) != "durable" {
		t.Fatalf("read back %q, %v", b, err)
	}
}

func TestFileExportTrimPunchesHole(t *testing.T) {
	fe, path := newTestFileExport(t, 4<<20)
	ctx := t.Context()
	data := bytes.Repeat([]byte{0x5a}, 4<<20)
	if err := fe.WriteAt(ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := fe.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	full := blocks(t, path)
	err := punchHole(fe.f, 0, 4096)
	if errors.Is(err, errUnsupported) {
		t.Skip("filesystem of the temp dir cannot punch holes")
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := fe.Trim(ctx, 1<<20, 2<<20); err != nil {
		t.Fatal(err)
	}
	if after := blocks(t, path); after >= full {
		t.Fatalf("st_blocks %d after trim, was %d: no hole punched", after, full)
	}
	// Trimmed ranges read as zeroes; the size is unchanged.
	if err := fe.WriteZeroes(ctx, 3<<20, 100, true, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4<<20)
	if err := fe.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	clear(want[:4096])
	clear(want[1<<20 : 3<<20])
	clear(want[3<<20 : 3<<20+100])
	if !bytes.Equal(got, want) {
		t.Fatal("contents after trim and write zeroes differ")
	}
	if fi, _ := os.Stat(path); fi.Size() != 4<<20 {
		t.Fatalf("size changed to %d", fi.Size())
	}
}

func TestFileExportReadOnly(t *testing.T) {
	_, path := newTestFileExport(t, 4096)
	fe, err := OpenFileExport(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer fe.Close()
	if !fe.ReadOnly() {
		t.Fatal("not read-only")
	}
	if err := fe.WriteAt(t.Context(), []byte{1}, 0, false); !errors.Is(err, ErrPerm) {
		t.Fatalf("write to read-only file export: %v", err)
	}
}
