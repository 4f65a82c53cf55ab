package jepsen

import (
	"context"
	"fmt"
	"time"
)

// settledReplicas waits (up to timeout) for the volume's pool to be fully protected again —
// health OK, so every rebuild is done — and for every chunk to have exactly two equal copies
// (moves done, superseded copies dropped), then returns the replicas' checksums. settled is
// false when that did not happen in time; the checksums are the last ones taken.
func settledReplicas(ctx context.Context, e *Env, volumeID int64, timeout time.Duration) (replicas map[int64]map[string]string, errs []string, settled bool) {
	var vol struct {
		PoolID int64 `json:"pool_id"`
	}
	if err := e.Admin.Get(ctx, fmt.Sprintf("/vol/%d", volumeID), nil, &vol); err != nil {
		replicas, errs = replicaChecksums(ctx, e.Data, volumeID)
		return replicas, append(errs, fmt.Sprintf("volume %d: %v", volumeID, err)), false
	}
	deadline := time.Now().Add(timeout)
	for {
		var h struct {
			Health string `json:"health"`
		}
		healthy := e.Admin.Get(ctx, fmt.Sprintf("/pool/%d/health", vol.PoolID), nil, &h) == nil && h.Health == "OK"
		replicas, errs = replicaChecksums(ctx, e.Data, volumeID)
		if healthy && len(errs) == 0 && pairsEqual(replicas) {
			return replicas, errs, true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return replicas, errs, false
		}
		sleep(ctx, time.Second)
	}
}

// pairsEqual reports whether every chunk has exactly two copies with equal checksums.
func pairsEqual(replicas map[int64]map[string]string) bool {
	for _, sums := range replicas {
		if len(sums) != 2 {
			return false
		}
		var first string
		for _, s := range sums {
			if first == "" {
				first = s
			} else if s != first {
				return false
			}
		}
	}
	return true
}
