package fsm

import (
	"encoding/json"
	"fmt"
)

// Batch carries many client commands in one log entry. The MDM leader groups the writes that
// arrive while earlier ones are being committed, so a burst of small writes costs one raft entry,
// one fsync per replica and one apply transaction instead of one of each per write. Each inner
// command keeps its own header (request id, time) and gets its own result.
type Batch struct {
	Entries []BatchEntry `json:"entries"`
}

// BatchEntry is one command inside a Batch.
type BatchEntry struct {
	Type    CommandType     `json:"t"`
	Header  Header          `json:"h"`
	Payload json.RawMessage `json:"c"`

	cmd Command // already decoded (the binary batch form decodes every entry up front)
}

const TypeBatch CommandType = 21

func (*Batch) Type() CommandType { return TypeBatch }

// Proposal is a command with the header the leader stamped on it.
type Proposal struct {
	Header  Header
	Command Command
}

func init() {
	// A batch is applied by Store.Apply itself (see applyBatch); this registration only lets it
	// decode. Reaching this function would mean a batch nested in a batch.
	register("batch", func(*applyTx, Header, *Batch) (any, error) {
		return nil, fmt.Errorf("fsm: nested batch")
	})
}

// EncodeBatch builds one log entry holding every proposal, in order, in the binary batch form
// (batch_binary.go). Batches written as JSON by earlier versions still decode.
func EncodeBatch(ps []Proposal) ([]byte, error) {
	for _, p := range ps {
		if p.Command.Type() == TypeBatch {
			return nil, fmt.Errorf("fsm: encode: a batch cannot hold a batch")
		}
		if _, ok := registry[p.Command.Type()]; !ok {
			return nil, fmt.Errorf("fsm: encode: unregistered command type %d", p.Command.Type())
		}
	}
	// The batch's own time is its newest command's: Store.Apply prunes request ids by it.
	var h Header
	for _, p := range ps {
		h.Time = max(h.Time, p.Header.Time)
	}
	return encodeBinaryBatch(h, ps)
}

// decodeEntry decodes one command of a batch.
func decodeEntry(e BatchEntry) (Command, error) {
	if e.cmd != nil {
		return e.cmd, nil
	}
	h, ok := registry[e.Type]
	if !ok || e.Type == TypeBatch {
		return nil, fmt.Errorf("%w: batch holds command type %d", ErrUndecodable, e.Type)
	}
	c := h.new()
	if err := json.Unmarshal(e.Payload, c); err != nil {
		return nil, fmt.Errorf("%w: %s payload in batch: %v", ErrUndecodable, h.name, err)
	}
	return c, nil
}

// applyBatch applies every command of a batch in order; each has its own savepoint (unless it
// rejects before writing), request id and result. The request ids of the whole batch are looked
// up and recorded together. The entry's Result carries the inner results as a []Result.
func applyBatch(t *applyTx, b *Batch) Result {
	results := make([]Result, len(b.Entries))
	rids := make([]string, len(b.Entries))
	for i, e := range b.Entries {
		rids[i] = e.Header.RequestID
	}
	reqs := t.loadRequests(rids)
	for i, e := range b.Entries {
		c, err := decodeEntry(e)
		if err != nil {
			panic(fmt.Sprintf("fsm: entry %d: %v", t.index, err))
		}
		results[i] = applyOne(t, reqs, e.Header, c)
	}
	reqs.flush(t)
	return Result{Value: results}
}
