package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
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

// legacyJSONBatch encodes proposals the way EncodeBatch did before the binary form.
func legacyJSONBatch(t *testing.T, ps []Proposal) []byte {
	t.Helper()
	b := Batch{Entries: make([]BatchEntry, len(ps))}
	var h Header
	for i, p := range ps {
		payload, err := json.Marshal(p.Command)
		if err != nil {
			t.Fatal(err)
		}
		b.Entries[i] = BatchEntry{Type: p.Command.Type(), Header: p.Header, Payload: payload}
		h.Time = max(h.Time, p.Header.Time)
	}
	data, err := Encode(h, &b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestBinaryBatchRoundTrip(t *testing.T) {
	ps := []Proposal{
		{Header{RequestID: "r1", Time: 10}, &SetLabel{VolumeID: 3, Key: "k", Value: "v"}},
		{Header{Time: -5}, &SetLabel{VolumeID: -1, Key: "", Value: strings.Repeat("é", 300), Expect: ptr("")}},
		{Header{RequestID: "r3", Time: 1 << 50}, &SetLabel{VolumeID: 1 << 40, Key: "k2", Value: "", Expect: ptr("old")}},
		{Header{RequestID: "r4", Time: 12}, &CreatePD{Name: "pd"}}, // no binary form: JSON inside
		{Header{Time: 13}, &AckTokens{SDSID: 1, Entries: []TokenAck{{TokenID: "t", VolumeID: 1, SDCID: 2, WriteOps: 4}}}},
	}
	data, err := EncodeBatch(ps)
	if err != nil {
		t.Fatal(err)
	}
	if CommandType(data[0]) != TypeBatch || data[1] != batchFormatBinary {
		t.Fatalf("EncodeBatch wrote % x..., want the binary form", data[:2])
	}
	h, c, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	b := c.(*Batch)
	if h.Time != 1<<50 || h.RequestID != "" || len(b.Entries) != len(ps) {
		t.Fatalf("header %+v, %d entries", h, len(b.Entries))
	}
	for i, p := range ps {
		e := b.Entries[i]
		got, err := decodeEntry(e)
		if err != nil || e.Type != p.Command.Type() || e.Header != p.Header || !reflect.DeepEqual(got, p.Command) {
			t.Fatalf("entry %d: %+v %+v %v, want %+v %+v", i, e.Header, got, err, p.Header, p.Command)
		}
	}
	// Every truncation, and trailing garbage, is undecodable rather than a panic or a short batch.
	for n := 2; n < len(data); n++ {
		if _, _, err := Decode(data[:n]); !errors.Is(err, ErrUndecodable) {
			t.Fatalf("decode of %d of %d bytes: %v", n, len(data), err)
		}
	}
	if _, _, err := Decode(append(append([]byte{}, data...), 0)); !errors.Is(err, ErrUndecodable) {
		t.Fatalf("trailing byte: %v", err)
	}
}

// TestLegacyJSONBatchStillApplies: a batch written as JSON by an earlier version (still in
// logs and snapshots' trailing entries) applies exactly as its binary form does.
func TestLegacyJSONBatchStillApplies(t *testing.T) {
	ps := []Proposal{
		{Header{RequestID: "r1", Time: 10}, &CreatePD{Name: "pd1"}},
		{Header{RequestID: "r2", Time: 11}, &SetLabel{VolumeID: 1, Key: "k", Value: "v"}},
		{Header{RequestID: "r1", Time: 12}, &CreatePD{Name: "other"}},
		{Header{Time: 13}, &SetLabel{VolumeID: 1, Key: "k", Value: "w", Expect: ptr("v")}},
	}
	bin, err := EncodeBatch(ps)
	if err != nil {
		t.Fatal(err)
	}
	var digests, answers [2]string
	for i, data := range [][]byte{legacyJSONBatch(t, ps), bin} {
		a := newApplier(t)
		a.mkPool("pool", a.mkPD("pd"), 10)
		a.mkVolume("vol", 1, 1, Thin)
		a.index++
		res := a.s.Apply([]Entry{{Index: a.index, Term: 1, Data: data}})
		for _, r := range res[0].Value.([]Result) {
			answers[i] += resultKey(t, r) + "\n"
		}
		digests[i] = a.digest()
	}
	if digests[0] != digests[1] || answers[0] != answers[1] {
		t.Fatalf("JSON batch: %s%s\nbinary batch: %s%s", digests[0], answers[0], digests[1], answers[1])
	}
	if !strings.Contains(answers[0], `"version":2`) {
		t.Fatalf("answers %s", answers[0])
	}
}
