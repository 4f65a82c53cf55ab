package systest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchPprofDir (PFLEX_BENCH_PPROF): when set, the SDS and SDC processes serve /debug/pprof on
// their mgmt listener and BenchmarkNBDAgainstQemuNBD saves a CPU profile of each during every
// pflex job there.
var benchPprofDir = os.Getenv("PFLEX_BENCH_PPROF")

// cpuTicks is the user+system CPU time a process has used, in clock ticks (1/100 s on Linux).
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may contain spaces): state is field 3, utime 14, stime 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// cpuMeter measures the CPU time of a set of processes over a job.
type cpuMeter struct {
	pids  []int
	start int64
	at    time.Time
}

func startCPU(pids ...int) *cpuMeter {
	m := &cpuMeter{pids: pids, at: time.Now()}
	for _, p := range pids {
		m.start += cpuTicks(p)
	}
	return m
}

// perOp returns the CPU microseconds used per IO at iops since startCPU.
func (m *cpuMeter) perOp(iops float64) float64 {
	var end int64
	for _, p := range m.pids {
		end += cpuTicks(p)
	}
	cpuSec := float64(end-m.start) / 100
	return 1e6 * cpuSec / time.Since(m.at).Seconds() / iops
}

// profile saves a CPU profile of the process serving pprof on mgmt into path.
func profile(b *testing.B, mgmt, path string, d time.Duration) {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", mgmt, int(d.Seconds())))
	if err != nil {
		b.Logf("profile %s: %v", mgmt, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Logf("profile %s: %v", path, err)
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}

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
// -> secondary SDS, two copies) and through qemu-nbd serving a local raw file, in one run; and
// through nbdkit's file plugin too when nbdkit is installed (a second yardstick: the targets are
// set against qemu-nbd, but its 1 MiB requests are costly on some machines, docs/BENCHMARKS.md).
// A second table runs the large and the QD16 jobs with every server on a Unix socket (the SDC's
// nbd_socket), as clients on the same host would reach them.
func BenchmarkNBDAgainstQemuNBD(b *testing.B) {
	for _, tool := range []string{"fio", "qemu-nbd"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed", tool)
		}
	}
	ic := startIOClusterTB(b)
	ic.volume("bench", 2, "readWrite")

	dir := b.TempDir()
	qemu := func(l listenOn, raw string) *exec.Cmd {
		where := []string{"-b", "127.0.0.1", "-p", fmt.Sprint(l.port)}
		if l.socket != "" {
			where = []string{"-k", l.socket}
		}
		return exec.Command("qemu-nbd", append(append([]string{"-f", "raw", "-t"}, where...), "-x", "local", raw)...)
	}
	// qemu-nbd allocates a fresh buffer per request; glibc hands 1 MiB ones back to the kernel
	// when they are freed (mmap threshold, heap trimming), so every large request page-faults
	// its buffer in again, which costs 3-4 ms per MiB on some virtual machines (docs/BENCHMARKS.md,
	// machine E). With the thresholds raised glibc keeps the memory: qemu-nbd as it runs where
	// page faults are cheap.
	qemuTuned := func(l listenOn, raw string) *exec.Cmd {
		cmd := qemu(l, raw)
		cmd.Env = append(os.Environ(), "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456")
		return cmd
	}
	nbdkit := func(l listenOn, raw string) *exec.Cmd {
		if l.socket != "" {
			return exec.Command("nbdkit", "-f", "-U", l.socket, "file", raw)
		}
		return exec.Command("nbdkit", "-f", "-i", "127.0.0.1", "-p", fmt.Sprint(l.port), "file", raw)
	}
	_, nbdkitErr := exec.LookPath("nbdkit")
	if nbdkitErr != nil {
		b.Log("nbdkit not installed: qemu-nbd is the only baseline")
	}
	var tcp, unix []*baseline
	for _, onUnix := range []bool{false, true} {
		servers := map[string]func(listenOn, string) *exec.Cmd{"qemu-tuned": qemuTuned}
		names := []string{"qemu-tuned"}
		if !onUnix {
			servers["qemu"] = qemu
			names = append([]string{"qemu"}, names...)
		}
		if nbdkitErr == nil {
			servers["nbdkit"] = nbdkit
			names = append(names, "nbdkit")
		}
		for _, name := range names {
			bl := startBaseline(b, ic, name, dir, onUnix, servers[name])
			if onUnix {
				unix = append(unix, bl)
			} else {
				tcp = append(tcp, bl)
			}
		}
	}

	// Fill the region first so reads hit written data on every side (a Unix socket baseline
	// has a file of its own).
	const size = "512m"
	uris := []string{ic.uri("bench")}
	for _, bl := range append(tcp, unix...) {
		uris = append(uris, bl.uri)
	}
	for _, uri := range uris {
		exec.Command("fio", "--name=fill", "--ioengine=nbd", "--uri="+uri, "--rw=write", "--bs=1m", "--iodepth=8", "--size="+size).Run()
	}
	var unixJobs []fioJob
	for _, j := range fioJobs {
		if j.depth > 1 {
			unixJobs = append(unixJobs, j)
		}
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		benchTable(b, ic, "TCP", ic.uri("bench"), tcp, fioJobs, size)
		benchTable(b, ic, "Unix", ic.unixURI("bench"), unix, unixJobs, size)
	}
}

// benchTable runs jobs through pflexURI and each baseline and logs a table of IOPS, ratios,
// MB/s and CPU per operation.
func benchTable(b *testing.B, ic *ioCluster, transport, pflexURI string, bases []*baseline, jobs []fioJob, size string) {
	head := fmt.Sprintf("%-20s %12s", "job ("+transport+")", "pflex IOPS")
	for _, bl := range bases {
		head += fmt.Sprintf(" %12s %7s", bl.name+" IOPS", "ratio")
	}
	head += fmt.Sprintf("   %12s", "pflex MB/s")
	for _, bl := range bases {
		head += fmt.Sprintf(" %12s", bl.name+" MB/s")
	}
	head += fmt.Sprintf("   %14s", "pflex CPU/op")
	for _, bl := range bases {
		head += fmt.Sprintf(" %14s", bl.name+" CPU/op")
	}
	b.Log(head)
	pflexPids := []int{ic.sdc.Pid()}
	for _, s := range ic.sdss {
		pflexPids = append(pflexPids, s.Pid())
	}
	for _, j := range jobs {
		var wg sync.WaitGroup
		if benchPprofDir != "" {
			name := strings.ReplaceAll(j.name, " ", "_") + "-" + transport
			for _, c := range append([]component{ic.sdc}, ic.sdss...) {
				wg.Go(func() {
					time.Sleep(2 * time.Second)
					profile(b, c.mgmt, filepath.Join(benchPprofDir, name+"-"+c.Name+".pprof"), 5*time.Second)
				})
			}
		}
		pm := startCPU(pflexPids...)
		p := runFio(b, pflexURI, j, size, 8*time.Second)
		pCPU := pm.perOp(p.iops)
		wg.Wait()
		metric := strings.ReplaceAll(j.name, " ", "_")
		if transport != "TCP" {
			metric += "-" + transport
		}
		b.ReportMetric(p.iops, metric+"-pflex-iops")
		line := fmt.Sprintf("%-20s %12.0f", j.name, p.iops)
		mbps := fmt.Sprintf("   %12.1f", p.mbps)
		cpu := fmt.Sprintf("   %11.1f µs", pCPU)
		for _, bl := range bases {
			m := startCPU(bl.cmd.Process.Pid)
			r := runFio(b, bl.uri, j, size, 8*time.Second)
			line += fmt.Sprintf(" %12.0f %6.0f%%", r.iops, 100*p.iops/r.iops)
			mbps += fmt.Sprintf(" %12.1f", r.mbps)
			cpu += fmt.Sprintf(" %11.1f µs", m.perOp(r.iops))
			b.ReportMetric(r.iops, metric+"-"+bl.name+"-iops")
		}
		b.Log(line + mbps + cpu)
	}
}

// baseline is a reference NBD server on a local sparse raw file.
type baseline struct {
	name, uri string
	cmd       *exec.Cmd
}

// listenOn is where a baseline listens: a port on 127.0.0.1, or a Unix socket when socket is set.
type listenOn struct {
	port   int
	socket string
}

func startBaseline(b *testing.B, ic *ioCluster, name, dir string, onUnix bool, command func(l listenOn, raw string) *exec.Cmd) *baseline {
	file := name
	if onUnix {
		file += "-unix"
	}
	raw := filepath.Join(dir, file+".img")
	if err := os.WriteFile(raw, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(raw, 2<<30); err != nil {
		b.Fatal(err)
	}
	var l listenOn
	var uri string
	if onUnix {
		l.socket = filepath.Join(dir, file+".sock")
		uri = "nbd+unix:///local?socket=" + l.socket
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		l.port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		uri = fmt.Sprintf("nbd://127.0.0.1:%d/local", l.port)
	}
	cmd := command(l, raw)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	bl := &baseline{name: name, uri: uri, cmd: cmd}
	ic.waitFor(name+" up", 10*time.Second, func() bool { return exec.Command("nbdinfo", bl.uri).Run() == nil })
	return bl
}

type fioSide struct {
	IOPS    float64 `json:"iops"`
	BWBytes float64 `json:"bw_bytes"`
}
