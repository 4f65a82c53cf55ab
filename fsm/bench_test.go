package fsm

import (
	"fmt"
	"testing"
)

// BenchmarkApplyBatch applies batches of 64 commands (alternating CreatePD and SetLabel, half of
// them with a request id) in one Store.Apply each; ns/cmd is the cost of one command.
func BenchmarkApplyBatch(b *testing.B) {
	const batch = 64
	a := newApplier(b)
	pd := a.mkPD("bench-pd")
	pool := a.mkPool("bench-pool", pd, 1000)
	vol := a.mkVolume("bench-vol", pool, 10, Thin)
	entries := make([]Entry, batch)
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
		for _, r := range a.s.Apply(entries) {
			if r.Err != nil || r.Skipped {
				b.Fatalf("apply: %+v", r)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/cmd")
}
