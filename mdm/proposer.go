package mdm

import (
	"context"
	"fmt"
	"time"

	"pflex/fsm"
)

// proposer is the leader's group commit. Writes that arrive while earlier batches are being
// committed wait in a queue; when a commit slot frees, everything queued goes to raft as one
// Batch entry. With raft-boltdb every log append costs two fsyncs on the leader and on each
// follower, so fewer, larger entries are what makes many concurrent clients fast. An idle
// cluster commits a lone write at once, without waiting to fill a batch.
type proposer struct {
	n        *Node
	queue    chan *proposal
	slots    chan struct{} // commit slots: batches in flight at once
	maxBatch int
	stop     chan struct{}
}

type proposal struct {
	p    fsm.Proposal
	done chan proposalResult
}

type proposalResult struct {
	value any
	err   error
}

const (
	proposerInFlight = 1
	proposerMaxBatch = 512
)

func newProposer(n *Node, stop chan struct{}) *proposer {
	return &proposer{
		n:        n,
		queue:    make(chan *proposal, 4096),
		slots:    make(chan struct{}, proposerInFlight),
		maxBatch: proposerMaxBatch,
		stop:     stop,
	}
}

// submit queues a command and waits for its result.
func (q *proposer) submit(ctx context.Context, p fsm.Proposal) (any, error) {
	pr := &proposal{p: p, done: make(chan proposalResult, 1)}
	select {
	case q.queue <- pr:
	case <-ctx.Done():
		return nil, fmt.Errorf("mdm: queueing a write: %w", ctx.Err())
	case <-q.stop:
		return nil, ErrShutdown
	}
	select {
	case r := <-pr.done:
		return r.value, r.err
	case <-ctx.Done():
		// It may still commit: the caller retries with the same request id.
		return nil, fmt.Errorf("%w (%v)", ErrOutcomeUnknown, ctx.Err())
	case <-q.stop:
		return nil, ErrShutdown
	}
}

func (q *proposer) run() {
	for {
		var first *proposal
		select {
		case first = <-q.queue:
		case <-q.stop:
			return
		}
		// Wait for a commit slot first: what arrives meanwhile joins this batch.
		select {
		case q.slots <- struct{}{}:
		case <-q.stop:
			first.done <- proposalResult{err: ErrShutdown}
			return
		}
		batch := []*proposal{first}
	drain:
		for len(batch) < q.maxBatch {
			select {
			case p := <-q.queue:
				batch = append(batch, p)
			default:
				break drain
			}
		}
		go func() {
			defer func() { <-q.slots }()
			q.commit(batch)
		}()
	}
}

func (q *proposer) commit(batch []*proposal) {
	var data []byte
	var err error
	if len(batch) == 1 {
		data, err = fsm.Encode(batch[0].p.Header, batch[0].p.Command)
	} else {
		ps := make([]fsm.Proposal, len(batch))
		for i, b := range batch {
			ps[i] = b.p
		}
		data, err = fsm.EncodeBatch(ps)
	}
	if err != nil {
		for _, b := range batch {
			b.done <- proposalResult{err: err}
		}
		return
	}
	f := q.n.raft.Apply(data, q.n.timing.Apply)
	if err := f.Error(); err != nil {
		err = q.n.raftErr(err)
		for _, b := range batch {
			b.done <- proposalResult{err: err}
		}
		return
	}
	res, ok := f.Response().(fsm.Result)
	if !ok {
		for _, b := range batch {
			b.done <- proposalResult{err: fmt.Errorf("mdm: unexpected FSM response %T", f.Response())}
		}
		return
	}
	if len(batch) == 1 {
		batch[0].done <- proposalResult{value: res.Value, err: res.Err}
		return
	}
	inner, _ := res.Value.([]fsm.Result)
	for i, b := range batch {
		if i < len(inner) {
			b.done <- proposalResult{value: inner[i].Value, err: inner[i].Err}
		} else {
			b.done <- proposalResult{err: fmt.Errorf("mdm: batch answered %d of %d commands", len(inner), len(batch))}
		}
	}
}

// stamp is the header the leader puts on a command. Only a client-supplied request id is kept:
// a client that sent none cannot retry idempotently, so remembering its outcome would be waste.
func stamp(requestID string) fsm.Header {
	return fsm.Header{RequestID: requestID, Time: time.Now().UnixMilli()}
}
