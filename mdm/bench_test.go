package mdm_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"pflex/internal/api"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pflex/mdm"
	"pflex/mdm/mdmtest"
)

// Benchmarks against three real `pflex mdm` processes on loopback, fsync on, default timing.
// Run with `make bench` (figures go to docs/BENCHMARKS.md).

func benchCluster(b *testing.B) (*mdmtest.ProcCluster, int) {
	// PFLEX_BENCH_BIN runs a prebuilt binary: two builds can then be compared back to back with
	// the same load generator.
	bin := os.Getenv("PFLEX_BENCH_BIN")
	if bin == "" {
		bin = mdmtest.BuildBinary(b)
	}
	var rs *mdm.RaftSettings
	if os.Getenv("PFLEX_BENCH_NOSYNC") != "" {
		rs = &mdm.RaftSettings{NoSync: true}
	}
	p := mdmtest.StartProcesses(b, bin, 3, rs)
	leader := p.WaitLeader(20 * time.Second)
	for _, req := range []struct {
		path string
		body map[string]any
	}{
		{"/pd/create", map[string]any{"name": "bench-pd"}},
		{"/pool/create", map[string]any{"name": "bench-pool", "pd_id": 1, "total_capacity_gb": 1024}},
		{"/vol/create", map[string]any{"name": "bench-vol", "size_gb": 8, "pool_id": 1}},
	} {
		if code, _, err := mdmtest.DoJSON(p.URL(leader), "", "POST", req.path, req.body, nil); err != nil || code != 200 {
			b.Fatalf("setup %s: %d %v", req.path, code, err)
		}
	}
	return p, leader
}

var benchRequestSeq atomic.Int64

// cpuTime is the CPU time (user + system) a process has used so far: pid 0 is this one.
func cpuTime(b *testing.B, pid int) time.Duration {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatalf("cpu time: %v", err)
	}
	// Fields after the parenthesised command name; utime and stime are the 14th and 15th.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100) // USER_HZ
}

// clusterCPU is the CPU time used so far by the MDM processes and by this load generator.
func clusterCPU(b *testing.B, p *mdmtest.ProcCluster) (mdms, client time.Duration) {
	for i := range p.Cfgs {
		mdms += cpuTime(b, p.Pid(i))
	}
	return mdms, cpuTime(b, 0)
}

// putLabel writes one label the way the CLI does: with a request id, so a retry would be
// deduplicated (the MDM remembers each outcome).
func putLabel(client *http.Client, url, key, value string) (int, error) {
	body, _ := json.Marshal(map[string]string{"value": value})
	req, _ := http.NewRequest("PUT", url+"/vol/1/labels/"+key, bytes.NewReader(body))
	req.Header.Set(api.HeaderRequestID, fmt.Sprintf("bench-%d-%d", os.Getpid(), benchRequestSeq.Add(1)))
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	var sink [512]byte
	for {
		if _, err := resp.Body.Read(sink[:]); err != nil {
			break
		}
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// leanClient is the load generator's HTTP/1.1 client for BenchmarkCommit: one keep-alive
// connection, the same request bytes as net/http sends for putLabel (request line, Host,
// Content-Length, Content-Type, X-Pflex-Request-Id, JSON body), and a response parser that
// reads the status, Content-Length and body. The load generator shares the two cores with the
// three MDMs, and net/http's client (two goroutines per connection, channel hand-offs, header
// maps) cost about as much CPU per write as a follower; the server path is unchanged. Set
// PFLEX_BENCH_CLIENT=nethttp to measure with net/http instead.
type leanClient struct {
	addr string // host:port
	conn net.Conn
	r    *bufio.Reader
	req  []byte
}

func (c *leanClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// putLabel writes label key = value on volume 1 with a fresh request id.
func (c *leanClient) putLabel(key, value string) (int, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return 0, err
		}
		c.conn, c.r = conn, bufio.NewReaderSize(conn, 4096)
	}
	body, _ := json.Marshal(api.LabelRequest{Value: value})
	c.req = append(c.req[:0], "PUT /vol/1/labels/"...)
	c.req = append(c.req, key...)
	c.req = append(c.req, " HTTP/1.1\r\nHost: "...)
	c.req = append(c.req, c.addr...)
	c.req = append(c.req, "\r\nContent-Length: "...)
	c.req = strconv.AppendInt(c.req, int64(len(body)), 10)
	c.req = append(c.req, "\r\nContent-Type: application/json\r\n"...)
	c.req = append(c.req, api.HeaderRequestID...)
	c.req = append(c.req, ": bench-"...)
	c.req = strconv.AppendInt(c.req, int64(os.Getpid()), 10)
	c.req = append(c.req, '-')
	c.req = strconv.AppendInt(c.req, benchRequestSeq.Add(1), 10)
	c.req = append(c.req, "\r\n\r\n"...)
	c.req = append(c.req, body...)
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	code, err := c.roundTrip()
	if err != nil {
		c.close()
	}
	return code, err
}

func (c *leanClient) roundTrip() (int, error) {
	if _, err := c.conn.Write(c.req); err != nil {
		return 0, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length, closeAfter := -1, false
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, fmt.Errorf("unexpected Transfer-Encoding %q", value)
		case bytes.EqualFold(name, []byte("Connection")):
			closeAfter = bytes.EqualFold(value, []byte("close"))
		}
	}
	if length < 0 {
		return 0, fmt.Errorf("response without Content-Length")
	}
	if code != http.StatusOK {
		body := make([]byte, length)
		if _, err := io.ReadFull(c.r, body); err != nil {
			return 0, err
		}
		if closeAfter {
			c.close()
		}
		return code, fmt.Errorf("%s", bytes.TrimSpace(body))
	}
	if _, err := c.r.Discard(length); err != nil {
		return 0, err
	}
	if closeAfter {
		c.close()
	}
	return code, nil
}

// BenchmarkCommit measures committed label writes through the leader with 1, 16 and 64
// concurrent clients: throughput and latency percentiles.
func BenchmarkCommit(b *testing.B) {
	p, leader := benchCluster(b)
	url := p.URL(leader)
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients * 2}, Timeout: 10 * time.Second}
			netHTTP := os.Getenv("PFLEX_BENCH_CLIENT") == "nethttp"
			var next atomic.Int64
			lat := make([][]time.Duration, clients)
			var failed atomic.Int64
			var firstFailure atomic.Value
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			mdmCPU0, clientCPU0 := clusterCPU(b, p)
			st0 := p.Status(leader)
			index0 := st0.CommitIndex
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func(c int) {
					defer wg.Done()
					lean := &leanClient{addr: p.Cfgs[leader].APIAddr}
					defer lean.close()
					for {
						n := next.Add(1)
						if n > int64(b.N) {
							return
						}
						t0 := time.Now()
						key := "k" + strconv.FormatInt(n%4096, 10)
						var code int
						var err error
						if netHTTP {
							code, err = putLabel(client, url, key, "v")
						} else {
							code, err = lean.putLabel(key, "v")
						}
						if err != nil || code != 200 {
							if failed.Add(1) == 1 {
								firstFailure.Store(fmt.Sprintf("status %d, error %v", code, err))
							}
							continue
						}
						lat[c] = append(lat[c], time.Since(t0))
					}
				}(c)
			}
			wg.Wait()
			elapsed := time.Since(start)
			mdmCPU, clientCPU := clusterCPU(b, p)
			b.StopTimer()
			st := p.Status(leader)
			entries := st.CommitIndex - index0
			var all []time.Duration
			for _, l := range lat {
				all = append(all, l...)
			}
			if failed.Load() > 0 {
				b.Fatalf("%d writes failed (raft term %d -> %d); the first: %v", failed.Load(), st0.Term, st.Term, firstFailure.Load())
			}
			sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
			pct := func(q float64) float64 {
				if len(all) == 0 {
					return 0
				}
				return float64(all[int(q*float64(len(all)-1))].Microseconds()) / 1000
			}
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "writes/s")
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(pct(1.0), "max-ms")
			// CPU per write: steadier than throughput on a machine shared with other work.
			b.ReportMetric(float64((mdmCPU-mdmCPU0).Microseconds())/float64(len(all)), "mdm-cpu-us/write")
			b.ReportMetric(float64((clientCPU-clientCPU0).Microseconds())/float64(len(all)), "client-cpu-us/write")
			// How well group commit batches: writes per raft log entry.
			b.ReportMetric(float64(len(all))/float64(max(entries, 1)), "writes/entry")
		})
	}
}

// BenchmarkLeaderKillFailover kills the leader with SIGKILL ten times and measures the time to
// a new leader and to the first write acknowledged through a surviving MDM.
func BenchmarkLeaderKillFailover(b *testing.B) {
	p, _ := benchCluster(b)
	const reps = 10
	var toLeader, toWrite []time.Duration
	for n := 0; n < b.N; n++ {
		for r := 0; r < reps; r++ {
			p.WaitConverged(30 * time.Second)
			leader := p.WaitLeader(20 * time.Second)
			var survivors []string
			for i := range p.Cfgs {
				if i != leader {
					survivors = append(survivors, p.URL(i))
				}
			}
			client := &http.Client{Timeout: 2 * time.Second}
			// Warm the connections so the measurement is of failover, not of dialling.
			putLabel(client, survivors[0], "failover", "warm")
			t0 := time.Now()
			p.Kill9(leader)
			var leaderAt, writeAt time.Duration
			for attempt := 0; writeAt == 0 && time.Since(t0) < 30*time.Second; attempt++ {
				code, err := putLabel(client, survivors[attempt%2], "failover", fmt.Sprint(r))
				if err == nil && code == 200 {
					writeAt = time.Since(t0)
				} else {
					time.Sleep(5 * time.Millisecond)
				}
				if leaderAt == 0 {
					for i := range p.Cfgs {
						if i != leader {
							if st := p.Status(i); st != nil && st.State == "leader" {
								leaderAt = time.Since(t0)
							}
						}
					}
				}
			}
			if leaderAt == 0 {
				leaderAt = writeAt
			}
			b.Logf("rep %d: killed %s, new leader after %s, first write after %s", r+1, p.Cfgs[leader].NodeID,
				leaderAt.Round(time.Millisecond), writeAt.Round(time.Millisecond))
			toLeader = append(toLeader, leaderAt)
			toWrite = append(toWrite, writeAt)
			p.Start(leader)
		}
	}
	med := func(d []time.Duration) float64 {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return float64(s[len(s)/2].Milliseconds())
	}
	worst := func(d []time.Duration) float64 {
		m := d[0]
		for _, x := range d {
			m = max(m, x)
		}
		return float64(m.Milliseconds())
	}
	b.ReportMetric(med(toLeader), "leader-median-ms")
	b.ReportMetric(worst(toLeader), "leader-worst-ms")
	b.ReportMetric(med(toWrite), "write-median-ms")
	b.ReportMetric(worst(toWrite), "write-worst-ms")
}
