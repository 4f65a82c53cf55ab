package sds

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/token"
)

// AckPoster sends one ACK batch to the MDM leader (POST /token/ack). requestID is the batch's
// X-Pflex-Request-Id: the same on every retry of the batch, so the leader commits it once.
type AckPoster func(ctx context.Context, requestID string, req api.AckRequest) error

// Defaults of the ACK batcher.
const (
	DefaultAckInterval = time.Second
	DefaultAckBatch    = 1024 // entries per batch; a full batch is sent without waiting
	// DefaultAckMaxTokens bounds the tokens counted while batches cannot be sent; counts for
	// further tokens are dropped (and counted as dropped) until the leader takes a batch.
	DefaultAckMaxTokens = 64 << 10
)

// ackBatcher counts ops and bytes per token and sends them to the leader in batches. A batch is
// cut from the counters, then retried as is (same request id) until the leader takes it, while
// new counts accumulate for the next one.
type ackBatcher struct {
	post      AckPoster
	self      func() int64
	log       hclog.Logger
	interval  time.Duration
	batch     int
	maxTokens int

	mu      sync.Mutex
	cur     map[uint64]*fsm.TokenAck // by token id
	pending *pendingAcks             // owned by run

	kick    chan struct{}
	dropped atomic.Int64
	sent    atomic.Int64 // batches the leader took
	failed  atomic.Int64 // failed attempts
	refused atomic.Int64 // batches the leader refused as malformed, dropped
}

type pendingAcks struct {
	id  string
	req api.AckRequest
}

func newAckBatcher(post AckPoster, self func() int64, log hclog.Logger) *ackBatcher {
	return &ackBatcher{
		post: post, self: self, log: log,
		interval: DefaultAckInterval, batch: DefaultAckBatch, maxTokens: DefaultAckMaxTokens,
		cur: map[uint64]*fsm.TokenAck{}, kick: make(chan struct{}, 1),
	}
}

// record adds one IO under the token c.
func (b *ackBatcher) record(c token.Claims, readBytes, writeBytes int64, write bool) {
	if write {
		b.add(c, 0, 0, 1, writeBytes)
	} else {
		b.add(c, 1, readBytes, 0, 0)
	}
}

// add adds IOs under the token c.
func (b *ackBatcher) add(c token.Claims, readOps, readBytes, writeOps, writeBytes int64) {
	b.mu.Lock()
	e, ok := b.cur[c.TokenID]
	if !ok {
		if len(b.cur) >= b.maxTokens {
			b.mu.Unlock()
			b.dropped.Add(1)
			return
		}
		e = &fsm.TokenAck{TokenID: fmt.Sprintf("%016x", c.TokenID), VolumeID: c.VolumeID, SDCID: c.SDCID}
		b.cur[c.TokenID] = e
	}
	e.Add(readOps, readBytes, writeOps, writeBytes) // saturating: an entry stays one the MDM takes
	full := len(b.cur) >= b.batch
	b.mu.Unlock()
	if full && !ok {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// run sends batches every interval, or at once when a batch is full, until ctx ends; then it
// makes one last attempt, bounded by a second.
func (b *ackBatcher) run(ctx context.Context) {
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), time.Second)
			b.flush(fctx)
			cancel()
			return
		case <-t.C:
		case <-b.kick:
		}
		for b.flush(ctx) {
		}
	}
}

// flush sends the pending batch, or cuts a new one. It reports whether another full batch is
// waiting.
func (b *ackBatcher) flush(ctx context.Context) bool {
	if b.pending == nil {
		self := b.self()
		if self == 0 {
			return false // not registered yet: keep counting
		}
		b.mu.Lock()
		if len(b.cur) == 0 {
			b.mu.Unlock()
			return false
		}
		ids := make([]uint64, 0, len(b.cur))
		for id := range b.cur {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		if len(ids) > b.batch {
			ids = ids[:b.batch]
		}
		p := &pendingAcks{id: newRequestID(), req: api.AckRequest{SDSID: self, Entries: make([]fsm.TokenAck, 0, len(ids))}}
		for _, id := range ids {
			p.req.Entries = append(p.req.Entries, *b.cur[id])
			delete(b.cur, id)
		}
		b.mu.Unlock()
		b.pending = p
	}
	if err := b.post(ctx, b.pending.id, b.pending.req); err != nil {
		var ae *api.APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
			// Refused as malformed: the same batch never will be taken, and kept it would hold
			// back every later one. Entries are bounded where they are counted, so this is a bug.
			b.refused.Add(1)
			b.log.Error("token ACK batch refused as malformed; dropping it", "entries", len(b.pending.req.Entries),
				"request_id", b.pending.id, "error", err)
			b.pending = nil
			return true
		}
		n := b.failed.Add(1)
		lvl := hclog.Debug
		if n%10 == 1 {
			lvl = hclog.Warn
		}
		b.log.Log(lvl, "token ACK batch not taken; keeping it", "entries", len(b.pending.req.Entries),
			"request_id", b.pending.id, "failed_attempts", n, "error", err)
		return false
	}
	b.sent.Add(1)
	b.pending = nil
	b.mu.Lock()
	more := len(b.cur) >= b.batch
	b.mu.Unlock()
	return more
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
