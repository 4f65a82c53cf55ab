package fsm

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// cpuClock adds up the process's CPU time (user + system, every thread, GC included) over the
// timed parts of a benchmark: on a shared machine it is steadier than wall time.
type cpuClock struct{ total, start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (c *cpuClock) begin() { c.start = processCPU() }
func (c *cpuClock) end()   { c.total += processCPU() - c.start }

// BenchmarkApplyBatch applies batches of 64 commands (alternating CreatePD and SetLabel, half of
// them with a request id) in one Store.Apply each; ns/cmd is the cost of one command, cpu-ns/cmd
// the process's CPU time per command.
func BenchmarkApplyBatch(b *testing.B) {
	const batch = 64
	a := newApplier(b)
	pd := a.mkPD("bench-pd")
	pool := a.mkPool("bench-pool", pd, 1000)
	vol := a.mkVolume("bench-vol", pool, 10, Thin)
	entries := make([]Entry, batch)
	var cpu cpuClock
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for j := range entries {
			var c Command
			if j%2 == 0 {
				c = &CreatePD{Name: fmt.Sprintf("pd-%d-%d", i, j)}
			} else {
				c = &SetLabel{VolumeID: vol, Key: fmt.Sprintf("k%d", j%16), Value: fmt.Sprintf("v%d", i)}
			}
			rid := ""
			if j%4 < 2 {
				rid = fmt.Sprintf("r-%d-%d", i, j)
			}
			entries[j] = a.entry(rid, c)
		}
		b.StartTimer()
		cpu.begin()
		for _, r := range a.s.Apply(entries) {
			if r.Err != nil || r.Skipped {
				b.Fatalf("apply: %+v", r)
			}
		}
		cpu.end()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/cmd")
	b.ReportMetric(float64(cpu.total.Nanoseconds())/float64(b.N*batch), "cpu-ns/cmd")
}

// BenchmarkApplyLabelBatch is the MDM's hot path under many clients: one raft entry holding a
// Batch of 64 SetLabel commands, each with its own request id, as the leader's group commit
// builds it (EncodeBatch). ns/cmd includes decoding the entry.
func BenchmarkApplyLabelBatch(b *testing.B) {
	// 31: what 64 closed-loop clients give the proposer (half wait while half commit).
	for _, batch := range []int{31, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchApplyLabelBatch(b, batch) })
	}
}

func benchApplyLabelBatch(b *testing.B, batch int) {
	a := newApplier(b)
	pd := a.mkPD("bench-pd")
	pool := a.mkPool("bench-pool", pd, 1000)
	vol := a.mkVolume("bench-vol", pool, 10, Thin)
	ps := make([]Proposal, batch)
	var cpu cpuClock
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for j := range ps {
			a.now++
			ps[j] = Proposal{
				Header:  Header{RequestID: fmt.Sprintf("r-%d-%d", i, j), Time: a.now},
				Command: &SetLabel{VolumeID: vol, Key: fmt.Sprintf("k%d", (i*batch+j)%4096), Value: "v"},
			}
		}
		data, err := EncodeBatch(ps)
		if err != nil {
			b.Fatal(err)
		}
		a.index++
		entries := []Entry{{Index: a.index, Term: testTerm, Data: data}}
		b.StartTimer()
		cpu.begin()
		res := a.s.Apply(entries)
		cpu.end()
		inner, _ := res[0].Value.([]Result)
		if len(inner) != batch || inner[0].Err != nil || inner[batch-1].Err != nil {
			b.Fatalf("apply: %+v", res[0])
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/cmd")
	b.ReportMetric(float64(cpu.total.Nanoseconds())/float64(b.N*batch), "cpu-ns/cmd")
}
