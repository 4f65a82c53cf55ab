package fsm

import "testing"

func sdsNode(id string) *RegisterNode {
	return &RegisterNode{ID: id, Capabilities: []string{CapSDS}, Version: "t", APIAddr: "127.0.0.1:9101",
		DataAddr: "127.0.0.1:9701", GossipAddr: "127.0.0.1:7911",
		SDS: &SDSRegistration{ProtectionDomain: "pd1", Devices: Devices{"/d0"}, TotalCapacityGB: 100}}
}

func TestRegisterNodeCreatesSDSAndIsIdempotent(t *testing.T) {
	a := newApplier(t)
	if e := a.reject(KindNotFound, sdsNode("sds-1")); e.Message == "" {
		t.Fatal("want a message naming the missing protection domain")
	}
	a.ok(&CreatePD{Name: "pd1"})
	reg := a.ok(sdsNode("sds-1")).(Registration)
	if reg.SDSID != 1 || reg.Node.State != NodeUp || !reg.Node.Has(CapSDS) {
		t.Fatalf("registration %+v", reg)
	}
	again := sdsNode("sds-1")
	again.DataAddr = "127.0.0.1:9799"
	again.SDS.TotalCapacityGB = 200
	reg2 := a.ok(again).(Registration)
	if reg2.SDSID != reg.SDSID {
		t.Fatalf("re-registration made a new SDS: %+v", reg2)
	}
	var sdss []SDS
	a.read(func(r *Reader) (err error) { sdss, err = r.SDSs(); return })
	if len(sdss) != 1 || sdss[0].Address != "127.0.0.1:9799" || sdss[0].TotalCapacityGB != 200 || sdss[0].NodeID != "sds-1" {
		t.Fatalf("sds after re-registration %+v", sdss)
	}
	// Moving to another PD by registering is refused.
	a.ok(&CreatePD{Name: "pd2"})
	moved := sdsNode("sds-1")
	moved.SDS.ProtectionDomain = "pd2"
	a.reject(KindConflict, moved)
	// Bad input.
	a.reject(KindInvalid, &RegisterNode{ID: "x", Capabilities: []string{"GPU"}})
	a.reject(KindInvalid, &RegisterNode{ID: "x"})
	a.reject(KindInvalid, &RegisterNode{ID: "x", Capabilities: []string{CapSDS}})
	a.reject(KindInvalid, &RegisterNode{ID: "x", Capabilities: []string{CapSDC}, NBDAddr: "nowhere"})
}

func TestNodeStateCarriesToSDSAndSDC(t *testing.T) {
	a := newApplier(t)
	a.ok(&CreatePD{Name: "pd1"})
	both := sdsNode("n1")
	both.Capabilities = []string{CapSDS, CapSDC}
	both.NBDAddr = "127.0.0.1:10809"
	reg := a.ok(both).(Registration)
	if reg.SDSID == 0 || reg.SDCID == 0 {
		t.Fatalf("want an SDS and an SDC: %+v", reg)
	}
	a.ok(&SetNodeState{ID: "n1", State: NodeDown})
	var sds SDS
	var sdc SDC
	a.read(func(r *Reader) (err error) { sds, err = r.SDS(reg.SDSID); return })
	a.read(func(r *Reader) (err error) { sdc, err = r.SDC(reg.SDCID); return })
	if sds.State != SDSDown || sdc.State != NodeDown {
		t.Fatalf("after down: %+v %+v", sds, sdc)
	}
	// A failed (operator) SDS stays failed when the node comes back.
	a.ok(&SetSDSState{ID: reg.SDSID, State: SDSFailed})
	a.ok(&SetNodeState{ID: "n1", State: NodeUp})
	a.read(func(r *Reader) (err error) { sds, err = r.SDS(reg.SDSID); return })
	if sds.State != SDSFailed {
		t.Fatalf("operator-failed SDS revived: %+v", sds)
	}
	a.reject(KindNotFound, &SetNodeState{ID: "ghost", State: NodeDown})
	a.reject(KindInvalid, &SetNodeState{ID: "n1", State: "sideways"})
}

func TestMappingNeedsTheSDCCapability(t *testing.T) {
	a := newApplier(t)
	a.ok(&CreatePD{Name: "pd1"})
	a.ok(&CreatePool{Name: "p", PDID: 1, TotalCapacityGB: 10})
	a.ok(&CreateVolume{Name: "v", SizeGB: 1, PoolID: 1})
	n := &RegisterNode{ID: "c1", Capabilities: []string{CapSDC}, NBDAddr: "127.0.0.1:10809"}
	reg := a.ok(n).(Registration)
	a.ok(&MapVolume{VolumeID: 1, SDCID: reg.SDCID})
	a.ok(&UnmapVolume{VolumeID: 1, SDCID: reg.SDCID})
	// The node re-registers without SDC: its SDC object remains but cannot take mappings.
	a.ok(&RegisterNode{ID: "c1", Capabilities: []string{CapMGMT}})
	a.reject(KindConflict, &MapVolume{VolumeID: 1, SDCID: reg.SDCID})
}
