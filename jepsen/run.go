package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"pflex/internal/api"
)

// Options configure one run. Zero fields take the defaults of DefaultOptions.
type Options struct {
	Binary  string // pflex binary the MDMs run
	Backend string // local (processes on loopback), netns, docker; local unless set
	// Image is the docker backend's image (DefaultImage unless set); it is built from Binary
	// when missing, or always with RebuildImage.
	Image        string
	RebuildImage bool
	ReportDir    string        // where the history, logs and verdict go (created)
	Workload     string        // labels, topology
	Nemeses      []string      // leader-kill, kill, pause, rolling-restart; empty: no faults
	Time         time.Duration // how long clients run while faults are injected
	Recovery     time.Duration // clients keep running this long after every fault is healed
	Clients      int           // concurrent client processes
	Keys         int           // labels: keys (registers); topology: PD names
	OpTimeout    time.Duration // per-request timeout; a timed-out write is an unknown outcome
	OpInterval   time.Duration // a client waits up to this between operations
	// NemesisMin, NemesisMax bound the quiet time between faults.
	NemesisMin, NemesisMax time.Duration
	CheckTimeout           time.Duration // porcupine gives up after this (inconclusive)
	Seed                   int64         // 0: from the clock
	// StaleReads makes the labels workload read with ?stale=1 (any replica's local state): a
	// deliberately broken setup the checker must catch.
	StaleReads bool
	// IOTimeout is the SDC's io_timeout (block workload); empty keeps its default (30 s).
	IOTimeout string
	// KeepData keeps the nodes' data directories after a valid run (always kept otherwise).
	KeepData bool
	// Raft timing of the MDMs; empty keeps their defaults.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout string
	Log                                                   io.Writer // progress lines; nil: discarded
}

// DefaultOptions are the defaults of the CLI.
func DefaultOptions() Options {
	return Options{Workload: "labels", Nemeses: []string{"leader-kill"}, Time: 60 * time.Second,
		Recovery: 10 * time.Second, Clients: 10, Keys: 5, OpTimeout: 3 * time.Second,
		OpInterval: 30 * time.Millisecond, NemesisMin: 3 * time.Second, NemesisMax: 6 * time.Second,
		CheckTimeout: 2 * time.Minute}
}

func (o *Options) fill() {
	d := DefaultOptions()
	if o.Workload == "" {
		o.Workload = d.Workload
	}
	if o.Backend == "" {
		o.Backend = "local"
	}
	orDefault := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	orDefault(&o.Time, d.Time)
	orDefault(&o.Recovery, d.Recovery)
	orDefault(&o.OpTimeout, d.OpTimeout)
	orDefault(&o.OpInterval, d.OpInterval)
	orDefault(&o.NemesisMin, d.NemesisMin)
	orDefault(&o.NemesisMax, d.NemesisMax)
	orDefault(&o.CheckTimeout, d.CheckTimeout)
	if o.Clients == 0 {
		o.Clients = d.Clients
	}
	if o.Keys == 0 {
		o.Keys = d.Keys
	}
	if o.Seed == 0 {
		o.Seed = time.Now().UnixNano()
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Validate names the first bad field.
func (o *Options) Validate() error {
	if o.ReportDir == "" {
		return errors.New("jepsen: ReportDir is required")
	}
	if _, err := NewWorkload(o.Workload); err != nil {
		return err
	}
	if !slices.Contains(Backends(), o.Backend) {
		return fmt.Errorf("jepsen: unknown backend %q (%s)", o.Backend, strings.Join(Backends(), ", "))
	}
	for _, n := range o.Nemeses {
		if _, err := NewNemesis(n); err != nil {
			return err
		}
		if strings.HasPrefix(n, "partition") && o.Backend == "local" {
			return fmt.Errorf("jepsen: nemesis %s needs a backend that can partition (netns, docker); local processes share one loopback", n)
		}
		if slices.Contains(dataPartitions, n) && o.Backend != "netns" && o.Backend != "docker" {
			return fmt.Errorf("jepsen: nemesis %s cuts SDSs and the SDC apart, which only the netns and docker backends can", n)
		}
	}
	if o.NemesisMax < o.NemesisMin {
		return fmt.Errorf("jepsen: nemesis interval max %s is below min %s", o.NemesisMax, o.NemesisMin)
	}
	if o.Clients < 1 || o.Keys < 1 {
		return errors.New("jepsen: clients and keys must be at least 1")
	}
	return nil
}

// OpCounts counts client operations by outcome.
type OpCounts struct {
	OK      int `json:"ok"`
	Fail    int `json:"fail"`
	Unknown int `json:"info"`
}

// Verdict is the result of a run.
type Verdict struct {
	Valid     bool           `json:"valid"`
	Workload  string         `json:"workload"`
	Backend   string         `json:"backend"`
	Nemeses   []string       `json:"nemeses"`
	Seed      int64          `json:"seed"`
	ReportDir string         `json:"report_dir"`
	Duration  string         `json:"duration"`
	Ops       OpCounts       `json:"ops"`
	ByF       map[string]int `json:"ok_by_f"` // acknowledged operations per function
	Faults    map[string]int `json:"faults"`  // faults injected per nemesis
	Checks    []CheckResult  `json:"checks"`
}

// FaultCount is the number of faults injected.
func (v Verdict) FaultCount() int {
	n := 0
	for _, c := range v.Faults {
		n += c
	}
	return n
}

// Summary renders the verdict for a terminal.
func (v Verdict) Summary() string {
	var b strings.Builder
	status := "VALID"
	if !v.Valid {
		status = "INVALID"
	}
	if v.Duration == "" { // a re-check of a stored history
		fmt.Fprintf(&b, "jepsen %s re-check: %s\n", v.Workload, status)
	} else {
		fmt.Fprintf(&b, "jepsen %s / %s on %s: %s (seed %d, %s)\n", v.Workload, strings.Join(v.Nemeses, ","), v.Backend, status, v.Seed, v.Duration)
	}
	if v.Duration == "" {
		v.ByF, v.Faults = nil, nil
	} else {
		v.summarizeRun(&b)
	}
	v.summarizeChecks(&b)
	return b.String()
}

func (v Verdict) summarizeRun(b *strings.Builder) {
	fmt.Fprintf(b, "  operations: %d ok, %d fail, %d unknown", v.Ops.OK, v.Ops.Fail, v.Ops.Unknown)
	var fs []string
	for f, n := range v.ByF {
		fs = append(fs, fmt.Sprintf("%s %d", f, n))
	}
	sort.Strings(fs)
	if len(fs) > 0 {
		fmt.Fprintf(b, " (ok: %s)", strings.Join(fs, ", "))
	}
	var faults []string
	for n, c := range v.Faults {
		faults = append(faults, fmt.Sprintf("%s %d", n, c))
	}
	sort.Strings(faults)
	fmt.Fprintf(b, "\n  faults: %d (%s)\n", v.FaultCount(), strings.Join(faults, ", "))
}

func (v Verdict) summarizeChecks(b *strings.Builder) {
	for _, c := range v.Checks {
		mark := "ok  "
		switch {
		case !c.Valid && !c.Inconclusive:
			mark = "FAIL"
		case c.Inconclusive:
			mark = "??  "
		}
		fmt.Fprintf(b, "  [%s] %s: %s\n", mark, c.Name, c.Summary)
		for _, d := range c.Details[:min(len(c.Details), 40)] {
			if !c.Valid {
				fmt.Fprintf(b, "         %s\n", d)
			}
		}
		for _, f := range c.Files {
			fmt.Fprintf(b, "         see %s\n", f)
		}
	}
	fmt.Fprintf(b, "  report: %s\n", v.ReportDir)
}

// Run runs one test: a three-MDM cluster of local processes, Options.Clients clients of the
// workload for Options.Time while the nemeses inject faults, then a recovery period with every
// fault healed, final reads, and the checkers. The error is for a harness that could not run
// (no binary, no leader at start, setup failed); violations are in the Verdict.
func Run(ctx context.Context, o Options) (Verdict, error) {
	o.fill()
	v := Verdict{Workload: o.Workload, Backend: o.Backend, Nemeses: o.Nemeses, Seed: o.Seed, ReportDir: o.ReportDir}
	if err := o.Validate(); err != nil {
		return v, err
	}
	began := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Log, "%s jepsen: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	if err := os.MkdirAll(o.ReportDir, 0o755); err != nil {
		return v, err
	}
	w, _ := NewWorkload(o.Workload)
	var nemeses []Nemesis
	for _, name := range o.Nemeses {
		n, _ := NewNemesis(name)
		nemeses = append(nemeses, n)
	}
	h, err := NewHistory(filepath.Join(o.ReportDir, "history.jsonl"))
	if err != nil {
		return v, err
	}
	defer h.Close()

	var exitsMu sync.Mutex
	var exits []string
	nodesDir := filepath.Join(o.ReportDir, "nodes")
	c, err := newCluster(o, LocalConfig{Binary: o.Binary, Dir: nodesDir, DataPath: needsDataPath(w), IOTimeout: o.IOTimeout,
		HeartbeatTimeout: o.HeartbeatTimeout, ElectionTimeout: o.ElectionTimeout, LeaderLeaseTimeout: o.LeaderLeaseTimeout,
		OnExit: func(node string, err error) {
			exitsMu.Lock()
			exits = append(exits, fmt.Sprintf("%s exited by itself at %.3fs: %v", node, float64(h.Now())/1e9, err))
			exitsMu.Unlock()
		}})
	if err != nil {
		return v, err
	}
	defer c.Close()
	logf("starting %d MDMs on %s (logs in %s)", len(c.Nodes()), c.Describe(), nodesDir)
	if err := c.StartAll(ctx); err != nil {
		return v, err
	}
	if _, ok := waitLeader(ctx, c, 60*time.Second); !ok {
		return v, errors.New("jepsen: no MDM leader within 60s of starting the cluster; see the node logs")
	}
	var endpoints []string
	for _, n := range c.Nodes() {
		endpoints = append(endpoints, n.API)
	}
	admin, err := api.NewClient(endpoints, api.WithRetryDeadline(60*time.Second), api.WithToken(c.AdminToken()))
	if err != nil {
		return v, err
	}
	env := &Env{Nodes: c.Nodes(), History: h, Client: newOpClient(c.AdminToken(), o.OpTimeout), Admin: admin, Options: o}
	if needsDataPath(w) {
		logf("starting %d SDSs and an SDC; pool, volume %s mapped to the SDC", 3, dataPathVolume)
		if err := c.StartDataPath(ctx, admin); err != nil {
			return v, err
		}
		env.Data = c
	}
	if err := w.Setup(ctx, env); err != nil {
		return v, err
	}

	monCtx, stopMon := context.WithCancel(ctx)
	mon, err := NewStatusMonitor(c, h, 100*time.Millisecond, filepath.Join(o.ReportDir, "status.jsonl"))
	if err != nil {
		stopMon()
		return v, err
	}
	var monDone sync.WaitGroup
	monDone.Add(1)
	go func() { defer monDone.Done(); mon.Run(monCtx) }()
	defer func() { stopMon(); monDone.Wait(); mon.Close() }()

	// Chaos: clients and nemeses for o.Time.
	logf("%s workload, %d clients, nemeses %v, %s", o.Workload, o.Clients, o.Nemeses, o.Time)
	clientsStop, stopClients := context.WithCancel(ctx)
	var clients sync.WaitGroup
	for p := 0; p < o.Clients; p++ {
		clients.Add(1)
		rng := rand.New(rand.NewSource(o.Seed + int64(p) + 1))
		go func() { defer clients.Done(); w.Client(clientsStop, ctx, env, p, rng) }()
	}
	rec := &NemesisRecorder{h: h, faults: map[string]int{}}
	chaos, stopChaos := context.WithTimeout(ctx, o.Time)
	runNemeses(chaos, c, nemeses, o.NemesisMin, o.NemesisMax, rand.New(rand.NewSource(o.Seed)), rec, logf)
	<-chaos.Done()
	stopChaos()

	// Recovery: heal everything, clients keep going.
	healAt := h.Now()
	logf("healing: every node resumed and started; recovery for %s", o.Recovery)
	if err := c.Heal(ctx); err != nil {
		logf("heal: %v", err)
	}
	h.Add(Op{Process: NemesisProcess, F: "heal", Key: "recovery", Invoke: healAt, Return: h.Now(), Outcome: OK})
	sleep(ctx, o.Recovery)
	stopClients()
	clients.Wait()
	if _, ok := waitLeader(ctx, c, 60*time.Second); !ok {
		logf("no leader 60s after healing")
	}
	finalCtx, cancelFinal := context.WithTimeout(ctx, 60*time.Second)
	finalErr := w.Final(finalCtx, env)
	cancelFinal()

	// Checks.
	logf("checking")
	stopMon()
	monDone.Wait()
	ops := h.Ops()
	var clientOps []Op
	recovered := 0
	v.ByF = map[string]int{}
	for _, op := range ops {
		if op.Process == NemesisProcess {
			continue
		}
		clientOps = append(clientOps, op)
		switch op.Outcome {
		case OK:
			v.Ops.OK++
			v.ByF[op.F]++
			if op.Invoke > healAt {
				recovered++
			}
		case Fail:
			v.Ops.Fail++
		default:
			v.Ops.Unknown++
		}
	}
	v.Faults = rec.Faults()
	v.Checks = append(v.Checks, w.Check(clientOps, o.ReportDir, o.CheckTimeout)...)
	v.Checks = append(v.Checks, mon.Check())
	v.Checks = append(v.Checks, CheckConverged(ctx, c, 60*time.Second))
	live := CheckResult{Name: "progress after recovery", Valid: recovered > 0 && finalErr == nil,
		Summary: fmt.Sprintf("%d operations acknowledged after every fault was healed", recovered)}
	if finalErr != nil {
		live.Details = []string{finalErr.Error()}
	}
	v.Checks = append(v.Checks, live)
	exitsMu.Lock()
	crash := CheckResult{Name: "no MDM exited by itself", Valid: len(exits) == 0,
		Summary: fmt.Sprintf("%d unexpected exits", len(exits)), Details: append([]string(nil), exits...)}
	exitsMu.Unlock()
	v.Checks = append(v.Checks, crash)

	v.Valid = true
	for _, ch := range v.Checks {
		v.Valid = v.Valid && ch.Valid && !ch.Inconclusive
	}
	v.Duration = time.Since(began).Round(time.Second).String()
	c.Close()
	if v.Valid && !o.KeepData {
		entries, _ := os.ReadDir(nodesDir)
		for _, e := range entries {
			os.RemoveAll(filepath.Join(nodesDir, e.Name(), "data"))
		}
	}
	return v, writeVerdict(v)
}

// runCluster is what Run needs of a backend.
type runCluster interface {
	DataPathCluster
	StartAll(ctx context.Context) error
	StartDataPath(ctx context.Context, admin *api.Client) error
	Describe() string
}

// Backends lists the cluster backends.
func Backends() []string { return []string{"local", "netns", "docker"} }

// newCluster makes a cluster of o.Backend.
func newCluster(o Options, cfg LocalConfig) (runCluster, error) {
	switch o.Backend {
	case "local", "":
		return NewLocalCluster(cfg)
	case "netns":
		return NewNetnsCluster(cfg)
	case "docker":
		return NewDockerCluster(DockerConfig{LocalConfig: cfg, Image: o.Image, RebuildImage: o.RebuildImage})
	}
	return nil, fmt.Errorf("jepsen: unknown backend %q (%s)", o.Backend, strings.Join(Backends(), ", "))
}

func writeVerdict(v Verdict) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(v.ReportDir, "verdict.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(v.ReportDir, "summary.txt"), []byte(v.Summary()), 0o644)
}
