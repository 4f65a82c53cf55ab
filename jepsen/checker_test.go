package jepsen

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func str(s string) *string { return &s }

// ms is a history time in milliseconds.
func ms(n int64) int64 { return n * int64(time.Millisecond) }

func number(ops []Op) []Op {
	for i := range ops {
		ops[i].ID = i
	}
	return ops
}

func TestLinearizableValidHistoryPasses(t *testing.T) {
	ops := number([]Op{
		{Process: 0, F: "read", Key: "k0", Invoke: ms(0), Return: ms(1), Outcome: OK, Output: ""},
		{Process: 0, F: "write", Key: "k0", Value: "a", Invoke: ms(2), Return: ms(5), Outcome: OK},
		{Process: 1, F: "read", Key: "k0", Invoke: ms(3), Return: ms(4), Outcome: OK, Output: ""}, // concurrent with the write
		{Process: 1, F: "cas", Key: "k0", Expect: str("a"), Value: "b", Invoke: ms(6), Return: ms(8), Outcome: OK},
		{Process: 2, F: "cas", Key: "k0", Expect: str("a"), Value: "c", Invoke: ms(9), Return: ms(10), Outcome: Fail, Output: casMismatch},
		{Process: 2, F: "write", Key: "k0", Value: "d", Invoke: ms(11), Return: ms(12), Outcome: Unknown}, // never seen: may not have happened
		{Process: 0, F: "read", Key: "k0", Invoke: ms(13), Return: ms(14), Outcome: OK, Output: "b"},
		{Process: 3, F: "write", Key: "k1", Value: "x", Invoke: ms(15), Return: ms(16), Outcome: Unknown}, // seen later: it happened
		{Process: 0, F: "read", Key: "k1", Invoke: ms(30), Return: ms(31), Outcome: OK, Output: "x"},
		{Process: 1, F: "read", Key: "k1", Invoke: ms(32), Return: ms(33), Outcome: Fail}, // failed reads are ignored
		{Process: NemesisProcess, F: "kill", Key: "leader-kill", Node: "mdm-1", Invoke: ms(7), Return: ms(7), Outcome: OK},
	})
	res := CheckLinearizable(ops, t.TempDir(), 10*time.Second)
	if !res.Valid || res.Inconclusive {
		t.Fatalf("valid history rejected: %+v", res)
	}
}

// A stale read, as a follower answering ?stale=1 while it lags would give: the write of "b"
// was acknowledged before the read started, yet the read returns the older "a".
func TestLinearizableCatchesStaleRead(t *testing.T) {
	dir := t.TempDir()
	ops := number([]Op{
		{Process: 0, F: "write", Key: "k0", Value: "a", Invoke: ms(0), Return: ms(2), Outcome: OK},
		{Process: 0, F: "write", Key: "k0", Value: "b", Invoke: ms(3), Return: ms(5), Outcome: OK},
		{Process: 1, F: "read", Key: "k0", Invoke: ms(6), Return: ms(7), Outcome: OK, Output: "a", Node: "mdm-3"},
		{Process: 2, F: "read", Key: "k1", Invoke: ms(6), Return: ms(7), Outcome: OK, Output: ""},
	})
	res := CheckLinearizable(ops, dir, 10*time.Second)
	if res.Valid || res.Inconclusive {
		t.Fatalf("stale read not caught: %+v", res)
	}
	joined := strings.Join(res.Details, "\n")
	if !strings.Contains(joined, "key k0") || !strings.Contains(joined, `-> "a"`) {
		t.Fatalf("details do not name the stale read:\n%s", joined)
	}
	if len(res.Files) != 1 {
		t.Fatalf("no visualization: %v", res.Files)
	}
	if st, err := os.Stat(res.Files[0]); err != nil || st.Size() == 0 {
		t.Fatalf("visualization %s: %v", res.Files[0], err)
	}
}

// A lost acknowledged write: the final read does not see it and nothing overwrote it.
func TestLinearizableCatchesLostWrite(t *testing.T) {
	ops := number([]Op{
		{Process: 0, F: "write", Key: "k0", Value: "a", Invoke: ms(0), Return: ms(2), Outcome: OK},
		{Process: 1, F: "cas", Key: "k0", Expect: str("a"), Value: "b", Invoke: ms(3), Return: ms(4), Outcome: OK},
		{Process: 2, F: "write", Key: "k0", Value: "c", Invoke: ms(1), Return: ms(9), Outcome: Unknown},
		{Process: 9, F: "read", Key: "k0", Invoke: ms(20), Return: ms(21), Outcome: OK, Output: "a"},
	})
	if res := CheckLinearizable(ops, "", 10*time.Second); res.Valid {
		t.Fatalf("lost write not caught: %+v", res)
	}
}

// An unknown cas that a later read proves happened must be placed before that read.
func TestLinearizableUnknownCASObserved(t *testing.T) {
	ops := number([]Op{
		{Process: 0, F: "write", Key: "k0", Value: "a", Invoke: ms(0), Return: ms(1), Outcome: OK},
		{Process: 1, F: "cas", Key: "k0", Expect: str("a"), Value: "b", Invoke: ms(2), Return: ms(3), Outcome: Unknown},
		{Process: 2, F: "read", Key: "k0", Invoke: ms(4), Return: ms(5), Outcome: OK, Output: "b"},
		{Process: 0, F: "write", Key: "k0", Value: "c", Invoke: ms(6), Return: ms(7), Outcome: OK},
		{Process: 2, F: "read", Key: "k0", Invoke: ms(8), Return: ms(9), Outcome: OK, Output: "c"},
	})
	if res := CheckLinearizable(ops, "", 10*time.Second); !res.Valid {
		t.Fatalf("valid history rejected: %+v", res)
	}
	// The same cas, had it failed definitely, makes the read of "b" impossible.
	ops[1].Outcome, ops[1].Output = Fail, casMismatch
	if res := CheckLinearizable(ops, "", 10*time.Second); res.Valid {
		t.Fatalf("impossible read not caught: %+v", res)
	}
}

func TestTopologyChecker(t *testing.T) {
	good := number([]Op{
		{Process: 0, F: "create", Key: "jt-0", ID64: 7, Invoke: ms(0), Return: ms(2), Outcome: OK},
		{Process: 1, F: "list", Invoke: ms(3), Return: ms(4), Outcome: OK, List: []string{"7:jt-0"}},
		{Process: 2, F: "delete", Key: "jt-0", ID64: 7, Invoke: ms(5), Return: ms(9), Outcome: Unknown},
		{Process: 1, F: "list", Invoke: ms(6), Return: ms(7), Outcome: OK, List: []string{}},
		{Process: 0, F: "create", Key: "jt-0", ID64: 8, Invoke: ms(10), Return: ms(11), Outcome: OK},
		{Process: 1, F: "list", Invoke: ms(12), Return: ms(13), Outcome: OK, List: []string{"8:jt-0"}},
	})
	if res := CheckTopology(good); !res.Valid {
		t.Fatalf("valid topology history rejected: %+v", res)
	}
	cases := map[string][]Op{
		"duplicate name": {
			{Process: 1, F: "list", Invoke: ms(3), Return: ms(4), Outcome: OK, List: []string{"7:jt-0", "9:jt-0"}},
		},
		"lost create": {
			{Process: 0, F: "create", Key: "jt-1", ID64: 3, Invoke: ms(0), Return: ms(2), Outcome: OK},
			{Process: 1, F: "list", Invoke: ms(3), Return: ms(4), Outcome: OK, List: []string{}},
		},
		"undone delete": {
			{Process: 2, F: "delete", Key: "jt-0", ID64: 7, Invoke: ms(5), Return: ms(6), Outcome: OK},
			{Process: 1, F: "list", Invoke: ms(7), Return: ms(8), Outcome: OK, List: []string{"7:jt-0"}},
		},
	}
	for name, ops := range cases {
		if res := CheckTopology(number(ops)); res.Valid || len(res.Details) == 0 {
			t.Errorf("%s not caught: %+v", name, res)
		}
	}
}

func TestStatusMonitorTwoLeadersInOneTerm(t *testing.T) {
	h, _ := NewHistory("")
	m, err := NewStatusMonitor(nil, h, 100*time.Millisecond, filepath.Join(t.TempDir(), "status.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Observe(Observation{T: 1, Node: "mdm-1", State: "leader", Term: 2})
	m.Observe(Observation{T: 2, Node: "mdm-2", State: "follower", Term: 2, Leader: "mdm-1"})
	m.Observe(Observation{T: 3, Node: "mdm-2", State: "leader", Term: 3})
	if res := m.Check(); !res.Valid {
		t.Fatalf("one leader per term rejected: %+v", res)
	}
	m.Observe(Observation{T: 4, Node: "mdm-3", State: "leader", Term: 3})
	if res := m.Check(); res.Valid || !strings.Contains(strings.Join(res.Details, " "), "term 3") {
		t.Fatalf("two leaders in term 3 not caught: %+v", res)
	}
}

func TestHistoryRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.jsonl")
	h, err := NewHistory(path)
	if err != nil {
		t.Fatal(err)
	}
	h.Add(Op{Process: 1, F: "cas", Key: "k0", Expect: str(""), Value: "p1-1", Invoke: 5, Return: 9, Outcome: OK})
	h.Add(Op{Process: 0, F: "read", Key: "k0", Invoke: 1, Return: 3, Outcome: OK, Output: ""})
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	ops, err := ReadHistory(path)
	if err != nil || len(ops) != 2 {
		t.Fatalf("read back %d ops: %v", len(ops), err)
	}
	if ops[0].F != "read" || ops[1].Expect == nil || *ops[1].Expect != "" {
		t.Fatalf("round trip changed ops: %+v", ops)
	}
}

func TestWriteOutcome(t *testing.T) {
	cases := []struct {
		r    reply
		want Outcome
	}{
		{reply{status: 200}, OK},
		{reply{status: 412, code: "precondition"}, Fail},
		{reply{status: 503, code: "no_leader", body: []byte(`{"error":"no MDM leader is elected; retry shortly","code":"no_leader"}`)}, Fail},
		{reply{status: 503, code: "no_leader", body: []byte(`{"error":"leader mdm-1 at 127.0.0.1:1 is unreachable: dial tcp 127.0.0.1:1: connect: connection refused","code":"no_leader"}`)}, Fail},
		{reply{status: 503, code: "no_leader", body: []byte(`{"error":"leader mdm-1 at 127.0.0.1:1 is unreachable: EOF","code":"no_leader"}`)}, Unknown},
		{reply{status: 503, code: "no_leader", body: []byte(`{"error":"leadership is moving; retry shortly","code":"no_leader"}`)}, Unknown},
		{reply{status: 503, code: "outcome_unknown"}, Unknown},
		{reply{status: 500}, Unknown},
	}
	for _, c := range cases {
		if got := writeOutcome(c.r); got != c.want {
			t.Errorf("%v: %s, want %s", c.r, got, c.want)
		}
	}
}

// blockHistoryWithTimeouts is a block register's history while its SDS was cut off: clients
// time out on writes (unknown outcome, never read back) between acknowledged writes and reads.
func blockHistoryWithTimeouts(unknown int) []Op {
	var ops []Op
	at := int64(0)
	for i := 0; i < unknown; i++ {
		v := fmt.Sprintf("%016x", i+1)
		ops = append(ops,
			Op{Process: i % 8, F: "write", Key: "b3", Value: "u" + v, Invoke: ms(at), Return: ms(at + 3000), Outcome: Unknown},
			Op{Process: 8, F: "write", Key: "b3", Value: v, Invoke: ms(at + 1), Return: ms(at + 2), Outcome: OK},
			Op{Process: 9, F: "read", Key: "b3", Invoke: ms(at + 3), Return: ms(at + 4), Outcome: OK, Output: v})
		at += 10
	}
	return ops
}

// Unknown writes nobody read back are checked as if they never ran: before, 60 of them on one
// block made porcupine give up. A stale read among them is still caught.
func TestLinearizableManyUnobservedUnknownWrites(t *testing.T) {
	ops := number(blockHistoryWithTimeouts(60))
	if res := checkRegisters("block", ops, "", 10*time.Second); !res.Valid || res.Inconclusive {
		t.Fatalf("valid history: %+v", res)
	}
	stale := blockHistoryWithTimeouts(60)
	stale[len(stale)-1].Output = stale[len(stale)-4].Output // the read before last's value
	if res := checkRegisters("block", number(stale), "", 10*time.Second); res.Valid || res.Inconclusive {
		t.Fatalf("stale read not caught: %+v", res)
	}
}

// On a key with cas operations an unknown write nobody read is kept: a cas that failed on a
// mismatch may have seen its value.
func TestLinearizableKeepsUnknownWriteBeforeMismatchedCas(t *testing.T) {
	ops := number([]Op{
		{Process: 0, F: "write", Key: "k0", Value: "a", Invoke: ms(0), Return: ms(1), Outcome: OK},
		{Process: 1, F: "write", Key: "k0", Value: "w", Invoke: ms(2), Return: ms(9), Outcome: Unknown},
		{Process: 2, F: "cas", Key: "k0", Expect: str("a"), Value: "b", Invoke: ms(3), Return: ms(4), Outcome: Fail, Output: casMismatch},
		{Process: 0, F: "write", Key: "k0", Value: "c", Invoke: ms(5), Return: ms(6), Outcome: OK},
		{Process: 2, F: "read", Key: "k0", Invoke: ms(7), Return: ms(8), Outcome: OK, Output: "c"},
	})
	if res := CheckLinearizable(ops, "", 10*time.Second); !res.Valid || res.Inconclusive {
		t.Fatalf("valid history rejected: %+v", res)
	}
}
