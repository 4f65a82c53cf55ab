package jepsen

import (
	"strings"
	"testing"

	"pflex/internal/api"
)

func TestBlockEncoding(t *testing.T) {
	v := blockValue(3, 41)
	if got := decodeBlock(encodeBlock(v)); got != v {
		t.Fatalf("decode(encode(%s)) = %q", v, got)
	}
	if got := decodeBlock(make([]byte, BlockSize)); got != "" {
		t.Fatalf("zero block = %q", got)
	}
	b := encodeBlock(v)
	copy(b[2048:], encodeBlock(blockValue(1, 1))[:8])
	if got := decodeBlock(b); !strings.HasPrefix(got, "torn:") {
		t.Fatalf("torn block = %q", got)
	}
}

func TestLedgerBounds(t *testing.T) {
	ops := []Op{
		{F: "write", Outcome: OK}, {F: "write", Outcome: OK},
		{F: "write", Outcome: Unknown, Error: "i/o timeout"},
		{F: "write", Outcome: Fail, Error: "dial tcp 127.0.0.1:1: connect: connection refused"},
		{F: "read", Outcome: OK},
		{F: "read", Outcome: Fail, Error: "read tcp: i/o timeout"},
	}
	b := BlockLedgerBounds(ops)
	if b.MinWriteBytes != 4*BlockSize || b.MaxWriteBytes != 6*BlockSize || b.MinReadOps != 1 || b.MaxReadOps != 2 {
		t.Fatalf("bounds %+v", b)
	}
	exact := dataPathSnapshot{LedgerStable: true, Ledger: api.LedgerTotals{WriteOps: 5, WriteBytes: 5 * BlockSize, ReadOps: 1, ReadBytes: BlockSize}}
	if r := CheckLedger(ops, exact); !r.Valid {
		t.Fatalf("in bounds judged invalid: %+v", r)
	}
	exact.Ledger.WriteBytes = 3 * BlockSize // an acknowledged write's copy is missing
	if r := CheckLedger(ops, exact); r.Valid {
		t.Fatalf("missing bytes not caught: %+v", r)
	}
	exact.SDSFaults = 1
	if r := CheckLedger(ops, exact); !r.Valid {
		t.Fatalf("with SDS kills the ledger is reported, not judged: %+v", r)
	}
}

func TestReplicaCheck(t *testing.T) {
	s := dataPathSnapshot{Replicas: map[int64]map[string]string{0: {"sds-1": "aa", "sds-2": "aa"}, 1: {"sds-1": "aa", "sds-3": "bb"}}}
	if r := CheckReplicas(s); r.Valid {
		t.Fatalf("different copies not caught: %+v", r)
	}
	delete(s.Replicas, 1)
	if r := CheckReplicas(s); !r.Valid {
		t.Fatalf("%+v", r)
	}
}

func TestConfigArgAndSameAddr(t *testing.T) {
	if got := configArg([]string{"./bin/pflex", "mdm", "-config", "a.hcl"}, "mdm"); got != "a.hcl" {
		t.Fatal(got)
	}
	if got := configArg([]string{"/x/pflex", "sds", "--config=b.hcl"}, "sds"); got != "b.hcl" {
		t.Fatal(got)
	}
	if configArg([]string{"pflex", "sds", "-config", "b.hcl"}, "mdm") != "" {
		t.Fatal("role ignored")
	}
	if !sameAddr("0.0.0.0:8001", "127.0.0.1:8001") || sameAddr("127.0.0.1:8002", "127.0.0.1:8001") {
		t.Fatal("sameAddr")
	}
	if hclString("node_id = \"mdm-1\"\napi_addr    = \"127.0.0.1:8001\"\n", "api_addr") != "127.0.0.1:8001" {
		t.Fatal("hclString")
	}
}
