package jepsen

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"time"

	"pflex/fsm"
)

// TopologyWorkload creates and deletes protection domains named from a small set and lists
// them. Its invariants: a name is never listed twice, an acknowledged create stays visible until
// a delete of it is invoked, and an acknowledged delete is never undone.
type TopologyWorkload struct {
	names []string
}

// topologyPrefix marks the PDs the workload owns.
const topologyPrefix = "jt-"

// Name implements Workload.
func (w *TopologyWorkload) Name() string { return "topology" }

// Setup implements Workload.
func (w *TopologyWorkload) Setup(ctx context.Context, e *Env) error {
	n := e.Options.Keys
	if n <= 0 {
		n = 5
	}
	w.names = nil
	for i := 0; i < n; i++ {
		w.names = append(w.names, fmt.Sprintf("%s%d", topologyPrefix, i))
	}
	return nil
}

// Client implements Workload: 40% create, 30% delete (a list to find the id, then the delete),
// 30% list, against random MDMs.
func (w *TopologyWorkload) Client(stop, ctx context.Context, e *Env, p int, rng *rand.Rand) {
	for stop.Err() == nil && ctx.Err() == nil {
		name := w.names[rng.Intn(len(w.names))]
		node := e.randomNode(rng)
		switch r := rng.Intn(10); {
		case r < 4:
			w.create(ctx, e, p, node, name)
		case r < 7:
			list := w.list(ctx, e, p, node)
			if id, ok := idOf(list, name); ok {
				w.delete(ctx, e, p, node, name, id)
			}
		default:
			w.list(ctx, e, p, node)
		}
		e.pause(stop, rng)
	}
}

func (w *TopologyWorkload) create(ctx context.Context, e *Env, p int, node Node, name string) {
	op := Op{Process: p, F: "create", Key: name, Node: node.ID, Invoke: e.History.Now()}
	r := e.Client.do(ctx, node, http.MethodPost, "/pd/create", map[string]string{"name": name})
	op.Return = e.History.Now()
	op.Outcome = writeOutcome(r)
	if op.Outcome == OK {
		var pd fsm.ProtectionDomain
		if err := json.Unmarshal(r.body, &pd); err != nil {
			op.Outcome, op.Error = Unknown, "decode: "+err.Error()
		}
		op.ID64 = pd.ID
	} else {
		op.Error = r.String()
	}
	e.History.Add(op)
}

func (w *TopologyWorkload) delete(ctx context.Context, e *Env, p int, node Node, name string, id int64) {
	op := Op{Process: p, F: "delete", Key: name, ID64: id, Node: node.ID, Invoke: e.History.Now()}
	r := e.Client.do(ctx, node, http.MethodDelete, fmt.Sprintf("/pd/%d", id), nil)
	op.Return = e.History.Now()
	op.Outcome = writeOutcome(r)
	if op.Outcome != OK {
		op.Error = r.String()
	}
	e.History.Add(op)
}

// list records a list of the workload's PDs (as "id:name") and returns it.
func (w *TopologyWorkload) list(ctx context.Context, e *Env, p int, node Node) Op {
	op := Op{Process: p, F: "list", Node: node.ID, Invoke: e.History.Now()}
	r := e.Client.do(ctx, node, http.MethodGet, "/pd/list", nil)
	op.Return = e.History.Now()
	op.Outcome = readOutcome(r)
	if op.Outcome == OK {
		var pds []fsm.ProtectionDomain
		if err := json.Unmarshal(r.body, &pds); err != nil {
			op.Outcome, op.Error = Fail, "decode: "+err.Error()
		}
		op.List = []string{}
		for _, pd := range pds {
			if strings.HasPrefix(pd.Name, topologyPrefix) {
				op.List = append(op.List, fmt.Sprintf("%d:%s", pd.ID, pd.Name))
			}
		}
	} else {
		op.Error = r.String()
	}
	return e.History.Add(op)
}

func idOf(list Op, name string) (int64, bool) {
	if list.Outcome != OK {
		return 0, false
	}
	for _, s := range list.List {
		id, n, _ := strings.Cut(s, ":")
		if n == name {
			v, err := strconv.ParseInt(id, 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// Final implements Workload: one list after recovery, retried until it answers.
func (w *TopologyWorkload) Final(ctx context.Context, e *Env) error {
	rng := rand.New(rand.NewSource(1))
	p := e.finalProcess()
	for w.list(ctx, e, p, e.randomNode(rng)).Outcome != OK {
		if ctx.Err() != nil {
			return fmt.Errorf("topology final list: %w", ctx.Err())
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// Check implements Workload.
func (w *TopologyWorkload) Check(ops []Op, _ string, _ time.Duration) []CheckResult {
	return []CheckResult{CheckTopology(ops)}
}

// CheckTopology checks a topology history: in every list a name appears once and an id keeps
// its name; a PD whose create was acknowledged is in every list invoked after that create
// returned, unless a delete of it was invoked before the list returned; a PD whose delete was
// acknowledged is in no list invoked after the delete returned.
func CheckTopology(ops []Op) CheckResult {
	res := CheckResult{Name: "topology (unique names, acknowledged creates and deletes stick)"}
	var lists, creates, deletes []Op
	for _, op := range ops {
		switch {
		case op.Process == NemesisProcess:
		case op.F == "list" && op.Outcome == OK:
			lists = append(lists, op)
		case op.F == "create" && op.Outcome == OK:
			creates = append(creates, op)
		case op.F == "delete" && op.Outcome != Fail:
			deletes = append(deletes, op)
		}
	}
	bad := func(format string, args ...any) {
		if len(res.Details) < 50 {
			res.Details = append(res.Details, fmt.Sprintf(format, args...))
		}
	}
	names := map[int64]string{}
	listed := make([]map[int64]bool, len(lists)) // list -> ids it contains
	containing := map[int64][]int{}              // id -> lists that contain it
	violations := 0
	for li, l := range lists {
		seen := map[string]string{}
		listed[li] = map[int64]bool{}
		for _, s := range l.List {
			idStr, name, _ := strings.Cut(s, ":")
			if other, dup := seen[name]; dup {
				violations++
				bad("name %s listed twice (%s and %s) in %s", name, other, s, l)
			}
			seen[name] = s
			id, _ := strconv.ParseInt(idStr, 10, 64)
			if prev, ok := names[id]; ok && prev != name {
				violations++
				bad("PD %d was %s and is now %s in %s", id, prev, name, l)
			}
			names[id] = name
			listed[li][id] = true
			containing[id] = append(containing[id], li)
		}
	}
	// The earliest invocation of a delete of each id (any outcome but a certain failure), and
	// the earliest return of an acknowledged one.
	firstDelete, firstAcked := map[int64]int64{}, map[int64]Op{}
	for _, d := range deletes {
		if t, ok := firstDelete[d.ID64]; !ok || d.Invoke < t {
			firstDelete[d.ID64] = d.Invoke
		}
		if a, ok := firstAcked[d.ID64]; d.Outcome == OK && (!ok || d.Return < a.Return) {
			firstAcked[d.ID64] = d
		}
	}
	for _, c := range creates {
		del, deleted := firstDelete[c.ID64]
		for li, l := range lists {
			if l.Invoke <= c.Return || listed[li][c.ID64] || (deleted && del < l.Return) {
				continue
			}
			violations++
			bad("acknowledged create lost: %s is missing from %s", c, l)
		}
	}
	for id, d := range firstAcked {
		for _, li := range containing[id] {
			if l := lists[li]; l.Invoke > d.Return {
				violations++
				bad("acknowledged delete undone: %s, yet PD %d is in %s", d, id, l)
			}
		}
	}
	res.Valid = violations == 0
	res.Summary = fmt.Sprintf("%d lists, %d acknowledged creates, %d deletes checked: %d violations",
		len(lists), len(creates), len(deletes), violations)
	return res
}
