package sdc

import (
	"context"
	"sync/atomic"
	"time"

	"pflex/internal/ratelimit"
)

// qosBurst is how much idle time a mapping's limits credit: after a pause, up to 100 ms worth of
// IOs and bytes go at once; past that, requests are spaced at the limit.
const qosBurst = 100 * time.Millisecond

// qos enforces a mapping's limits (iops_limit, bandwidth_limit_mbps) on the IO that this SDC
// sends for the volume. Every READ, WRITE, TRIM and WRITE_ZEROES counts as one IO, whatever its
// size; the bandwidth limit counts the bytes of READs and WRITEs. FLUSH is not limited: it moves
// no data, and it is what makes writes that were already paced durable. A request waits here
// before it is cut into chunks; the wait is not part of io_timeout, which is for the cluster's
// failures.
type qos struct {
	ops, bytes *ratelimit.Limiter
	iops, mbps atomic.Int64 // the limits now in force (0: none)

	throttled atomic.Int64 // requests that waited
	waited    atomic.Int64 // their total wait, ns
}

func newQoS(iops, mbps int64) *qos {
	q := &qos{ops: ratelimit.New(0, qosBurst), bytes: ratelimit.New(0, qosBurst)}
	q.set(iops, mbps)
	return q
}

// set puts new limits in force for the requests that arrive from now on (0 or less: none).
func (q *qos) set(iops, mbps int64) {
	iops, mbps = max(iops, 0), max(mbps, 0)
	q.ops.SetRate(float64(iops))
	q.bytes.SetRate(float64(mbps) * (1 << 20))
	q.iops.Store(iops)
	q.mbps.Store(mbps)
}

// admit waits until a request of n data bytes may go. If ctx ends first, the request's share is
// given back and ctx's error returned.
func (q *qos) admit(ctx context.Context, n int64) error {
	iops, mbps := q.iops.Load() > 0, q.mbps.Load() > 0
	if !iops && !mbps {
		return nil
	}
	d := q.ops.Reserve(1)
	if mbps && n > 0 {
		d = max(d, q.bytes.Reserve(float64(n)))
	}
	if d <= 0 {
		return nil
	}
	q.throttled.Add(1)
	q.waited.Add(int64(d))
	if err := ratelimit.Wait(ctx, d); err != nil {
		q.ops.Cancel(1)
		if mbps && n > 0 {
			q.bytes.Cancel(float64(n))
		}
		return err
	}
	return nil
}

// QoSStatus is a mapping's limits and what they held back, in GET /status.
type QoSStatus struct {
	IOPSLimit          int64   `json:"iops_limit"`           // 0: none
	BandwidthLimitMBps int64   `json:"bandwidth_limit_mbps"` // MiB/s, 0: none
	Throttled          int64   `json:"throttled"`            // requests that waited for the limits
	ThrottledSeconds   float64 `json:"throttled_seconds"`    // their total wait
}

func (q *qos) status() QoSStatus {
	return QoSStatus{
		IOPSLimit: q.iops.Load(), BandwidthLimitMBps: q.mbps.Load(),
		Throttled: q.throttled.Load(), ThrottledSeconds: time.Duration(q.waited.Load()).Seconds(),
	}
}
