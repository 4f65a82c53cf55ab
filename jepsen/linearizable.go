package jepsen

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// casMismatch is the Output of a cas that failed with 412 (the value was not the expected one).
const casMismatch = "mismatch"

// casInput and casOutput are the porcupine model's operation: a read, a write or a
// compare-and-set on one register.
type casInput struct {
	Key    string
	F      string // read, write, cas
	Value  string
	Expect string
	OpID   int
}

type casOutput struct {
	Value   string // read: the value read
	OK      bool   // cas: succeeded
	Unknown bool   // write/cas: the client never learned the outcome
}

// CASRegisterModel is the sequential specification of a label: a register holding a string,
// "" when unset, partitioned by key.
var CASRegisterModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(casInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(casInput), output.(casOutput)
		switch in.F {
		case "read":
			return out.Value == s, s
		case "write":
			return true, in.Value
		case "cas":
			switch {
			case out.Unknown && s == in.Expect:
				return true, in.Value
			case out.Unknown:
				return true, s // it ran and failed
			case out.OK:
				if s == in.Expect {
					return true, in.Value
				}
				return false, s
			default:
				return s != in.Expect, s
			}
		}
		return false, s
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(casInput), output.(casOutput)
		switch {
		case in.F == "read":
			return fmt.Sprintf("#%d read %s -> %q", in.OpID, in.Key, out.Value)
		case in.F == "write" && out.Unknown:
			return fmt.Sprintf("#%d write %s %q ?", in.OpID, in.Key, in.Value)
		case in.F == "write":
			return fmt.Sprintf("#%d write %s %q", in.OpID, in.Key, in.Value)
		case out.Unknown:
			return fmt.Sprintf("#%d cas %s %q->%q ?", in.OpID, in.Key, in.Expect, in.Value)
		}
		return fmt.Sprintf("#%d cas %s %q->%q %v", in.OpID, in.Key, in.Expect, in.Value, out.OK)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state.(string)) },
}

// LabelOperations turns a labels history into porcupine operations. Failed and unknown reads
// are dropped (a read changes nothing); failed writes are dropped except a cas that failed on a
// mismatch, which says the value was not the expected one. A write whose outcome is unknown may
// take effect at any time after its invocation: its return is moved to the earliest return of an
// operation that observed its (unique) value, or past the end of the history.
//
// An unknown write that nobody observed, on a key without cas operations, is dropped: it can
// always be placed last, after everything, and removing it from a linearization of the rest
// changes no read (none returned its value). Kept, each one is an operation porcupine may place
// anywhere until the end, and a few dozen on one key (a block whose SDS was cut off while
// clients timed out on it) made the search give up.
func LabelOperations(ops []Op) []porcupine.Operation {
	var end int64
	observed := map[string]int64{} // key/value -> earliest return of an op that saw it
	casKeys := map[string]bool{}   // keys with cas operations: a failed cas depends on the value too
	note := func(key, value string, ret int64) {
		k := key + "\x00" + value
		if t, ok := observed[k]; !ok || ret < t {
			observed[k] = ret
		}
	}
	for _, op := range ops {
		if op.Return > end {
			end = op.Return
		}
		if op.F == "cas" {
			casKeys[op.Key] = true
		}
		if op.Outcome != OK {
			continue
		}
		switch {
		case op.F == "read":
			note(op.Key, op.Output, op.Return)
		case op.F == "cas" && op.Expect != nil:
			note(op.Key, *op.Expect, op.Return)
		}
	}
	var out []porcupine.Operation
	for _, op := range ops {
		if op.Process == NemesisProcess {
			continue
		}
		in := casInput{Key: op.Key, F: op.F, Value: op.Value, OpID: op.ID}
		if op.Expect != nil {
			in.Expect = *op.Expect
		}
		po := porcupine.Operation{ClientId: op.Process, Input: in, Call: op.Invoke, Return: op.Return, Metadata: op.Node}
		switch {
		case op.F == "read" && op.Outcome == OK:
			po.Output = casOutput{Value: op.Output}
		case op.F == "read":
			continue
		case op.F != "write" && op.F != "cas":
			continue
		case op.Outcome == OK:
			po.Output = casOutput{OK: true}
		case op.Outcome == Fail && op.F == "cas" && op.Output == casMismatch:
			po.Output = casOutput{OK: false}
		case op.Outcome == Fail:
			continue
		default: // unknown
			t, seen := observed[op.Key+"\x00"+op.Value]
			if !seen && op.F == "write" && !casKeys[op.Key] {
				continue
			}
			po.Output = casOutput{Unknown: true}
			po.Return = end + 1
			if seen && t >= op.Invoke {
				po.Return = t
			}
		}
		out = append(out, po)
	}
	return out
}

// CheckLinearizable checks a labels history with porcupine. On a violation it writes
// linearizability.html (porcupine's visualization) to reportDir and lists, per offending key,
// the operations that could not be linearized.
func CheckLinearizable(ops []Op, reportDir string, timeout time.Duration) CheckResult {
	return checkRegisters("linearizable (labels, porcupine cas-register per key)", ops, reportDir, timeout)
}

// checkRegisters checks a history of registers (label keys, blocks) with porcupine.
func checkRegisters(name string, ops []Op, reportDir string, timeout time.Duration) CheckResult {
	res := CheckResult{Name: name}
	history := LabelOperations(ops)
	if len(history) == 0 {
		res.Summary = "no operations to check"
		res.Inconclusive = true
		return res
	}
	start := time.Now()
	verdict := porcupine.CheckOperationsTimeout(CASRegisterModel, history, timeout)
	took := time.Since(start).Round(time.Millisecond)
	switch verdict {
	case porcupine.Ok:
		res.Valid = true
		res.Summary = fmt.Sprintf("linearizable: %d operations checked in %s", len(history), took)
		return res
	case porcupine.Unknown:
		res.Inconclusive = true
		res.Summary = fmt.Sprintf("inconclusive: porcupine gave up after %s on %d operations", timeout, len(history))
		return res
	}
	res.Summary = fmt.Sprintf("NOT linearizable: %d operations, found in %s", len(history), took)
	byID := map[int]Op{}
	for _, op := range ops {
		byID[op.ID] = op
	}
	for _, part := range CASRegisterModel.Partition(history) {
		key := part[0].Input.(casInput).Key
		r, info := porcupine.CheckOperationsVerbose(CASRegisterModel, part, timeout)
		if r != porcupine.Illegal {
			continue
		}
		res.Details = append(res.Details, fmt.Sprintf("key %s: not linearizable", key))
		res.Details = append(res.Details, explain(part, info, byID)...)
		if reportDir != "" {
			path := filepath.Join(reportDir, "linearizability-"+key+".html")
			if err := porcupine.VisualizePath(CASRegisterModel, info, path); err == nil {
				res.Files = append(res.Files, path)
			}
		}
	}
	return res
}

// explain lists the end of the longest linearizable prefix porcupine found and the operations
// it could not place after it.
func explain(part []porcupine.Operation, info porcupine.LinearizationInfo, byID map[int]Op) []string {
	var longest []porcupine.Operation
	for _, partial := range info.PartialLinearizationsOperations() {
		for _, lin := range partial {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
	}
	in := map[int]bool{}
	for _, op := range longest {
		in[op.Input.(casInput).OpID] = true
	}
	var lines []string
	from := max(0, len(longest)-5)
	lines = append(lines, fmt.Sprintf("  longest linearizable prefix: %d operations; its last ones:", len(longest)))
	for _, op := range longest[from:] {
		lines = append(lines, "    "+byID[op.Input.(casInput).OpID].String())
	}
	var rest []porcupine.Operation
	for _, op := range part {
		if !in[op.Input.(casInput).OpID] {
			rest = append(rest, op)
		}
	}
	sort.Slice(rest, func(i, j int) bool { return rest[i].Call < rest[j].Call })
	lines = append(lines, "  could not be linearized next (first by invocation):")
	for _, op := range rest[:min(8, len(rest))] {
		lines = append(lines, "    "+strings.TrimSpace(byID[op.Input.(casInput).OpID].String()))
	}
	return lines
}
