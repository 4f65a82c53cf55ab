package systest

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fioJob is one fio measurement.
type fioJob struct {
	name, rw string
	bs       string
	depth    int
}

var fioJobs = []fioJob{
	{"4k randread QD1", "randread", "4k", 1},
	{"4k randread QD16", "randread", "4k", 16},
	{"4k randwrite QD1", "randwrite", "4k", 1},
	{"4k randwrite QD16", "randwrite", "4k", 16},
	{"1M seq write QD4", "write", "1m", 4},
	{"1M seq read QD4", "read", "1m", 4},
}

type fioResult struct {
	iops float64
	mbps float64
}

// runFio runs one job against uri for runtime and returns read+write IOPS and MB/s.
func runFio(b *testing.B, uri string, j fioJob, size string, runtime time.Duration) fioResult {
	args := []string{"--name=bench", "--ioengine=nbd", "--uri=" + uri, "--rw=" + j.rw, "--bs=" + j.bs,
		fmt.Sprintf("--iodepth=%d", j.depth), "--size=" + size, "--time_based", fmt.Sprintf("--runtime=%ds", int(runtime.Seconds())),
		"--ramp_time=1s", "--output-format=json"}
	out, err := exec.Command("fio", args...).Output()
	if err != nil {
		b.Fatalf("fio %s: %v", j.name, err)
	}
	var r struct {
		Jobs []struct {
			Read  fioSide `json:"read"`
			Write fioSide `json:"write"`
		} `json:"jobs"`
	}
	// fio may print notes before the JSON.
	if i := strings.IndexByte(string(out), '{'); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Jobs) == 0 {
		b.Fatalf("fio %s output: %v", j.name, err)
	}
	jr := r.Jobs[0]
	return fioResult{iops: jr.Read.IOPS + jr.Write.IOPS, mbps: (jr.Read.BWBytes + jr.Write.BWBytes) / 1e6}
}

// BenchmarkNBDAgainstQemuNBD runs the same fio jobs through a pflex volume (SDC -> primary SDS
// -> secondary SDS, two copies) and through qemu-nbd serving a local raw file, in one run.
func BenchmarkNBDAgainstQemuNBD(b *testing.B) {
	for _, tool := range []string{"fio", "qemu-nbd"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed", tool)
		}
	}
	ic := startIOClusterTB(b)
	ic.volume("bench", 2, "readWrite")
	pflexURI := ic.uri("bench")

	dir := b.TempDir()
	raw := filepath.Join(dir, "local.img")
	if err := os.WriteFile(raw, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	os.Truncate(raw, 2<<30)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	qemu := exec.Command("qemu-nbd", "-f", "raw", "-t", "-b", "127.0.0.1", "-p", fmt.Sprint(port), "-x", "local", raw)
	if err := qemu.Start(); err != nil {
		b.Fatal(err)
	}
	defer qemu.Process.Kill()
	qemuURI := fmt.Sprintf("nbd://127.0.0.1:%d/local", port)
	ic.waitFor("qemu-nbd up", 10*time.Second, func() bool { return exec.Command("nbdinfo", qemuURI).Run() == nil })

	// Fill the region first so reads hit written data on both sides.
	const size = "512m"
	for _, uri := range []string{pflexURI, qemuURI} {
		exec.Command("fio", "--name=fill", "--ioengine=nbd", "--uri="+uri, "--rw=write", "--bs=1m", "--iodepth=8", "--size="+size).Run()
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		b.Logf("%-20s %12s %12s %10s   %12s %12s", "job", "pflex IOPS", "qemu IOPS", "ratio", "pflex MB/s", "qemu MB/s")
		for _, j := range fioJobs {
			p := runFio(b, pflexURI, j, size, 8*time.Second)
			q := runFio(b, qemuURI, j, size, 8*time.Second)
			b.Logf("%-20s %12.0f %12.0f %9.0f%%   %12.1f %12.1f", j.name, p.iops, q.iops, 100*p.iops/q.iops, p.mbps, q.mbps)
			b.ReportMetric(p.iops, strings.ReplaceAll(j.name, " ", "_")+"-pflex-iops")
			b.ReportMetric(q.iops, strings.ReplaceAll(j.name, " ", "_")+"-qemu-iops")
		}
	}
}

type fioSide struct {
	IOPS    float64 `json:"iops"`
	BWBytes float64 `json:"bw_bytes"`
}
