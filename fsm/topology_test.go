package fsm

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestNameRules checks the name rules for every kind of named object.
func TestNameRules(t *testing.T) {
	a := newApplier(t)
	pd := a.mkPD("pd0")
	pool := a.mkPool("pool0", pd, 1000)

	makers := map[string]func(name string) Command{
		"pd":        func(n string) Command { return &CreatePD{Name: n} },
		"fault set": func(n string) Command { return &CreateFaultSet{Name: n, PDID: pd} },
		"pool": func(n string) Command {
			return &CreatePool{Name: n, PDID: pd, TotalCapacityGB: 10}
		},
		"sds": func(n string) Command {
			return &AddSDS{Name: n, ProtectionDomainID: pd, TotalCapacityGB: 10, Devices: Devices{"d"}}
		},
		"sdc":    func(n string) Command { return &AddSDC{Name: n} },
		"volume": func(n string) Command { return &CreateVolume{Name: n, PoolID: pool, SizeGB: 1} },
	}
	bad := []string{
		"", strings.Repeat("x", MaxNameLen+1), "a b", "a/b", "é", "tab\t", "semi;colon", "quote'",
		"123", "0", "-1", "007",
	}
	for kind, mk := range makers {
		for _, name := range bad {
			a.reject(KindInvalid, mk(name))
		}
		// Good names, at the edges of the rules.
		for _, n := range []string{strings.Repeat("n", MaxNameLen), "a-b_c.d:e", "1e3", "1a", "x"} {
			if r := a.apply(mk(n)); r.Err != nil {
				t.Fatalf("%s name %q rejected: %v", kind, n, r.Err)
			}
			a.reject(KindConflict, mk(n))
		}
	}
	// Names are unique per kind, not across kinds: the loop above used the same names for every kind.
	c := a.counts()
	if c.ProtectionDomains != 6 || c.FaultSets != 5 || c.Pools != 6 || c.SDS != 5 || c.SDC != 5 || c.Volumes != 5 {
		t.Fatalf("counts %+v", c)
	}
}

func TestProtectionDomains(t *testing.T) {
	a := newApplier(t)
	pd := a.ok(&CreatePD{Name: "pd1"}).(ProtectionDomain)
	if pd.ID != 1 || pd.Name != "pd1" || pd.CreatedAt != a.now {
		t.Fatalf("created %+v (now %d)", pd, a.now)
	}
	a.reject(KindConflict, &CreatePD{Name: "pd1"})
	a.reject(KindNotFound, &DeletePD{ID: 99})
	a.reject(KindNotFound, &DeletePD{ID: 0})

	// A rejected create consumes no id: the next PD is 2.
	if id := a.mkPD("pd2"); id != 2 {
		t.Fatalf("second PD id %d, want 2", id)
	}

	// Each kind of dependant keeps a PD alive.
	for _, dep := range []struct {
		name   string
		create func(pd int64) Command
		remove func(id int64) Command
	}{
		{"pool", func(pd int64) Command { return &CreatePool{Name: "p", PDID: pd, TotalCapacityGB: 1} },
			func(id int64) Command { return &DeletePool{ID: id} }},
		{"sds", func(pd int64) Command {
			return &AddSDS{Name: "s", ProtectionDomainID: pd, TotalCapacityGB: 1, Devices: Devices{"d"}}
		}, func(id int64) Command { return &RemoveSDS{ID: id} }},
		{"fault set", func(pd int64) Command { return &CreateFaultSet{Name: "f", PDID: pd} },
			func(id int64) Command { return &DeleteFaultSet{ID: id} }},
	} {
		r := a.apply(dep.create(2))
		if r.Err != nil {
			t.Fatalf("create %s: %v", dep.name, r.Err)
		}
		id := reflect.ValueOf(r.Value).FieldByName("ID").Int()
		e := a.reject(KindConflict, &DeletePD{ID: 2})
		if !strings.Contains(e.Message, "pd2") {
			t.Fatalf("conflict message %q does not name the PD", e.Message)
		}
		a.ok(dep.remove(id))
	}
	got := a.ok(&DeletePD{ID: 2}).(ProtectionDomain)
	if got.ID != 2 || got.Name != "pd2" {
		t.Fatalf("delete returned %+v", got)
	}
	a.reject(KindNotFound, &DeletePD{ID: 2})
	// Ids are never reused, even after a delete.
	if id := a.mkPD("pd2"); id != 3 {
		t.Fatalf("re-created PD got id %d, want 3", id)
	}
	var pds []ProtectionDomain
	a.read(func(r *Reader) (err error) { pds, err = r.PDs(); return })
	if len(pds) != 2 || pds[0].Name != "pd1" || pds[1].ID != 3 {
		t.Fatalf("PDs %+v", pds)
	}
}

func TestFaultSets(t *testing.T) {
	a := newApplier(t)
	pd1, pd2 := a.mkPD("pd1"), a.mkPD("pd2")
	a.reject(KindNotFound, &CreateFaultSet{Name: "fs", PDID: 42})
	fs1 := a.mkFaultSet("fs1", pd1)
	a.reject(KindConflict, &CreateFaultSet{Name: "fs1", PDID: pd2})
	fs2 := a.mkFaultSet("fs2", pd2)

	// The fault set must belong to the SDS's PD.
	a.reject(KindInvalid, &AddSDS{Name: "s", ProtectionDomainID: pd1, FaultSetID: &fs2, TotalCapacityGB: 1, Devices: Devices{"d"}})
	a.reject(KindNotFound, &AddSDS{Name: "s", ProtectionDomainID: pd1, FaultSetID: ptr(int64(77)), TotalCapacityGB: 1, Devices: Devices{"d"}})
	sds := a.ok(&AddSDS{Name: "s", ProtectionDomainID: pd1, FaultSetID: &fs1, TotalCapacityGB: 1, Devices: Devices{"d"}}).(SDS)
	if sds.FaultSetID == nil || *sds.FaultSetID != fs1 {
		t.Fatalf("SDS fault set %v, want %d", sds.FaultSetID, fs1)
	}

	a.reject(KindConflict, &DeleteFaultSet{ID: fs1})
	a.reject(KindNotFound, &DeleteFaultSet{ID: 99})
	a.ok(&RemoveSDS{ID: sds.ID})
	got := a.ok(&DeleteFaultSet{ID: fs1}).(FaultSet)
	if got.Name != "fs1" || got.PDID != pd1 {
		t.Fatalf("deleted %+v", got)
	}
	var all []FaultSet
	a.read(func(r *Reader) (err error) { all, err = r.FaultSets(); return })
	if len(all) != 1 || all[0].ID != fs2 {
		t.Fatalf("fault sets %+v", all)
	}
}

func TestPools(t *testing.T) {
	a := newApplier(t)
	pd := a.mkPD("pd")
	pool := func(mut func(c *CreatePool)) *CreatePool {
		c := &CreatePool{Name: "p", PDID: pd, TotalCapacityGB: 100}
		mut(c)
		return c
	}
	for _, c := range []*CreatePool{
		pool(func(c *CreatePool) { c.ProtectionPolicy = "three_copies" }),
		pool(func(c *CreatePool) { c.ProtectionPolicy = "TWO_COPIES" }),
		pool(func(c *CreatePool) { c.TotalCapacityGB = 0 }),
		pool(func(c *CreatePool) { c.TotalCapacityGB = -5 }),
		pool(func(c *CreatePool) { c.TotalCapacityGB = MaxCapacityGB + 1 }),
		pool(func(c *CreatePool) { c.ChunkSizeMB = 3 }),
		pool(func(c *CreatePool) { c.ChunkSizeMB = -1 }),
		pool(func(c *CreatePool) { c.ChunkSizeMB = -1024 }),
		pool(func(c *CreatePool) { c.ChunkSizeMB = 2048 }),
		pool(func(c *CreatePool) { c.ChunkSizeMB = 1000 }),
	} {
		a.reject(KindInvalid, c)
	}
	a.reject(KindNotFound, pool(func(c *CreatePool) { c.PDID = 9 }))

	// Defaults: two_copies, chunk 1 MB; the edges of the valid ranges are accepted.
	p := a.ok(pool(func(c *CreatePool) {})).(Pool)
	want := Pool{ID: 1, Name: "p", PDID: pd, ProtectionPolicy: TwoCopies, TotalCapacityGB: 100, ChunkSizeMB: 1, CreatedAt: a.now}
	if p != want {
		t.Fatalf("pool %+v, want %+v", p, want)
	}
	a.reject(KindConflict, pool(func(c *CreatePool) {}))
	for i, chunk := range []int64{1, 2, 64, 1024} {
		p := a.ok(pool(func(c *CreatePool) {
			c.Name = "chunk" + string(rune('a'+i))
			c.ChunkSizeMB = chunk
			c.ProtectionPolicy = TwoCopies
			c.TotalCapacityGB = MaxCapacityGB
		})).(Pool)
		if p.ChunkSizeMB != chunk || p.TotalCapacityGB != MaxCapacityGB {
			t.Fatalf("pool %+v", p)
		}
	}
	var pools []Pool
	a.read(func(r *Reader) (err error) { pools, err = r.Pools(); return })
	if len(pools) != 5 {
		t.Fatalf("%d pools", len(pools))
	}

	// A pool with volumes cannot be deleted.
	v := a.mkVolume("v", p.ID, 10, Thin)
	a.reject(KindConflict, &DeletePool{ID: p.ID})
	a.ok(&DeleteVolume{ID: v})
	a.ok(&DeletePool{ID: p.ID})
	a.reject(KindNotFound, &DeletePool{ID: p.ID})
}

func TestSDS(t *testing.T) {
	a := newApplier(t)
	pd := a.mkPD("pd")
	add := func(mut func(c *AddSDS)) *AddSDS {
		c := &AddSDS{Name: "s1", ProtectionDomainID: pd, TotalCapacityGB: 500, Devices: Devices{"blk0", "blk1"}, Address: "10.0.0.1:7072"}
		mut(c)
		return c
	}
	for _, c := range []*AddSDS{
		add(func(c *AddSDS) { c.TotalCapacityGB = 0 }),
		add(func(c *AddSDS) { c.TotalCapacityGB = MaxCapacityGB + 1 }),
		add(func(c *AddSDS) { c.Devices = nil }),
		add(func(c *AddSDS) { c.Devices = Devices{" ", ""} }),
		add(func(c *AddSDS) { c.Address = "10.0.0.1" }),
		add(func(c *AddSDS) { c.Address = ":7072" }),
		add(func(c *AddSDS) { c.Address = "h:0" }),
		add(func(c *AddSDS) { c.Address = "h:65536" }),
		add(func(c *AddSDS) { c.Address = "h:port" }),
	} {
		a.reject(KindInvalid, c)
	}
	a.reject(KindNotFound, add(func(c *AddSDS) { c.ProtectionDomainID = 5 }))

	s := a.ok(add(func(c *AddSDS) { c.Devices = Devices{" blk0", "blk1 ", ""}; c.Address = " 10.0.0.1:7072 " })).(SDS)
	want := SDS{ID: 1, Name: "s1", ProtectionDomainID: pd, Address: "10.0.0.1:7072", Devices: Devices{"blk0", "blk1"},
		TotalCapacityGB: 500, State: SDSUp, StateChangedAt: a.now, CreatedAt: a.now}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("SDS %+v, want %+v", s, want)
	}
	if !reflect.DeepEqual(a.sds(s.ID), want) {
		t.Fatalf("read back %+v", a.sds(s.ID))
	}
	a.reject(KindConflict, add(func(c *AddSDS) {}))
	a.ok(add(func(c *AddSDS) { c.Name = "s2"; c.Address = "" }))

	// State: up / failed / down; setting the current state again is a no-op, not an error.
	a.reject(KindInvalid, &SetSDSState{ID: s.ID, State: "broken"})
	a.reject(KindInvalid, &SetSDSState{ID: s.ID, State: ""})
	a.reject(KindNotFound, &SetSDSState{ID: 9, State: SDSFailed})
	failedAt := a.now + 1000
	if got := a.ok(&SetSDSState{ID: s.ID, State: SDSFailed}).(SDS); got.State != SDSFailed || got.StateChangedAt != failedAt {
		t.Fatalf("after fail: %+v (want changed at %d)", got, failedAt)
	}
	before := a.digest()
	if got := a.ok(&SetSDSState{ID: s.ID, State: SDSFailed}).(SDS); got.State != SDSFailed || got.StateChangedAt != failedAt {
		t.Fatalf("repeated fail moved the state change time: %+v", got)
	}
	if a.digest() != before {
		t.Fatal("an idempotent state change changed the digest")
	}
	if c := a.counts(); c.SDS != 2 || c.SDSUp != 1 {
		t.Fatalf("counts %+v", c)
	}
	a.ok(&SetSDSState{ID: s.ID, State: SDSDown})
	if got := a.ok(&SetSDSState{ID: s.ID, State: SDSUp}).(SDS); got.State != SDSUp || got.StateChangedAt != a.now {
		t.Fatalf("after recover: %+v", got)
	}

	a.reject(KindNotFound, &RemoveSDS{ID: 9})
	if got := a.ok(&RemoveSDS{ID: s.ID}).(SDS); got.Name != "s1" {
		t.Fatalf("removed %+v", got)
	}
	var all []SDS
	a.read(func(r *Reader) (err error) { all, err = r.SDSs(); return })
	if len(all) != 1 || all[0].Name != "s2" {
		t.Fatalf("SDSs %+v", all)
	}
}

// TestDevicesJSON checks that devices decode from the prototype's comma-separated string as well
// as from a list, both directly and inside a log entry.
func TestDevicesJSON(t *testing.T) {
	for in, want := range map[string]Devices{
		`"a, b"`:           {"a", "b"},
		`"blk0"`:           {"blk0"},
		`" a ,, b ,"`:      {"a", "b"},
		`""`:               {},
		`["a", " b ", ""]`: {"a", "b"},
		`[]`:               {},
	} {
		var d Devices
		if err := json.Unmarshal([]byte(in), &d); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if !reflect.DeepEqual(d, want) {
			t.Fatalf("%s decoded to %q, want %q", in, d, want)
		}
	}
	for _, in := range []string{`5`, `{"a":1}`, `[1,2]`, `true`} {
		var d Devices
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Fatalf("%s decoded to %q, want an error", in, d)
		}
	}
	if b, _ := json.Marshal(Devices(nil)); string(b) != "[]" {
		t.Fatalf("nil devices marshal to %s", b)
	}

	// Through the log: a hand-written entry with the string form.
	a := newApplier(t)
	a.mkPD("pd")
	a.index++
	a.now += 1000
	raw := append([]byte{byte(TypeAddSDS)},
		`{"h":{"ts":5},"c":{"name":"s","total_capacity_gb":1,"protection_domain_id":1,"devices":"a, b"}}`...)
	r := a.s.Apply([]Entry{{Index: a.index, Term: testTerm, Data: raw}})[0]
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := a.sds(1).Devices; !reflect.DeepEqual(got, Devices{"a", "b"}) {
		t.Fatalf("devices %q", got)
	}
	if got := a.sds(1).CreatedAt; got != 5 {
		t.Fatalf("created_at %d: the time must come from the header", got)
	}
}

func TestSDC(t *testing.T) {
	a := newApplier(t)
	a.reject(KindInvalid, &AddSDC{Name: "c", Address: "nohost"})
	c := a.ok(&AddSDC{Name: "c", Address: " 10.1.1.1:1234 "}).(SDC)
	want := SDC{ID: 1, Name: "c", Address: "10.1.1.1:1234", State: SDSUp, CreatedAt: a.now}
	if c != want {
		t.Fatalf("SDC %+v, want %+v", c, want)
	}
	a.reject(KindConflict, &AddSDC{Name: "c"})

	pd := a.mkPD("pd")
	pool := a.mkPool("pool", pd, 100)
	v := a.mkVolume("v", pool, 10, Thin)
	a.ok(&MapVolume{VolumeID: v, SDCID: c.ID})
	a.reject(KindConflict, &RemoveSDC{ID: c.ID})
	a.ok(&UnmapVolume{VolumeID: v, SDCID: c.ID})
	a.ok(&RemoveSDC{ID: c.ID})
	a.reject(KindNotFound, &RemoveSDC{ID: c.ID})
	var all []SDC
	a.read(func(r *Reader) (err error) { all, err = r.SDCs(); return })
	if len(all) != 0 {
		t.Fatalf("SDCs %+v", all)
	}
}

func TestMDMNodes(t *testing.T) {
	a := newApplier(t)
	for _, c := range []*UpsertMDM{
		{RaftAddr: "h:1", APIAddr: "h:2"},
		{ID: "m1", APIAddr: "h:2"},
		{ID: "m1", RaftAddr: "h:1"},
		{ID: "m1", RaftAddr: "h", APIAddr: "h:2"},
		{ID: "m1", RaftAddr: "h:1", APIAddr: "h:99999"},
	} {
		a.reject(KindInvalid, c)
	}
	if got := a.ok(&UpsertMDM{ID: "m1", RaftAddr: "h1:8300", APIAddr: "h1:8080"}); got != (MDMNode{ID: "m1", RaftAddr: "h1:8300", APIAddr: "h1:8080"}) {
		t.Fatalf("upsert returned %#v", got)
	}
	a.ok(&UpsertMDM{ID: "m2", RaftAddr: "h2:8300", APIAddr: "h2:8080"})
	a.ok(&UpsertMDM{ID: "m1", RaftAddr: "h9:8300", APIAddr: "h9:8080"}) // an upsert replaces
	nodes := func() []MDMNode {
		var n []MDMNode
		a.read(func(r *Reader) (err error) { n, err = r.MDMNodes(); return })
		return n
	}
	want := []MDMNode{{"m1", "h9:8300", "h9:8080"}, {"m2", "h2:8300", "h2:8080"}}
	if got := nodes(); !reflect.DeepEqual(got, want) {
		t.Fatalf("nodes %+v, want %+v", got, want)
	}
	a.ok(&RemoveMDM{ID: "m1"})
	before := a.digest()
	a.ok(&RemoveMDM{ID: "m1"}) // removing an unknown node is not an error and changes nothing
	if a.digest() != before {
		t.Fatal("removing an unknown MDM changed the state")
	}
	if got := nodes(); !reflect.DeepEqual(got, want[1:]) {
		t.Fatalf("nodes %+v", got)
	}
}
