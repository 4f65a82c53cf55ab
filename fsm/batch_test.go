package fsm

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestBatchAppliesEachCommandWithItsOwnResult(t *testing.T) {
	a := newApplier(t)
	data, err := EncodeBatch([]Proposal{
		{Header{RequestID: "r1", Time: 10}, &CreatePD{Name: "pd1"}},
		{Header{Time: 11}, &CreatePD{Name: "pd1"}},                    // duplicate name: rejected alone
		{Header{RequestID: "r1", Time: 12}, &CreatePD{Name: "other"}}, // retry of r1: first answer
		{Header{Time: 13}, &CreatePD{Name: "pd2"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	a.index++
	res := a.s.Apply([]Entry{{Index: a.index, Term: 1, Data: data}})
	inner, ok := res[0].Value.([]Result)
	if !ok || len(inner) != 4 || res[0].Err != nil {
		t.Fatalf("batch result %+v", res[0])
	}
	if pd, ok := inner[0].Value.(ProtectionDomain); !ok || pd.Name != "pd1" || pd.CreatedAt != 10 {
		t.Fatalf("first: %+v", inner[0])
	}
	if e, ok := AsError(inner[1].Err); !ok || e.Kind != KindConflict {
		t.Fatalf("second: %+v", inner[1])
	}
	if raw, ok := inner[2].Value.(json.RawMessage); inner[2].Err != nil || !ok || !strings.Contains(string(raw), `"pd1"`) {
		t.Fatalf("retry: %+v", inner[2])
	}
	if a.counts().ProtectionDomains != 2 {
		t.Fatalf("want pd1 and pd2, got %+v", a.counts())
	}
}

func TestBatchCannotNestAndBadInnerEntryPanics(t *testing.T) {
	if _, err := EncodeBatch([]Proposal{{Header{}, &Batch{}}}); err == nil {
		t.Fatal("a batch inside a batch was encoded")
	}
	bad, err := Encode(Header{Time: 1}, &Batch{Entries: []BatchEntry{{Type: 199, Payload: json.RawMessage(`{}`)}}})
	if err != nil {
		t.Fatal(err)
	}
	a := newApplier(t)
	before := a.digestAt()
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("an undecodable command inside a batch did not stop the replica")
			}
		}()
		a.s.Apply([]Entry{{Index: 1, Term: 1, Data: bad}})
	}()
	if got := a.digestAt(); got != before {
		t.Fatalf("state changed: %+v -> %+v", before, got)
	}
}

// TestBatchMatchesOneEntryPerCommand: request ids are looked up and recorded per batch (in
// chunks), yet a batch leaves exactly the state and answers of the same commands applied one
// log entry each: ids repeated inside the batch, ids stored by earlier entries, rejections with
// ids, commands without ids, and more ids than one lookup chunk holds.
func TestBatchMatchesOneEntryPerCommand(t *testing.T) {
	one, batched := newApplier(t), newApplier(t)
	for _, a := range []*applier{one, batched} {
		pd := a.mkPD("pd")
		pool := a.mkPool("pool", pd, 100)
		a.mkVolume("vol", pool, 1, Thin)
		a.applyRID("early", &SetLabel{VolumeID: 1, Key: "early", Value: "x"})
	}
	var ps []Proposal
	for i := range 150 {
		h := Header{RequestID: fmt.Sprintf("r%d", i), Time: one.now + int64(i)}
		var c Command = &SetLabel{VolumeID: 1, Key: fmt.Sprintf("k%d", i%7), Value: fmt.Sprint(i)}
		switch {
		case i%10 == 3:
			h.RequestID = fmt.Sprintf("r%d", i-3) // a retry inside the batch
		case i%10 == 5:
			h.RequestID = "" // no id: nothing remembered
		case i%17 == 0:
			c = &SetLabel{VolumeID: 99, Key: "k", Value: "v"} // rejected: not found
		case i%23 == 0:
			c = &CreatePD{Name: "pd"} // rejected after a savepoint: conflict
		case i == 149:
			h.RequestID = "early" // stored by an earlier entry
		}
		ps = append(ps, Proposal{Header: h, Command: c})
	}
	var want []string
	for _, p := range ps {
		one.index++
		data, err := Encode(p.Header, p.Command)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, resultKey(t, one.s.Apply([]Entry{{Index: one.index, Term: 1, Data: data}})[0]))
	}
	data, err := EncodeBatch(ps)
	if err != nil {
		t.Fatal(err)
	}
	batched.index++
	res := batched.s.Apply([]Entry{{Index: batched.index, Term: 1, Data: data}})
	inner, _ := res[0].Value.([]Result)
	if len(inner) != len(ps) {
		t.Fatalf("batch answered %d of %d", len(inner), len(ps))
	}
	for i, r := range inner {
		// A retry inside the batch is answered from memory with the stored form (raw JSON),
		// as the table would answer it; compare canonical renderings.
		if got := resultKey(t, r); got != want[i] {
			t.Errorf("command %d: batch %s, one entry each %s", i, got, want[i])
		}
	}
	if g, w := batched.digest(), one.digest(); g != w {
		t.Fatalf("batch digest %s, one entry per command %s", g, w)
	}
}
