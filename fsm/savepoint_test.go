package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// probeCommand exists only in tests: it writes first and then fails, which no real command does
// today, to pin down what the per-command savepoint rolls back.
type probeCommand struct {
	Name string `json:"name"`
	Fail string `json:"fail"` // "": succeed, "reject": typed rejection, "storage": untyped error
}

const typeProbe CommandType = 240

func (*probeCommand) Type() CommandType { return typeProbe }

func init() {
	register("test_probe", func(t *applyTx, h Header, c *probeCommand) (any, error) {
		if _, err := t.insert(`INSERT INTO protection_domains(name, created_at) VALUES (?, ?)`, c.Name, h.Time); err != nil {
			return nil, err
		}
		t.mustExec(`INSERT OR REPLACE INTO mdm_nodes(id, raft_addr, api_addr) VALUES ('probe', 'h:1', 'h:2')`)
		switch c.Fail {
		case "reject":
			return nil, conflict("probe %q rejected after writing", c.Name)
		case "storage":
			return nil, errors.New("probe storage failure")
		}
		return "ok", nil
	})
}

// TestRejectionRollsBackWrites: a command rejected after it wrote leaves nothing behind, not
// even a consumed AUTOINCREMENT id (sqlite_sequence is rolled back with the savepoint), while
// its neighbours in the same batch commit.
func TestRejectionRollsBackWrites(t *testing.T) {
	a := newApplier(t)
	a.reject(KindConflict, &probeCommand{Name: "p1", Fail: "reject"})
	if id := a.mkPD("pd"); id != 1 {
		t.Fatalf("first PD after a rolled-back insert got id %d, want 1", id)
	}

	// The same in one batch: reject, succeed, reject.
	b := newApplier(t)
	b.index, b.now = a.index-2, a.now-2000
	batch := []Entry{
		b.entry("", &probeCommand{Name: "x", Fail: "reject"}),
		b.entry("", &CreatePD{Name: "pd"}),
	}
	res := b.s.Apply(batch)
	if e, ok := AsError(res[0].Err); !ok || e.Kind != KindConflict || res[1].Err != nil {
		t.Fatalf("batch results %+v", res)
	}
	if res[1].Value.(ProtectionDomain).ID != 1 {
		t.Fatalf("PD after the rejected probe in the batch: %+v", res[1].Value)
	}
	if a.digestAt() != b.digestAt() {
		t.Fatal("rejection inside a batch left a trace")
	}

	// A successful probe keeps both its writes.
	if r := a.apply(&probeCommand{Name: "p2"}); r.Err != nil || r.Value != "ok" {
		t.Fatalf("probe: %+v", r)
	}
	if c := a.counts(); c.ProtectionDomains != 2 {
		t.Fatalf("counts %+v", c)
	}
}

// TestUntypedErrorPanics: an error that is not a typed rejection is a storage failure: the
// replica stops rather than guess, and nothing of the batch is committed.
func TestUntypedErrorPanics(t *testing.T) {
	a := newApplier(t)
	a.mkPD("pd")
	before := a.digestAt()
	batch := []Entry{a.entry("", &CreatePD{Name: "pd2"}), a.entry("", &probeCommand{Name: "p", Fail: "storage"})}
	p := func() (p any) {
		defer func() { p = recover() }()
		a.s.Apply(batch)
		return nil
	}()
	msg := fmt.Sprint(p)
	if p == nil || !strings.Contains(msg, "test_probe") || !strings.Contains(msg, fmt.Sprint(batch[1].Index)) {
		t.Fatalf("panic %v", p)
	}
	if got := a.digestAt(); got != before {
		t.Fatalf("state after the panic %+v, want %+v", got, before)
	}
}
