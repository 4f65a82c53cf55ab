package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"pflex/internal/layout"
	"reflect"
	"strings"
	"testing"
)

// oneOfEach holds one command of every registered type.
var oneOfEach = []Command{
	&CreatePD{Name: "pd"},
	&DeletePD{ID: 1},
	&CreateFaultSet{Name: "fs", PDID: 1},
	&DeleteFaultSet{ID: 2},
	&CreatePool{Name: "p", PDID: 1, ProtectionPolicy: TwoCopies, TotalCapacityGB: 10, ChunkSizeMB: 4},
	&DeletePool{ID: 3},
	&AddSDS{Name: "s", TotalCapacityGB: 5, Devices: Devices{"a", "b"}, ProtectionDomainID: 1, FaultSetID: ptr(int64(2)), Address: "h:1"},
	&SetSDSState{ID: 4, State: SDSFailed},
	&RemoveSDS{ID: 4},
	&AddSDC{Name: "c", Address: "h:2"},
	&RemoveSDC{ID: 5},
	&CreateVolume{Name: "v", SizeGB: 8, Provisioning: Thick, PoolID: 3},
	&DeleteVolume{ID: 6},
	&MapVolume{VolumeID: 6, SDCID: 5, AccessMode: ReadOnly, IOPSLimit: 7, BandwidthLimitMBps: 8},
	&UnmapVolume{VolumeID: 6, SDCID: 5},
	&SetMappingLimits{VolumeID: 6, SDCID: 5, IOPSLimit: ptr(int64(100))},
	&ExtendVolume{VolumeID: 6, SizeGB: 9},
	&SetLabel{VolumeID: 6, Key: "k", Value: "v", Expect: ptr("")},
	&UpsertMDM{ID: "m", RaftAddr: "h:3", APIAddr: "h:4"},
	&RemoveMDM{ID: "m"},
	&RestoreState{DB: []byte{0, 1, 2, 255}},
	&RegisterNode{ID: "n", Capabilities: []string{CapSDS, CapSDC}, Version: "v", APIAddr: "h:5", DataAddr: "h:6", NBDAddr: "h:7",
		SDS: &SDSRegistration{ProtectionDomain: "pd", FaultSet: "fs", Devices: Devices{"d"}, TotalCapacityGB: 3}},
	&SetNodeState{ID: "n", State: NodeDown},
	&AddTokenKey{ID: 1, Key: []byte("0123456789abcdef0123456789abcdef")},
	&SetLayout{VolumeID: 1, Members: []layout.Member{{SDSID: 1, Weight: 10}, {SDSID: 2, Weight: 20, FaultSet: 3}}},
	&AckTokens{SDSID: 1, Entries: []TokenAck{{TokenID: "t", VolumeID: 1, SDCID: 2, ReadOps: 3, WriteOps: 4, ReadBytes: 5, WriteBytes: 6}}},
	&BeginRebuild{VolumeID: 1, Ordered: 64},
	&AdvanceRebuild{VolumeID: 1, Epoch: 3, Done: 64, Ordered: 128},
	&SetRebuildPaused{PoolID: 1, Paused: true},
	&SetMaintenance{SDSID: 1, Enter: true},
	&Batch{Entries: []BatchEntry{{Type: TypeCreatePD, Header: Header{RequestID: "r", Time: 9}, Payload: json.RawMessage(`{"name":"p"}`)}}},
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	seen := map[CommandType]bool{}
	names := map[string]bool{}
	for _, c := range oneOfEach {
		h := Header{RequestID: "rid-" + fmt.Sprint(c.Type()), Time: 1234}
		data, err := Encode(h, c)
		if err != nil {
			t.Fatalf("encode %T: %v", c, err)
		}
		if data[0] != byte(c.Type()) {
			t.Fatalf("%T: type byte %d, want %d", c, data[0], c.Type())
		}
		gotH, gotC, err := Decode(data)
		if err != nil {
			t.Fatalf("decode %T: %v", c, err)
		}
		if gotH != h || !reflect.DeepEqual(gotC, c) {
			t.Fatalf("round trip of %T: got %+v %+v, want %+v %+v", c, gotH, gotC, h, c)
		}
		seen[c.Type()] = true
		name := CommandName(c.Type())
		if strings.HasPrefix(name, "unknown") || names[name] {
			t.Fatalf("%T has name %q", c, name)
		}
		names[name] = true
	}
	// Every registered type is covered above (so the other tests see every command).
	for typ := range registry {
		if !seen[typ] && typ != typeProbe {
			t.Fatalf("registered command type %d (%s) is not in oneOfEach", typ, CommandName(typ))
		}
	}
	if got := CommandName(200); got != "unknown(200)" {
		t.Fatalf("CommandName(200) = %q", got)
	}
}

type unregisteredCommand struct{}

func (*unregisteredCommand) Type() CommandType { return 250 }

func TestEncodeUnregistered(t *testing.T) {
	if _, err := Encode(Header{}, &unregisteredCommand{}); err == nil {
		t.Fatal("encoding an unregistered command type succeeded")
	}
}

func undecodableEntries(t *testing.T) map[string][]byte {
	good, err := Encode(Header{RequestID: "r", Time: 1}, &CreatePD{Name: "pd"})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"nil":                 nil,
		"type byte only":      {byte(TypeCreatePD)},
		"unknown type":        append([]byte{200}, good[1:]...),
		"type zero":           append([]byte{0}, good[1:]...),
		"unassigned type":     append([]byte{199}, good[1:]...),
		"not json":            append([]byte{byte(TypeCreatePD)}, "hello"...),
		"trailing garbage":    append(append([]byte{}, good...), "x"...),
		"header not object":   append([]byte{byte(TypeCreatePD)}, `{"h":"x","c":{}}`...),
		"payload missing":     append([]byte{byte(TypeCreatePD)}, `{"h":{"ts":1}}`...),
		"payload wrong types": append([]byte{byte(TypeCreatePD)}, `{"h":{"ts":1},"c":{"name":5}}`...),
		"payload not object":  append([]byte{byte(TypeDeletePD)}, `{"h":{"ts":1},"c":[1]}`...),
		"bad devices":         append([]byte{byte(TypeAddSDS)}, `{"h":{"ts":1},"c":{"devices":7}}`...),
	}
	// Every strict prefix of a valid entry is truncated JSON.
	for n := 0; n < len(good); n++ {
		cases[fmt.Sprintf("truncated to %d", n)] = good[:n]
	}
	return cases
}

func TestDecodeRejectsBadEntries(t *testing.T) {
	for name, data := range undecodableEntries(t) {
		if _, _, err := Decode(data); !errors.Is(err, ErrUndecodable) {
			t.Errorf("%s: Decode err = %v, want ErrUndecodable", name, err)
		}
	}
}

// TestApplyUndecodablePanics: an entry that does not decode stops the replica; nothing of its
// batch is committed.
func TestApplyUndecodablePanics(t *testing.T) {
	for name, data := range map[string][]byte{
		"unknown type": append([]byte{200}, `{"h":{},"c":{}}`...),
		"truncated":    append([]byte{byte(TypeCreatePD)}, `{"h":{"ts":1},"c":{"na`...),
		"bad json":     append([]byte{byte(TypeCreatePD)}, `{"h":{"ts":1},"c":{"name":5}}`...),
	} {
		t.Run(name, func(t *testing.T) {
			a := newApplier(t)
			a.mkPD("pd1")
			before := a.digestAt()
			good := a.entry("", &CreatePD{Name: "pd2"})
			bad := Entry{Index: a.index + 1, Term: testTerm, Data: data}
			panicked := func() (p any) {
				defer func() { p = recover() }()
				a.s.Apply([]Entry{good, bad})
				return nil
			}()
			if panicked == nil {
				t.Fatal("Apply of an undecodable entry did not panic")
			}
			if msg := fmt.Sprint(panicked); !strings.Contains(msg, ErrUndecodable.Error()) {
				t.Fatalf("panic %q does not say the entry does not decode", msg)
			}
			// The readers see the last committed state: the good entry of the batch is not in it.
			if got := a.digestAt(); got != before {
				t.Fatalf("digest after the panic %+v, want %+v", got, before)
			}
			if got := a.s.AppliedIndex(); got != before.Index {
				t.Fatalf("applied index %d after the panic, want %d", got, before.Index)
			}
		})
	}
}

func TestErrorJSON(t *testing.T) {
	b, err := json.Marshal(newErr(KindConflict, "x %d", 1))
	if err != nil || string(b) != `{"code":"conflict","error":"x 1"}` {
		t.Fatalf("%s %v", b, err)
	}
	wrapped := fmt.Errorf("ctx: %w", notFound("gone"))
	if e, ok := AsError(wrapped); !ok || e.Kind != KindNotFound {
		t.Fatalf("AsError(%v) = %v %v", wrapped, e, ok)
	}
	if _, ok := AsError(errors.New("plain")); ok {
		t.Fatal("AsError of a plain error")
	}
}
