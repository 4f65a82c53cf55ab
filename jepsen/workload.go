package jepsen

import (
	"context"
	"fmt"
	"math/rand"
	"time"

	"pflex/internal/api"
)

// Workload drives one kind of client traffic and knows how to check the history it produced.
type Workload interface {
	Name() string
	// Setup creates what the clients need (it may retry; it is not part of the history).
	Setup(ctx context.Context, e *Env) error
	// Client runs client process p until stop is done, recording every operation.
	Client(stop, ctx context.Context, e *Env, p int, rng *rand.Rand)
	// Final runs after recovery: reads that every acknowledged write must be visible to.
	Final(ctx context.Context, e *Env) error
	// Check checks the history (client operations only).
	Check(ops []Op, reportDir string, timeout time.Duration) []CheckResult
}

// Env is what workloads share during a run.
type Env struct {
	Nodes      []Node
	History    *History
	Client     *opClient   // one request per operation
	Admin      *api.Client // leader-following, retrying: setup and final reads only
	Options    Options
	Data       DataPathCluster // SDSs and the SDC's export; nil unless the workload needs them
	finalProcs int             // process ids at or above Options.Clients are final readers
}

func (e *Env) randomNode(rng *rand.Rand) Node { return e.Nodes[rng.Intn(len(e.Nodes))] }

// pause sleeps up to Options.OpInterval between a client's operations.
func (e *Env) pause(stop context.Context, rng *rand.Rand) {
	if d := e.Options.OpInterval; d > 0 {
		select {
		case <-stop.Done():
		case <-time.After(time.Duration(rng.Int63n(int64(d)) + 1)):
		}
	}
}

// finalProcess returns a process id for a final reader.
func (e *Env) finalProcess() int {
	p := e.Options.Clients + e.finalProcs
	e.finalProcs++
	return p
}

// CheckResult is one checker's verdict.
type CheckResult struct {
	Name  string `json:"name"`
	Valid bool   `json:"valid"`
	// Inconclusive: the checker gave up (porcupine timeout); not a violation, not a pass.
	Inconclusive bool     `json:"inconclusive,omitempty"`
	Summary      string   `json:"summary"`
	Details      []string `json:"details,omitempty"` // offending operations, one per line
	Files        []string `json:"files,omitempty"`   // report files (visualizations)
}

// NewWorkload returns the workload with the given name.
func NewWorkload(name string) (Workload, error) {
	switch name {
	case "labels":
		return &LabelsWorkload{}, nil
	case "topology":
		return &TopologyWorkload{}, nil
	case "block":
		return &BlockWorkload{}, nil
	}
	return nil, fmt.Errorf("jepsen: unknown workload %q (labels, topology, block)", name)
}

// Workloads lists the workload names.
func Workloads() []string { return []string{"labels", "topology", "block"} }

// needsDataPath reports whether a workload needs SDSs and an SDC.
func needsDataPath(w Workload) bool {
	d, ok := w.(interface{ needsDataPath() bool })
	return ok && d.needsDataPath()
}
