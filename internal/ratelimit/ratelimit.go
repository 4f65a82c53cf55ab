// Package ratelimit paces work to a rate: rebuild bytes in an SDS, IOs and bytes of a mapped
// volume in an SDC. A Limiter is a virtual clock (the generic cell rate algorithm): every
// reservation of n units moves the clock on by n/rate, and a reservation waits until the clock
// it found comes due. A reservation larger than what the rate allows at once still goes through
// and its cost is paid by the ones after it, so a request is never refused for being big.
package ratelimit

import (
	"context"
	"sync"
	"time"
)

// Limiter paces reservations to a rate of units per second. A nil Limiter, or one with a rate
// of zero or less, never waits. It is safe for concurrent use.
type Limiter struct {
	mu    sync.Mutex
	rate  float64       // units per second; <= 0: unlimited
	burst time.Duration // how far behind the wall clock the virtual clock may fall: idle credit
	due   time.Time     // when the next reservation may start
	now   func() time.Time
}

// New returns a limiter of rate units per second that lets an idle period build up at most
// burst worth of credit (0: none; each reservation is spaced from the one before).
func New(rate float64, burst time.Duration) *Limiter {
	return &Limiter{rate: rate, burst: burst, now: time.Now}
}

// SetRate changes the rate. Reservations already made keep their waits; the next one is
// paced at the new rate from now on, without the debt or the credit of the old.
func (l *Limiter) SetRate(rate float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rate == l.rate {
		return
	}
	l.rate = rate
	l.due = time.Time{}
}

// Rate is the current rate (<= 0: unlimited).
func (l *Limiter) Rate() float64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rate
}

// Reserve takes n units and says how long the caller must wait before it uses them.
func (l *Limiter) Reserve(n float64) time.Duration {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rate <= 0 {
		return 0
	}
	now := l.now()
	start := l.due
	if floor := now.Add(-l.burst); start.Before(floor) {
		start = floor
	}
	l.due = start.Add(time.Duration(n / l.rate * float64(time.Second)))
	return max(start.Sub(now), 0)
}

// Cancel gives back n units reserved by a caller that gave up waiting for them, so that the
// reservations after it wait less.
func (l *Limiter) Cancel(n float64) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rate > 0 {
		l.due = l.due.Add(-time.Duration(n / l.rate * float64(time.Second)))
	}
}

// Wait blocks for d, or until ctx ends (then it returns ctx's error).
func Wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WaitN reserves n units and waits for them. If ctx ends first the units are given back and
// ctx's error is returned.
func (l *Limiter) WaitN(ctx context.Context, n float64) error {
	if err := Wait(ctx, l.Reserve(n)); err != nil {
		l.Cancel(n)
		return err
	}
	return nil
}
