package fsm

import (
	"encoding/json"
	"path/filepath"
	"testing"
)

// applier drives a Store the way raft would: every command becomes a log entry with the next
// index, term 1 and a leader time that moves forward by one second per entry.
type applier struct {
	t     testing.TB
	s     *Store
	path  string
	index uint64
	now   int64
}

const testTerm = 1

func openStore(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newApplier(t testing.TB) *applier {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	return &applier{t: t, s: openStore(t, path), path: path, now: 1_700_000_000_000}
}

// entry encodes c as the next log entry.
func (a *applier) entry(rid string, c Command) Entry {
	a.t.Helper()
	a.index++
	a.now += 1000
	data, err := Encode(Header{RequestID: rid, Time: a.now}, c)
	if err != nil {
		a.t.Fatalf("encode %T: %v", c, err)
	}
	return Entry{Index: a.index, Term: testTerm, Data: data}
}

func (a *applier) applyRID(rid string, c Command) Result {
	a.t.Helper()
	res := a.s.Apply([]Entry{a.entry(rid, c)})
	if len(res) != 1 {
		a.t.Fatalf("Apply returned %d results for 1 entry", len(res))
	}
	if res[0].Skipped {
		a.t.Fatalf("entry %d was skipped", a.index)
	}
	if got := a.s.AppliedIndex(); got != a.index {
		a.t.Fatalf("applied index %d after applying entry %d", got, a.index)
	}
	return res[0]
}

func (a *applier) apply(c Command) Result { a.t.Helper(); return a.applyRID("", c) }

// ok applies c and fails the test if it is rejected.
func (a *applier) ok(c Command) any {
	a.t.Helper()
	r := a.apply(c)
	if r.Err != nil {
		a.t.Fatalf("%T %+v rejected: %v", c, c, r.Err)
	}
	return r.Value
}

// reject applies c (without a request id), checks that it is rejected with kind, and that it
// left no trace: the state digest is unchanged (sqlite_sequence is part of it, so no id was
// consumed) while the applied index still moved on.
func (a *applier) reject(kind Kind, c Command) *Error {
	a.t.Helper()
	before := a.digest()
	r := a.apply(c)
	e, ok := AsError(r.Err)
	if !ok {
		a.t.Fatalf("%T %+v: want a %s rejection, got value %+v err %v", c, c, kind, r.Value, r.Err)
	}
	if e.Kind != kind {
		a.t.Fatalf("%T %+v: want kind %s, got %s (%s)", c, c, kind, e.Kind, e.Message)
	}
	if e.Message == "" {
		a.t.Fatalf("%T: rejection without a message", c)
	}
	if r.Value != nil {
		a.t.Fatalf("%T: rejection carries a value %+v", c, r.Value)
	}
	after := a.digestAt()
	if after.Digest != before {
		a.t.Fatalf("%T %+v: rejected command changed the state digest", c, c)
	}
	if after.Index != a.index {
		a.t.Fatalf("applied index in the database is %d, want %d", after.Index, a.index)
	}
	return e
}

func (a *applier) digestAt() Digest {
	a.t.Helper()
	d, err := a.s.Digest()
	if err != nil {
		a.t.Fatalf("digest: %v", err)
	}
	return d
}

func (a *applier) digest() string { a.t.Helper(); return a.digestAt().Digest }

// read runs fn on a consistent read view.
func (a *applier) read(fn func(r *Reader) error) {
	a.t.Helper()
	if err := a.s.Read(fn); err != nil {
		a.t.Fatalf("read: %v", err)
	}
}

func (a *applier) counts() Counts {
	a.t.Helper()
	var c Counts
	a.read(func(r *Reader) (err error) { c, err = r.Counts(); return })
	return c
}

func (a *applier) volume(id int64) Volume {
	a.t.Helper()
	var v Volume
	a.read(func(r *Reader) (err error) { v, err = r.Volume(id); return })
	return v
}

func (a *applier) pool(id int64) Pool {
	a.t.Helper()
	var p Pool
	a.read(func(r *Reader) (err error) { p, err = r.Pool(id); return })
	return p
}

func (a *applier) sds(id int64) SDS {
	a.t.Helper()
	var s SDS
	a.read(func(r *Reader) (err error) { s, err = r.SDS(id); return })
	return s
}

// Fixture builders: each returns the new object's id.

func (a *applier) mkPD(name string) int64 {
	a.t.Helper()
	return a.ok(&CreatePD{Name: name}).(ProtectionDomain).ID
}

func (a *applier) mkFaultSet(name string, pd int64) int64 {
	a.t.Helper()
	return a.ok(&CreateFaultSet{Name: name, PDID: pd}).(FaultSet).ID
}

func (a *applier) mkPool(name string, pd, capacityGB int64) int64 {
	a.t.Helper()
	return a.ok(&CreatePool{Name: name, PDID: pd, TotalCapacityGB: capacityGB}).(Pool).ID
}

func (a *applier) mkSDS(name string, pd int64) int64 {
	a.t.Helper()
	return a.ok(&AddSDS{Name: name, ProtectionDomainID: pd, TotalCapacityGB: 100, Devices: Devices{"blk0"}}).(SDS).ID
}

func (a *applier) mkSDC(name string) int64 {
	a.t.Helper()
	return a.ok(&AddSDC{Name: name}).(SDC).ID
}

func (a *applier) mkVolume(name string, pool, sizeGB int64, prov string) int64 {
	a.t.Helper()
	return a.ok(&CreateVolume{Name: name, PoolID: pool, SizeGB: sizeGB, Provisioning: prov}).(Volume).ID
}

// resultKey renders a result canonically so results from different stores (or a deduplicated
// retry, whose value comes back as raw JSON) can be compared.
func resultKey(t testing.TB, r Result) string {
	t.Helper()
	v, err := json.Marshal(r.Value)
	if err != nil {
		t.Fatalf("marshal result value: %v", err)
	}
	s := "value=" + string(v)
	if r.Err != nil {
		e, ok := AsError(r.Err)
		if !ok {
			t.Fatalf("untyped error in a result: %v", r.Err)
		}
		s += " kind=" + string(e.Kind) + " msg=" + e.Message
	}
	if r.Skipped {
		s += " skipped"
	}
	return s
}

func ptr[T any](v T) *T { return &v }
