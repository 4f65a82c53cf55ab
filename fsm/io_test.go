package fsm

import (
	"math"
	"testing"

	"pflex/internal/layout"
)

func TestTokenKeysRotateAndBumpIOVersion(t *testing.T) {
	a := newApplier(t)
	key := []byte("0123456789abcdef0123456789abcdef")
	a.reject(KindInvalid, &AddTokenKey{ID: 1, Key: []byte("short")})
	for id := uint32(1); id <= 4; id++ {
		a.ok(&AddTokenKey{ID: id, Key: key})
	}
	a.reject(KindConflict, &AddTokenKey{ID: 2, Key: key})
	var keys []TokenKey
	var v int64
	a.read(func(r *Reader) (err error) {
		if keys, err = r.TokenKeys(); err != nil {
			return err
		}
		v, err = r.IOVersion()
		return err
	})
	if len(keys) != 3 || keys[0].ID != 2 || keys[2].ID != 4 || v != 4 {
		t.Fatalf("keys %+v version %d", keys, v)
	}
}

func TestLayoutAndLedger(t *testing.T) {
	a := newApplier(t)
	pd := a.ok(&CreatePD{Name: "pd"}).(ProtectionDomain).ID
	a.ok(&CreatePool{Name: "p", PDID: pd, TotalCapacityGB: 100, ChunkSizeMB: 4})
	vol := a.ok(&CreateVolume{Name: "v", SizeGB: 2, PoolID: 1}).(Volume).ID
	s1 := a.ok(&AddSDS{Name: "s1", TotalCapacityGB: 10, Devices: Devices{"d"}, ProtectionDomainID: pd, Address: "127.0.0.1:9701"}).(SDS).ID
	s2 := a.ok(&AddSDS{Name: "s2", TotalCapacityGB: 10, Devices: Devices{"d"}, ProtectionDomainID: pd, Address: "127.0.0.1:9702"}).(SDS).ID

	a.reject(KindConflict, &SetLayout{VolumeID: vol, Members: []layout.Member{{SDSID: s1, Weight: 10}}})
	a.reject(KindNotFound, &SetLayout{VolumeID: vol, Members: []layout.Member{{SDSID: s1, Weight: 10}, {SDSID: 99, Weight: 1}}})
	a.reject(KindInvalid, &SetLayout{VolumeID: vol, Members: []layout.Member{{SDSID: s1, Weight: 10}, {SDSID: s1, Weight: 1}}})
	l := a.ok(&SetLayout{VolumeID: vol, Members: []layout.Member{{SDSID: s1, Weight: 10}, {SDSID: s2, Weight: 10}}}).(layout.Layout)
	if l.Epoch != 1 || l.ChunkSize != 4<<20 || l.SizeBytes != 2<<30 || l.Members[1].Addr != "127.0.0.1:9702" {
		t.Fatalf("layout %+v", l)
	}
	if l := a.ok(&SetLayout{VolumeID: vol, Members: l.Members}).(layout.Layout); l.Epoch != 2 {
		t.Fatalf("second layout epoch %d", l.Epoch)
	}

	a.ok(&AckTokens{SDSID: s1, Entries: []TokenAck{{TokenID: "t1", VolumeID: vol, SDCID: 1, WriteOps: 2, WriteBytes: 8192}}})
	a.ok(&AckTokens{SDSID: s1, Entries: []TokenAck{{TokenID: "t1", VolumeID: vol, SDCID: 1, ReadOps: 1, ReadBytes: 4096, WriteOps: 1, WriteBytes: 4096}}})
	a.ok(&AckTokens{SDSID: s2, Entries: []TokenAck{{TokenID: "t1", VolumeID: vol, SDCID: 1, WriteOps: 3, WriteBytes: 12288}}})
	a.reject(KindInvalid, &AckTokens{SDSID: s2, Entries: []TokenAck{{TokenID: "", VolumeID: vol}}})
	a.reject(KindInvalid, &AckTokens{SDSID: s2, Entries: []TokenAck{{TokenID: "t1", VolumeID: vol, ReadBytes: -1}}})
	a.reject(KindInvalid, &AckTokens{SDSID: s2, Entries: []TokenAck{{TokenID: "t1", VolumeID: vol, WriteOps: MaxAckCount + 1}}})
	a.reject(KindNotFound, &AckTokens{SDSID: 99})
	var rows []LedgerRow
	a.read(func(r *Reader) (err error) { rows, err = r.Ledger(LedgerFilter{SDSID: s1}); return })
	if len(rows) != 1 || rows[0].WriteOps != 3 || rows[0].WriteBytes != 12288 || rows[0].ReadOps != 1 {
		t.Fatalf("ledger %+v", rows)
	}
	a.read(func(r *Reader) (err error) { rows, err = r.Ledger(LedgerFilter{VolumeID: vol}); return })
	if len(rows) != 2 {
		t.Fatalf("ledger by volume %+v", rows)
	}

	// A row saturates at MaxLedgerCount instead of overflowing: 4096 entries of MaxAckCount
	// reach it exactly, and one more leaves it there.
	full := make([]TokenAck, MaxAckEntries)
	for i := range full {
		full[i] = TokenAck{TokenID: "big", VolumeID: vol, SDCID: 7, ReadOps: 1, ReadBytes: MaxAckCount, WriteBytes: MaxAckCount}
	}
	a.ok(&AckTokens{SDSID: s1, Entries: full})
	a.ok(&AckTokens{SDSID: s1, Entries: full[:1]})
	a.read(func(r *Reader) (err error) { rows, err = r.Ledger(LedgerFilter{SDCID: 7}); return })
	if len(rows) != 1 || rows[0].ReadBytes != MaxLedgerCount || rows[0].WriteBytes != MaxLedgerCount || rows[0].ReadOps != MaxAckEntries+1 {
		t.Fatalf("saturated ledger row %+v", rows)
	}
}

func TestAddCountSaturates(t *testing.T) {
	for _, c := range []struct{ count, n, limit, want int64 }{
		{1, 2, 10, 3}, {8, 2, 10, 10}, {8, 3, 10, 10}, {10, 0, 10, 10}, {1, math.MaxInt64, math.MaxInt64, math.MaxInt64},
	} {
		if got := AddCount(c.count, c.n, c.limit); got != c.want {
			t.Errorf("AddCount(%d, %d, %d) = %d, want %d", c.count, c.n, c.limit, got, c.want)
		}
	}
	var e TokenAck
	e.Add(math.MaxInt64, 1, 0, 0)
	e.Add(math.MaxInt64, 1, 0, 0)
	if e.ReadOps != MaxAckCount || e.ReadBytes != 2 {
		t.Fatalf("entry %+v", e)
	}
}
