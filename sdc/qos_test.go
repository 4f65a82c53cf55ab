package sdc

import (
	"context"
	"errors"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/wire"
)

// The waits below are lower bounds the limits impose, so a slow machine cannot fail them.

func TestIOPSLimitPacesRequests(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	c.setLimits(1, 20, 0) // one IO per 50 ms, 100 ms (2 IOs) of credit
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	if q := v.Status().QoS; q.IOPSLimit != 20 || q.BandwidthLimitMBps != 0 {
		t.Fatalf("limits in force: %+v", q)
	}
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < 12; i++ {
		if err := v.WriteAt(ctx, pattern(4096, byte(i)), int64(i)*4096, false); err != nil {
			t.Fatal(err)
		}
	}
	// 12 IOs, 3 of them on credit: at least 9 gaps of 50 ms.
	if took := time.Since(start); took < 450*time.Millisecond {
		t.Fatalf("12 writes at 20 IOPS took %v", took)
	}
	q := v.Status().QoS
	if q.Throttled < 1 || q.ThrottledSeconds <= 0 {
		t.Fatalf("status after 12 paced writes: %+v", q)
	}
	t.Logf("12 writes at 20 IOPS: %+v", q)

	// Trims and zeroes count as IOs; flushes do not. At 4 IOPS (250 ms apart, 0.4 IO of
	// credit), after a write the next two IOs wait.
	c.setLimits(1, 4, 0)
	if err := e.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	before := v.Status().QoS.Throttled
	if err := v.Trim(ctx, 0, 4096); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteZeroes(ctx, 0, 4096, false, true); err != nil {
		t.Fatal(err)
	}
	if v.Status().QoS.Throttled != before+2 {
		t.Fatalf("trim and write-zeroes were not paced: %+v", v.Status().QoS)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if v.Status().QoS.Throttled != before+2 {
		t.Fatalf("a flush was paced: %+v", v.Status().QoS)
	}

	// Lifted by the MDM: the next poll takes the limit away.
	c.setLimits(1, 0, 0)
	if err := e.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if q := v.Status().QoS; q.IOPSLimit != 0 {
		t.Fatalf("limit still in force after the poll: %+v", q)
	}
	before = v.Status().QoS.Throttled
	for i := 0; i < 50; i++ {
		if err := v.ReadAt(ctx, make([]byte, 4096), int64(i%16)*4096); err != nil {
			t.Fatal(err)
		}
	}
	if got := v.Status().QoS.Throttled; got != before {
		t.Fatalf("%d reads waited without a limit", got-before)
	}
}

func TestBandwidthLimitPacesBytes(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	c.setLimits(1, 0, 1) // 1 MiB/s, about 100 KiB of credit
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < 4; i++ {
		buf := make([]byte, 256<<10)
		var err error
		if i%2 == 0 {
			err = v.WriteAt(ctx, pattern(len(buf), byte(i)), int64(i)*int64(len(buf)), false)
		} else {
			err = v.ReadAt(ctx, buf, 0)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// 1 MiB at 1 MiB/s: the last request starts after the first three (768 KiB) less the credit.
	if took := time.Since(start); took < 600*time.Millisecond {
		t.Fatalf("1 MiB at 1 MiB/s took %v", took)
	}
	if q := v.Status().QoS; q.Throttled < 1 || q.BandwidthLimitMBps != 1 {
		t.Fatalf("status: %+v", q)
	}
}

func TestThrottledRequestEndsWithItsContext(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	c.setLimits(1, 1, 0)
	e := newTestExporter(t, c, 5*time.Second)
	v := exportedVolume(t, e, "vol1")
	if err := v.WriteAt(context.Background(), pattern(512, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	writes := 0
	for _, s := range c.sds {
		writes += len(s.opsOf(wire.OpWrite))
	}
	// The next IO is due in about 900 ms; a client that gives up sooner gets its error at once,
	// and nothing reaches an SDS.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := v.WriteAt(ctx, pattern(512, 2), 512, false)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the context's error, got %v", err)
	}
	after := 0
	for _, s := range c.sds {
		after += len(s.opsOf(wire.OpWrite))
	}
	if after != writes {
		t.Fatalf("a write given up while throttled reached an SDS (%d -> %d)", writes, after)
	}
}
