package fsm

import (
	"encoding/json"
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
