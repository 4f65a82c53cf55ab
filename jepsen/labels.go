package jepsen

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"net/url"
	"sync"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
)

// LabelsWorkload treats each label key of one volume as a compare-and-set register: read
// (GET /vol/{id}/labels/{key}, 404 = ""), write (PUT) and cas (PUT with expect; 412 = failed).
// Every written value is unique, so a read names the write it saw.
type LabelsWorkload struct {
	volumeID int64
	keys     []string

	mu   sync.Mutex
	seen map[string]string // key -> last value a client saw; cas expects it most of the time
	seq  int
}

// Name implements Workload.
func (w *LabelsWorkload) Name() string { return "labels" }

// Setup creates a protection domain, a pool and the volume whose labels are the registers.
func (w *LabelsWorkload) Setup(ctx context.Context, e *Env) error {
	var pd fsm.ProtectionDomain
	if err := e.Admin.Post(ctx, "/pd/create", map[string]any{"name": "jepsen-pd"}, &pd); err != nil {
		return fmt.Errorf("labels setup: create pd: %w", err)
	}
	var pool fsm.Pool
	if err := e.Admin.Post(ctx, "/pool/create", map[string]any{"name": "jepsen-pool", "pd_id": pd.ID,
		"protection_policy": "two_copies", "total_capacity_gb": 1024}, &pool); err != nil {
		return fmt.Errorf("labels setup: create pool: %w", err)
	}
	var vol struct {
		ID int64 `json:"id"`
	}
	if err := e.Admin.Post(ctx, "/vol/create", map[string]any{"name": "jepsen-vol", "size_gb": 8,
		"provisioning": "thin", "pool_id": pool.ID}, &vol); err != nil {
		return fmt.Errorf("labels setup: create volume: %w", err)
	}
	w.volumeID = vol.ID
	n := e.Options.Keys
	if n <= 0 {
		n = 5
	}
	w.keys = nil
	for i := 0; i < n; i++ {
		w.keys = append(w.keys, fmt.Sprintf("k%d", i))
	}
	w.seen = map[string]string{}
	return nil
}

func (w *LabelsWorkload) path(key string, stale bool) string {
	p := fmt.Sprintf("/vol/%d/labels/%s", w.volumeID, url.PathEscape(key))
	if stale {
		p += "?stale=1"
	}
	return p
}

func (w *LabelsWorkload) nextValue(p int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	return fmt.Sprintf("p%d-%d", p, w.seq)
}

func (w *LabelsWorkload) saw(key, value string) {
	w.mu.Lock()
	w.seen[key] = value
	w.mu.Unlock()
}

func (w *LabelsWorkload) lastSeen(key string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen[key]
}

// Client implements Workload: 50% reads, 20% writes, 30% compare-and-sets on random keys, each
// sent to a random MDM.
func (w *LabelsWorkload) Client(stop, ctx context.Context, e *Env, p int, rng *rand.Rand) {
	for stop.Err() == nil && ctx.Err() == nil {
		key := w.keys[rng.Intn(len(w.keys))]
		node := e.randomNode(rng)
		switch r := rng.Intn(10); {
		case r < 5:
			w.read(ctx, e, p, node, key, e.Options.StaleReads)
		case r < 7:
			w.write(ctx, e, p, node, key, nil)
		default:
			expect := w.lastSeen(key)
			if rng.Intn(5) == 0 {
				expect = "" // sometimes a cas that only succeeds on an unset key
			}
			w.write(ctx, e, p, node, key, &expect)
		}
		e.pause(stop, rng)
	}
}

func (w *LabelsWorkload) read(ctx context.Context, e *Env, p int, node Node, key string, stale bool) Op {
	op := Op{Process: p, F: "read", Key: key, Node: node.ID, Invoke: e.History.Now()}
	r := e.Client.do(ctx, node, http.MethodGet, w.path(key, stale), nil)
	op.Return = e.History.Now()
	op.Outcome = readOutcome(r)
	switch {
	case op.Outcome == OK:
		var l fsm.Label
		if err := json.Unmarshal(r.body, &l); err != nil {
			op.Outcome, op.Error = Fail, "decode: "+err.Error()
		} else {
			op.Output = l.Value
		}
	case r.status == http.StatusNotFound && r.code == string(fsm.KindNotFound):
		op.Outcome, op.Output = OK, "" // a missing label reads as the empty value
	default:
		op.Error = r.String()
	}
	if op.Outcome == OK {
		w.saw(key, op.Output)
	}
	return e.History.Add(op)
}

func (w *LabelsWorkload) write(ctx context.Context, e *Env, p int, node Node, key string, expect *string) {
	op := Op{Process: p, F: "write", Key: key, Value: w.nextValue(p), Expect: expect, Node: node.ID}
	if expect != nil {
		op.F = "cas"
	}
	op.Invoke = e.History.Now()
	r := e.Client.do(ctx, node, http.MethodPut, w.path(key, false), api.LabelRequest{Value: op.Value, Expect: expect})
	op.Return = e.History.Now()
	op.Outcome = writeOutcome(r)
	if op.Outcome != OK {
		op.Error = r.String()
		if r.status == http.StatusPreconditionFailed {
			op.Output = casMismatch
		}
	} else {
		w.saw(key, op.Value)
	}
	e.History.Add(op)
}

// Final implements Workload: one linearizable read of every key, retried until it answers.
func (w *LabelsWorkload) Final(ctx context.Context, e *Env) error {
	rng := rand.New(rand.NewSource(1))
	p := e.finalProcess()
	for _, key := range w.keys {
		for {
			if op := w.read(ctx, e, p, e.randomNode(rng), key, false); op.Outcome == OK {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("labels final read of %s: %w", key, ctx.Err())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// Check implements Workload: porcupine, one compare-and-set register per key.
func (w *LabelsWorkload) Check(ops []Op, reportDir string, timeout time.Duration) []CheckResult {
	return []CheckResult{CheckLinearizable(ops, reportDir, timeout)}
}
