package wire

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchHandler acknowledges writes and serves reads from a pooled buffer, doing no IO, so the
// benchmark measures the protocol and loopback TCP.
func benchHandler(ctx context.Context, req *Request) Response {
	if req.Op == OpRead {
		return Response{Data: req.ReplyBuffer(int(req.Length))}
	}
	return Response{}
}

// runConcurrent runs b.N calls of do spread over callers goroutines and reports ops/s.
func runConcurrent(b *testing.B, callers int, do func(buf []byte) error) {
	b.ReportAllocs()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0 := cpuTime()
	for range callers {
		wg.Go(func() {
			buf := make([]byte, 4096)
			for next.Add(1) <= int64(b.N) {
				if err := do(buf); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	// CPU per op (client and server together) is steadier than ops/s on a shared machine.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkWrite4K: 4 KiB WRITE and its reply over loopback TCP, one connection. Allocations
// count both client and server (same process).
func BenchmarkWrite4K(b *testing.B) {
	for _, callers := range []int{1, 16} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			ts := startServer(b, HandlerFunc(benchHandler), ServerOptions{})
			c := dial(b, ts.addr, ClientOptions{})
			ctx := context.Background()
			b.SetBytes(4096)
			runConcurrent(b, callers, func(buf []byte) error {
				_, err := c.Do(ctx, Request{Op: OpWrite, VolumeID: 1, Offset: 8192, Data: buf})
				return err
			})
		})
	}
}

// BenchmarkRead4K: 4 KiB READ into a caller buffer over loopback TCP, one connection.
func BenchmarkRead4K(b *testing.B) {
	for _, callers := range []int{1, 16} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			ts := startServer(b, HandlerFunc(benchHandler), ServerOptions{})
			c := dial(b, ts.addr, ClientOptions{})
			ctx := context.Background()
			b.SetBytes(4096)
			runConcurrent(b, callers, func(buf []byte) error {
				_, err := c.Do(ctx, Request{Op: OpRead, VolumeID: 1, Offset: 8192, ReadInto: buf})
				return err
			})
		})
	}
}
