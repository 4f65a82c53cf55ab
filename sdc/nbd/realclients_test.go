package nbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tests against the real clients pflex must serve. Each is skipped only when
// its binary is not installed.

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed: %v", name, err)
	}
}

func runTool(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = t.TempDir() // fio leaves verify state files in its working directory
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func randomFile(t *testing.T, size int) (string, [32]byte) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	path := filepath.Join(t.TempDir(), "in.img")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, sha256.Sum256(b)
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func exportSum(t *testing.T, e Export) [32]byte {
	t.Helper()
	b := make([]byte, e.Size())
	if err := e.ReadAt(t.Context(), b, 0); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestNbdinfo(t *testing.T) {
	needTool(t, "nbdinfo")
	ts := startServer(t, nil)
	ts.exports.Add("vol", "volume one", NewMemExport(64<<20))
	ts.exports.Add("snap", "read-only map", NewReadOnlyExport(NewMemExport(1<<20)))

	out := runTool(t, 20*time.Second, "nbdinfo", ts.uri("vol"))
	for _, want := range []string{`export="vol"`, "export-size: 67108864", "description: volume one",
		"can_multi_conn: true", "can_fua: true", "can_trim: true", "can_zero: true", "block_size_maximum: 33554432"} {
		if !strings.Contains(out, want) {
			t.Errorf("nbdinfo output lacks %q:\n%s", want, out)
		}
	}
	out = runTool(t, 20*time.Second, "nbdinfo", ts.uri("snap"))
	if !strings.Contains(out, "is_read_only: true") {
		t.Errorf("read-only export not shown read-only:\n%s", out)
	}
	out = runTool(t, 20*time.Second, "nbdinfo", "--list", "nbd://"+ts.addr)
	for _, want := range []string{`export="vol"`, `export="snap"`, "description: read-only map"} {
		if !strings.Contains(out, want) {
			t.Errorf("nbdinfo --list output lacks %q:\n%s", want, out)
		}
	}
}

func TestQemuIO(t *testing.T) {
	needTool(t, "qemu-io")
	ts := startServer(t, nil)
	mem := NewMemExport(16 << 20)
	ts.exports.Add("vol", "", mem)
	out := runTool(t, 30*time.Second, "qemu-io", "-f", "raw", ts.uri("vol"),
		"-c", "write -P 0xab 0 4M",
		"-c", "read -P 0xab 0 4M",
		"-c", "write -P 0xcd 1000 70001", // unaligned offset and length
		"-c", "read -P 0xab 0 1000",
		"-c", "read -P 0xcd 1000 70001",
		"-c", "read -P 0xab 71001 1000",
		"-c", "write -f -P 0x11 5M 3333", // FUA
		"-c", "read -P 0x11 5M 3333",
		"-c", "write -z 6M 1M", // WRITE_ZEROES
		"-c", "read -P 0 6M 1M",
		"-c", "discard 1M 1M", // TRIM
		"-c", "flush",
	)
	if strings.Contains(out, "fail") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io reported a failure:\n%s", out)
	}
	b := make([]byte, 3)
	mem.ReadAt(t.Context(), b, 999)
	if !bytes.Equal(b, []byte{0xab, 0xcd, 0xcd}) {
		t.Fatalf("backend bytes at 999: %x", b)
	}
	if st := ts.srv.Stats(); st.Writes < 3 || st.Flushes < 1 || st.Trims < 1 || st.WriteZeroes < 1 {
		t.Fatalf("stats after qemu-io: %+v", st)
	}
}

func TestQemuImgConvert(t *testing.T) {
	needTool(t, "qemu-img")
	ts := startServer(t, nil)
	mem := NewMemExport(16 << 20)
	ts.exports.Add("vol", "", mem)
	in, sum := randomFile(t, 16<<20)
	runTool(t, 60*time.Second, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", in, ts.uri("vol"))
	if exportSum(t, mem) != sum {
		t.Fatal("export differs from the file converted in")
	}
	out := filepath.Join(t.TempDir(), "out.img")
	runTool(t, 60*time.Second, "qemu-img", "convert", "-f", "raw", "-O", "raw", ts.uri("vol"), out)
	if fileSum(t, out) != sum {
		t.Fatal("file converted out differs")
	}
}

func TestQemuImgConvertFileExport(t *testing.T) {
	needTool(t, "qemu-img")
	path := filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 8<<20); err != nil {
		t.Fatal(err)
	}
	fe, err := OpenFileExport(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer fe.Close()
	ts := startServer(t, nil)
	ts.exports.Add("file", "", fe)
	in, sum := randomFile(t, 8<<20)
	runTool(t, 60*time.Second, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", in, ts.uri("file"))
	if fileSum(t, path) != sum {
		t.Fatal("backing file differs from the file converted in")
	}
}

func TestNbdcopyMultiConn(t *testing.T) {
	needTool(t, "nbdcopy")
	ts := startServer(t, nil)
	mem := NewMemExport(64 << 20)
	ts.exports.Add("vol", "", mem)
	in, sum := randomFile(t, 64<<20)

	before := ts.srv.Stats().Handshakes
	runTool(t, 60*time.Second, "nbdcopy", in, ts.uri("vol"))
	conns := ts.srv.Stats().Handshakes - before
	if exportSum(t, mem) != sum {
		t.Fatal("export differs from the file copied in")
	}
	out := filepath.Join(t.TempDir(), "out.img")
	if err := os.WriteFile(out, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	runTool(t, 60*time.Second, "nbdcopy", ts.uri("vol"), out)
	if fileSum(t, out) != sum {
		t.Fatal("file copied out differs")
	}
	t.Logf("nbdcopy in used %d connections; stats %+v", conns, ts.srv.Stats())
	if conns < 2 {
		t.Errorf("nbdcopy used %d connection(s); multi-conn not exercised", conns)
	}
}

func TestFio(t *testing.T) {
	needTool(t, "fio")
	help, err := exec.Command("fio", "--enghelp").CombinedOutput()
	if err != nil || !strings.Contains(string(help), "nbd") {
		t.Skipf("fio has no nbd ioengine compiled in (fio --enghelp: %v)", err)
	}
	ts := startServer(t, nil)
	ts.exports.Add("vol", "", NewMemExport(32<<20))
	out := runTool(t, 60*time.Second, "fio", "--name=nbdverify", "--ioengine=nbd", "--uri="+ts.uri("vol"),
		"--rw=randrw", "--bs=4k", "--iodepth=16", "--size=32m", "--verify=crc32c", "--do_verify=1",
		"--verify_fatal=1", "--runtime=3")
	if !strings.Contains(out, "err= 0") {
		t.Fatalf("fio did not report err= 0:\n%s", out)
	}
	st := ts.srv.Stats()
	if st.Reads == 0 || st.Writes == 0 || st.Errors != 0 {
		t.Fatalf("stats after fio: %+v", st)
	}
	t.Logf("fio: %d reads, %d writes", st.Reads, st.Writes)
}
