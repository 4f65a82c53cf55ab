package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeClock is a hand-moved clock for the pacing arithmetic.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newFake(rate float64, burst time.Duration) (*Limiter, *fakeClock) {
	c := &fakeClock{t: time.Unix(1_000_000, 0)}
	l := New(rate, burst)
	l.now = c.now
	return l, c
}

func TestReservationsAreSpacedAtTheRate(t *testing.T) {
	l, _ := newFake(100, 0) // 10 ms per unit
	for i := 0; i < 5; i++ {
		if got, want := l.Reserve(1), time.Duration(i)*10*time.Millisecond; got != want {
			t.Fatalf("reservation %d waits %v, want %v", i, got, want)
		}
	}
}

func TestIdleCreditIsCappedByBurst(t *testing.T) {
	l, c := newFake(100, 50*time.Millisecond)
	c.advance(time.Hour) // a long idle period earns no more than the burst
	for i := 0; i < 5; i++ {
		if d := l.Reserve(1); d > 0 {
			t.Fatalf("reservation %d of the burst waits %v", i, d)
		}
	}
	if d := l.Reserve(1); d != 0 {
		t.Fatalf("the 6th reservation starts at the wall clock, waits %v", d)
	}
	if d := l.Reserve(1); d != 10*time.Millisecond {
		t.Fatalf("after the burst: waits %v, want 10ms", d)
	}
}

func TestSteadyStateFollowsTheRate(t *testing.T) {
	l, c := newFake(50, 100*time.Millisecond)
	// A caller that takes one unit and waits what it is told: 1,000 units take 20 s of clock,
	// less the burst's credit.
	start := c.t
	for i := 0; i < 1000; i++ {
		c.advance(l.Reserve(1))
	}
	if got, want := c.t.Sub(start), 20*time.Second-100*time.Millisecond-20*time.Millisecond; got != want {
		t.Fatalf("1,000 units at 50/s took %v, want %v", got, want)
	}
}

func TestLargeReservationIsPaidByTheNext(t *testing.T) {
	l, _ := newFake(1<<20, 0) // 1 MiB/s
	if d := l.Reserve(4 << 20); d != 0 {
		t.Fatalf("a first 4 MiB reservation waits %v; it should go at once", d)
	}
	if d := l.Reserve(1); d != 4*time.Second {
		t.Fatalf("the next one waits %v, want 4s", d)
	}
}

func TestCancelGivesUnitsBack(t *testing.T) {
	l, _ := newFake(10, 0)
	l.Reserve(1)
	l.Reserve(1) // would wait 100 ms
	l.Cancel(1)
	if d := l.Reserve(1); d != 100*time.Millisecond {
		t.Fatalf("after a cancel the next waits %v, want 100ms", d)
	}
}

func TestSetRate(t *testing.T) {
	l, _ := newFake(1, 0)
	l.Reserve(1)
	if d := l.Reserve(1); d != time.Second {
		t.Fatalf("at 1/s the second waits %v", d)
	}
	l.SetRate(1000) // the old debt is not carried over
	if d := l.Reserve(1); d != 0 {
		t.Fatalf("after raising the rate: waits %v", d)
	}
	if d := l.Reserve(1); d != time.Millisecond {
		t.Fatalf("at 1000/s: waits %v, want 1ms", d)
	}
	l.SetRate(0)
	for i := 0; i < 100; i++ {
		if d := l.Reserve(1e9); d != 0 {
			t.Fatalf("unlimited: waits %v", d)
		}
	}
	var nilLimiter *Limiter
	if d := nilLimiter.Reserve(1); d != 0 || nilLimiter.Rate() != 0 {
		t.Fatal("a nil limiter must not wait")
	}
}

func TestWaitNGivesBackOnCancel(t *testing.T) {
	l, _ := newFake(1, 0)
	l.Reserve(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.WaitN(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitN on an ended context: %v", err)
	}
	if d := l.Reserve(1); d != time.Second {
		t.Fatalf("the cancelled units were not given back: next waits %v, want 1s", d)
	}
	if err := New(0, 0).WaitN(context.Background(), 5); err != nil {
		t.Fatalf("unlimited WaitN: %v", err)
	}
}
