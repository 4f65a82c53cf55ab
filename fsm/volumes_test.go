package fsm

import (
	"strings"
	"testing"
)

func TestCreateVolume(t *testing.T) {
	a := newApplier(t)
	pd := a.mkPD("pd")
	pool := a.mkPool("pool", pd, 100)

	a.reject(KindInvalid, &CreateVolume{Name: "v", PoolID: pool, SizeGB: 0})
	a.reject(KindInvalid, &CreateVolume{Name: "v", PoolID: pool, SizeGB: -1})
	a.reject(KindInvalid, &CreateVolume{Name: "v", PoolID: pool, SizeGB: MaxCapacityGB + 1})
	a.reject(KindInvalid, &CreateVolume{Name: "v", PoolID: pool, SizeGB: 1, Provisioning: "fat"})
	a.reject(KindInvalid, &CreateVolume{Name: "v", PoolID: pool, SizeGB: 1, Provisioning: "Thin"})
	a.reject(KindNotFound, &CreateVolume{Name: "v", PoolID: 7, SizeGB: 1})

	v := a.ok(&CreateVolume{Name: "v", PoolID: pool, SizeGB: 10}).(Volume)
	if v.ID != 1 || v.Provisioning != Thin || v.SizeGB != 10 || v.PoolID != pool || v.MapGeneration != 0 ||
		v.CreatedAt != a.now || v.Mappings == nil || len(v.Mappings) != 0 {
		t.Fatalf("volume %+v", v)
	}
	a.reject(KindConflict, &CreateVolume{Name: "v", PoolID: pool, SizeGB: 1})

	// Thin volumes may over-commit the pool; thick ones may not.
	a.mkVolume("thin-big", pool, 1000, Thin)
	a.mkVolume("thick60", pool, 60, Thick)
	e := a.reject(KindConflict, &CreateVolume{Name: "thick41", PoolID: pool, SizeGB: 41, Provisioning: Thick})
	if !strings.Contains(e.Message, "pool") {
		t.Fatalf("message %q", e.Message)
	}
	a.mkVolume("thick40", pool, 40, Thick) // exactly fills the pool
	a.reject(KindConflict, &CreateVolume{Name: "thick1", PoolID: pool, SizeGB: 1, Provisioning: Thick})
	a.mkVolume("thin-more", pool, 5, Thin)

	p := a.pool(pool)
	if p.ThickReservedGB != 100 || p.ProvisionedGB != 10+1000+60+40+5 || p.VolumeCount != 5 {
		t.Fatalf("pool %+v", p)
	}
	// Deleting a thick volume frees its reservation.
	a.ok(&DeleteVolume{ID: 3})
	a.mkVolume("thick1", pool, 1, Thick)
	if p := a.pool(pool); p.ThickReservedGB != 41 {
		t.Fatalf("thick reserved %d, want 41", p.ThickReservedGB)
	}
	var vols []Volume
	a.read(func(r *Reader) (err error) { vols, err = r.Volumes(); return })
	if len(vols) != 5 || vols[0].Name != "v" || vols[4].Name != "thick1" || vols[4].ID != 6 {
		t.Fatalf("volumes %+v", vols)
	}
}

func TestExtendVolume(t *testing.T) {
	a := newApplier(t)
	pd := a.mkPD("pd")
	pool := a.mkPool("pool", pd, 100)
	thin := a.mkVolume("thin", pool, 10, Thin)
	thick := a.mkVolume("thick", pool, 50, Thick)

	a.reject(KindNotFound, &ExtendVolume{VolumeID: 99, SizeGB: 20})
	a.reject(KindInvalid, &ExtendVolume{VolumeID: thin, SizeGB: 10}) // not larger
	a.reject(KindInvalid, &ExtendVolume{VolumeID: thin, SizeGB: 5})  // shrink
	a.reject(KindInvalid, &ExtendVolume{VolumeID: thin, SizeGB: 0})
	a.reject(KindInvalid, &ExtendVolume{VolumeID: thin, SizeGB: MaxCapacityGB + 1})

	if v := a.ok(&ExtendVolume{VolumeID: thin, SizeGB: 500}).(Volume); v.SizeGB != 500 {
		t.Fatalf("thin extended to %d", v.SizeGB)
	}
	a.reject(KindConflict, &ExtendVolume{VolumeID: thick, SizeGB: 101})
	if v := a.ok(&ExtendVolume{VolumeID: thick, SizeGB: 100}).(Volume); v.SizeGB != 100 {
		t.Fatalf("thick extended to %d", v.SizeGB)
	}
	a.reject(KindConflict, &ExtendVolume{VolumeID: thick, SizeGB: 101})
	if p := a.pool(pool); p.ThickReservedGB != 100 || p.ProvisionedGB != 600 {
		t.Fatalf("pool %+v", p)
	}
}

func TestMapUnmap(t *testing.T) {
	a := newApplier(t)
	pd := a.mkPD("pd")
	pool := a.mkPool("pool", pd, 100)
	v := a.mkVolume("v", pool, 10, Thin)
	c1, c2 := a.mkSDC("c1"), a.mkSDC("c2")

	a.reject(KindInvalid, &MapVolume{VolumeID: v, SDCID: c1, AccessMode: "write"})
	a.reject(KindInvalid, &MapVolume{VolumeID: v, SDCID: c1, IOPSLimit: -1})
	a.reject(KindInvalid, &MapVolume{VolumeID: v, SDCID: c1, BandwidthLimitMBps: -1})
	a.reject(KindNotFound, &MapVolume{VolumeID: 9, SDCID: c1})
	a.reject(KindNotFound, &MapVolume{VolumeID: v, SDCID: 9})

	got := a.ok(&MapVolume{VolumeID: v, SDCID: c1, IOPSLimit: 1000, BandwidthLimitMBps: 200}).(Volume)
	if got.MapGeneration != 0 || len(got.Mappings) != 1 {
		t.Fatalf("after first map: %+v", got)
	}
	want := Mapping{VolumeID: v, SDCID: c1, AccessMode: ReadWrite, IOPSLimit: 1000, BandwidthLimitMBps: 200, Generation: 0, CreatedAt: a.now}
	if got.Mappings[0] != want {
		t.Fatalf("mapping %+v, want %+v", got.Mappings[0], want)
	}
	a.reject(KindConflict, &MapVolume{VolumeID: v, SDCID: c1})
	a.reject(KindConflict, &MapVolume{VolumeID: v, SDCID: c1, AccessMode: ReadOnly})

	got = a.ok(&MapVolume{VolumeID: v, SDCID: c2, AccessMode: ReadOnly}).(Volume)
	if got.MapGeneration != 0 || len(got.Mappings) != 2 || got.Mappings[1].Generation != 0 || got.Mappings[1].AccessMode != ReadOnly {
		t.Fatalf("after second map: %+v", got)
	}
	if c := a.counts(); c.Mappings != 2 {
		t.Fatalf("counts %+v", c)
	}

	// A mapped volume can be neither deleted nor have its SDCs removed.
	a.reject(KindConflict, &DeleteVolume{ID: v})
	a.reject(KindConflict, &RemoveSDC{ID: c2})

	a.reject(KindNotFound, &UnmapVolume{VolumeID: 9, SDCID: c1})
	got = a.ok(&UnmapVolume{VolumeID: v, SDCID: c1}).(Volume)
	if got.MapGeneration != 1 || len(got.Mappings) != 1 || got.Mappings[0].SDCID != c2 {
		t.Fatalf("after unmap: %+v", got)
	}
	a.reject(KindNotFound, &UnmapVolume{VolumeID: v, SDCID: c1}) // the pair is no longer mapped
	a.reject(KindNotFound, &UnmapVolume{VolumeID: v, SDCID: 42})
	a.ok(&UnmapVolume{VolumeID: v, SDCID: c2})
	if got := a.volume(v); got.MapGeneration != 2 || len(got.Mappings) != 0 {
		t.Fatalf("after second unmap: %+v", got)
	}
	// Only unmaps move the generation; a re-mapping's tokens carry the current one.
	got = a.ok(&MapVolume{VolumeID: v, SDCID: c1}).(Volume)
	if got.MapGeneration != 2 || got.Mappings[0].Generation != 2 {
		t.Fatalf("after re-map: %+v", got)
	}
	a.ok(&UnmapVolume{VolumeID: v, SDCID: c1})
	a.ok(&DeleteVolume{ID: v})
	a.reject(KindNotFound, &DeleteVolume{ID: v})
}

func TestSetMappingLimits(t *testing.T) {
	a := newApplier(t)
	pool := a.mkPool("pool", a.mkPD("pd"), 100)
	v := a.mkVolume("v", pool, 10, Thin)
	c1, c2 := a.mkSDC("c1"), a.mkSDC("c2")
	a.ok(&MapVolume{VolumeID: v, SDCID: c1, IOPSLimit: 1000, BandwidthLimitMBps: 200})
	n := func(x int64) *int64 { return &x }

	a.reject(KindInvalid, &SetMappingLimits{VolumeID: v, SDCID: c1})
	a.reject(KindInvalid, &SetMappingLimits{VolumeID: v, SDCID: c1, IOPSLimit: n(-1)})
	a.reject(KindInvalid, &SetMappingLimits{VolumeID: v, SDCID: c1, BandwidthLimitMBps: n(-5)})
	a.reject(KindNotFound, &SetMappingLimits{VolumeID: 9, SDCID: c1, IOPSLimit: n(1)})
	a.reject(KindNotFound, &SetMappingLimits{VolumeID: v, SDCID: c2, IOPSLimit: n(1)}) // not mapped there

	limits := func(got Volume) (int64, int64) { return got.Mappings[0].IOPSLimit, got.Mappings[0].BandwidthLimitMBps }
	// One limit at a time; the other is kept.
	if i, b := limits(a.ok(&SetMappingLimits{VolumeID: v, SDCID: c1, IOPSLimit: n(500)}).(Volume)); i != 500 || b != 200 {
		t.Fatalf("after setting IOPS: %d IOPS, %d MiB/s", i, b)
	}
	if i, b := limits(a.ok(&SetMappingLimits{VolumeID: v, SDCID: c1, BandwidthLimitMBps: n(0)}).(Volume)); i != 500 || b != 0 {
		t.Fatalf("after lifting bandwidth: %d IOPS, %d MiB/s", i, b)
	}
	got := a.ok(&SetMappingLimits{VolumeID: v, SDCID: c1, IOPSLimit: n(0), BandwidthLimitMBps: n(50)}).(Volume)
	if i, b := limits(got); i != 0 || b != 50 {
		t.Fatalf("after setting both: %d IOPS, %d MiB/s", i, b)
	}
	// Limits are not a revocation: the map generation and the mapping's own stay.
	if got.MapGeneration != 0 || got.Mappings[0].Generation != 0 || got.Mappings[0].AccessMode != ReadWrite {
		t.Fatalf("mapping %+v of volume %+v", got.Mappings[0], got)
	}
}

func TestLabels(t *testing.T) {
	a := newApplier(t)
	pd := a.mkPD("pd")
	pool := a.mkPool("pool", pd, 100)
	v := a.mkVolume("v", pool, 10, Thin)

	a.reject(KindInvalid, &SetLabel{VolumeID: v, Key: "", Value: "x"})
	a.reject(KindInvalid, &SetLabel{VolumeID: v, Key: strings.Repeat("k", MaxLabelKeyLen+1), Value: "x"})
	a.reject(KindInvalid, &SetLabel{VolumeID: v, Key: "k", Value: strings.Repeat("v", MaxLabelValLen+1)})
	a.reject(KindNotFound, &SetLabel{VolumeID: 9, Key: "k", Value: "x"})
	a.ok(&SetLabel{VolumeID: v, Key: strings.Repeat("k", MaxLabelKeyLen), Value: strings.Repeat("v", MaxLabelValLen)})

	// A missing label counts as "" for compare-and-set.
	a.reject(KindPrecondition, &SetLabel{VolumeID: v, Key: "owner", Value: "a", Expect: ptr("b")})
	l := a.ok(&SetLabel{VolumeID: v, Key: "owner", Value: "alice", Expect: ptr("")}).(Label)
	if l != (Label{VolumeID: v, Key: "owner", Value: "alice", Version: 1, UpdatedAt: a.now}) {
		t.Fatalf("label %+v", l)
	}
	l = a.ok(&SetLabel{VolumeID: v, Key: "owner", Value: "bob"}).(Label)
	if l.Value != "bob" || l.Version != 2 || l.UpdatedAt != a.now {
		t.Fatalf("label %+v", l)
	}
	e := a.reject(KindPrecondition, &SetLabel{VolumeID: v, Key: "owner", Value: "carol", Expect: ptr("alice")})
	if !strings.Contains(e.Message, `"bob"`) {
		t.Fatalf("message %q does not say the current value", e.Message)
	}
	a.reject(KindPrecondition, &SetLabel{VolumeID: v, Key: "owner", Value: "carol", Expect: ptr("")})
	if l = a.ok(&SetLabel{VolumeID: v, Key: "owner", Value: "carol", Expect: ptr("bob")}).(Label); l.Version != 3 {
		t.Fatalf("label %+v", l)
	}
	// An empty value is a value: it still bumps the version.
	if l = a.ok(&SetLabel{VolumeID: v, Key: "owner", Value: ""}).(Label); l.Version != 4 || l.Value != "" {
		t.Fatalf("label %+v", l)
	}
	var got Label
	a.read(func(r *Reader) (err error) { got, err = r.Label(v, "owner"); return })
	if got != l {
		t.Fatalf("read %+v, want %+v", got, l)
	}
	a.read(func(r *Reader) error {
		_, err := r.Label(v, "nope")
		if e, ok := AsError(err); !ok || e.Kind != KindNotFound {
			t.Fatalf("missing label: %v", err)
		}
		return nil
	})

	// Deleting the volume deletes its labels.
	a.ok(&DeleteVolume{ID: v})
	a.read(func(r *Reader) error {
		n, err := r.count(`SELECT COUNT(*) FROM labels`)
		if n != 0 {
			t.Fatalf("%d labels left after the volume was deleted", n)
		}
		return err
	})
}
