package jepsen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"
)

// Outcome is what a client knows about an operation once it returned.
type Outcome string

// Outcomes, as Jepsen names them.
const (
	OK      Outcome = "ok"   // it happened, with this output
	Fail    Outcome = "fail" // it certainly did not happen
	Unknown Outcome = "info" // it may or may not have happened (timeout, connection lost, 503 outcome_unknown)
)

// NemesisProcess is the process id of nemesis events in a history.
const NemesisProcess = -1

// Op is one operation of a history: a client's request from invocation to return, or a
// nemesis event (Process = NemesisProcess). Times are nanoseconds since the run started.
type Op struct {
	ID      int     `json:"id"`
	Process int     `json:"process"`
	F       string  `json:"f"`             // read, write, cas; create, delete, list; nemesis: kill, pause, ...
	Key     string  `json:"key,omitempty"` // labels: the label key; topology: the PD name
	Value   string  `json:"value,omitempty"`
	Expect  *string `json:"expect,omitempty"` // cas: the expected current value
	Invoke  int64   `json:"invoke_ns"`
	Return  int64   `json:"return_ns"`
	Outcome Outcome `json:"outcome"`
	// Output: read: the value read ("" when the label is missing); create: the new PD id;
	// list: the PDs seen as id:name.
	Output string   `json:"output,omitempty"`
	List   []string `json:"list,omitempty"`
	ID64   int64    `json:"obj_id,omitempty"` // topology: the PD id a create returned or a delete targeted
	Node   string   `json:"node,omitempty"`   // the MDM the client asked, or the nemesis target
	Error  string   `json:"error,omitempty"`
}

// History records operations as they complete and writes them as JSON lines.
type History struct {
	start time.Time

	mu   sync.Mutex
	ops  []Op
	next int
	w    *bufio.Writer
	f    *os.File
}

// NewHistory starts a history whose times count from now; path (if not empty) receives every
// operation as a JSON line.
func NewHistory(path string) (*History, error) {
	h := &History{start: time.Now()}
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return nil, err
		}
		h.f, h.w = f, bufio.NewWriter(f)
	}
	return h, nil
}

// Now is the history's clock: nanoseconds since it started (monotonic).
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Add records a completed operation and returns it with its id.
func (h *History) Add(op Op) Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.ID = h.next
	h.next++
	h.ops = append(h.ops, op)
	if h.w != nil {
		b, _ := json.Marshal(op)
		h.w.Write(append(b, '\n'))
	}
	return op
}

// Ops returns the operations sorted by invocation time.
func (h *History) Ops() []Op {
	h.mu.Lock()
	ops := append([]Op(nil), h.ops...)
	h.mu.Unlock()
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Invoke < ops[j].Invoke })
	return ops
}

// Close flushes the history file.
func (h *History) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.f == nil {
		return nil
	}
	err := h.w.Flush()
	if cerr := h.f.Close(); err == nil {
		err = cerr
	}
	h.f = nil
	return err
}

// ReadHistory loads a history written by History (for re-checking a report).
func ReadHistory(path string) ([]Op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ops []Op
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		var op Op
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return nil, fmt.Errorf("jepsen: %s line %d: %w", path, line, err)
		}
		ops = append(ops, op)
	}
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Invoke < ops[j].Invoke })
	return ops, sc.Err()
}

// String renders an op in one line, for reports.
func (op Op) String() string {
	s := fmt.Sprintf("#%d p%d %s", op.ID, op.Process, op.F)
	if op.Key != "" {
		s += " " + op.Key
	}
	if op.ID64 != 0 {
		s += fmt.Sprintf(" id=%d", op.ID64)
	}
	if op.Expect != nil {
		s += fmt.Sprintf(" expect=%q", *op.Expect)
	}
	if op.Value != "" || op.F == "write" || op.F == "cas" {
		s += fmt.Sprintf(" value=%q", op.Value)
	}
	s += fmt.Sprintf(" [%.3fs..%.3fs] %s", float64(op.Invoke)/1e9, float64(op.Return)/1e9, op.Outcome)
	if op.F == "read" && op.Outcome == OK {
		s += fmt.Sprintf(" -> %q", op.Output)
	}
	if op.F == "list" && op.Outcome == OK {
		s += fmt.Sprintf(" -> %v", op.List)
	}
	if op.Node != "" {
		s += " via " + op.Node
	}
	if op.Error != "" {
		s += " (" + op.Error + ")"
	}
	return s
}
