package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
)

// A drill repeats one fault against a cluster someone else runs and measures, per repetition,
// how long clients notice it:
//   - new leader: from the kill until an MDM other than the killed one says it leads in a
//     higher term (GET /cluster/status?stale=1 on every MDM, every 20 ms);
//   - first write: from the kill until a label PUT (one request, 1 s timeout, round robin over
//     the MDMs that were not killed) is acknowledged;
//   - NBD stall: a writer sends a 4 KiB NBD write every 10 ms to the export; the stall is the
//     longest gap between two acknowledgements that overlaps the fault window (kill to
//     recovered + 2 s), or from the last acknowledgement to the window's end if none came.

// DrillOptions configure `pflex drill`.
type DrillOptions struct {
	Fault      string        // leader-kill, sds-kill, partition
	Reps       int           // repetitions
	MDMs       []string      // MDM API addresses
	Token      string        // admin token
	NBD        string        // nbd://host:port/export; empty: no IO stall measurement
	VolumeID   int64         // labels are written on this volume; 0: the first volume
	Down       time.Duration // how long the target stays killed before it is started again
	Interval   time.Duration // quiet time between repetitions
	Timeout    time.Duration // a repetition gives up waiting for recovery after this
	KillCmd    string        // sh -c template; {id} {addr} {pid}; empty: SIGKILL the local process
	StartCmd   string        // sh -c template; empty: restart the local process as it was
	Log        io.Writer
	HTTPClient *http.Client
	// Cluster is a cluster the drill started itself (-backend); the fault is done through it
	// (Kill/Start, Partition/Heal, KillSDS/StartSDS) instead of commands or /proc.
	Cluster runCluster
}

// DrillRep is one repetition's measurements (negative: not measured or never happened).
type DrillRep struct {
	Target     string
	NewLeader  time.Duration
	FirstWrite time.Duration
	NBDStall   time.Duration
	Err        string
}

// drillTarget is what one repetition hits and how to undo it.
type drillTarget struct {
	id, addr string
	kill     func() error
	start    func() error
}

// DrillMain is `pflex drill FAULT -n N`.
func DrillMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: pflex drill leader-kill|sds-kill|partition -n N [flags]")
		return 2
	}
	o := DrillOptions{Fault: args[0], Log: stderr}
	fs := flag.NewFlagSet("pflex drill "+o.Fault, flag.ContinueOnError)
	fs.SetOutput(stderr)
	mdms := os.Getenv("PFLEX_MDM")
	if mdms == "" {
		mdms = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"
	}
	fs.IntVar(&o.Reps, "n", 5, "repetitions")
	mdmFlag := fs.String("mdm", mdms, "MDM API addresses, comma separated (env PFLEX_MDM)")
	fs.StringVar(&o.Token, "token", os.Getenv("PFLEX_TOKEN"), "admin bearer token (env PFLEX_TOKEN)")
	fs.StringVar(&o.NBD, "nbd", "", "nbd://HOST:PORT/EXPORT of a mapped volume: measure the NBD IO stall (the drill writes to its first 4 KiB!)")
	fs.Int64Var(&o.VolumeID, "volume-id", 0, "volume whose label pflex-drill the write probe sets (default: the first volume)")
	fs.DurationVar(&o.Down, "down", 3*time.Second, "how long the target stays down before it is started again")
	fs.DurationVar(&o.Interval, "interval", 5*time.Second, "quiet time between repetitions")
	fs.DurationVar(&o.Timeout, "timeout", 60*time.Second, "give up on a repetition's recovery after this")
	fs.StringVar(&o.KillCmd, "kill-cmd", "", "shell command that kills (or, for partition, isolates) the target; {id} {addr} {pid} are replaced (default: SIGKILL the local process found in /proc)")
	fs.StringVar(&o.StartCmd, "start-cmd", "", "shell command that starts (or reconnects) the target; {id} {addr} {pid} are replaced (default: start the local process again as it was)")
	backend := fs.String("backend", "", "start a cluster for the drill and stop it after: local, netns, docker (default: the running cluster at -mdm; partition without -kill-cmd: netns)")
	bin := fs.String("bin", "", "with -backend: the pflex binary (default: this executable)")
	dir := fs.String("dir", "", "with -backend: where the cluster's configs and logs go (default: a temporary directory, removed after)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	o.MDMs = strings.Split(*mdmFlag, ",")
	if *backend == "" && o.Fault == "partition" && o.KillCmd == "" && o.StartCmd == "" {
		*backend = "netns"
	}
	if *backend != "" {
		stop, err := startDrillCluster(ctx, &o, *backend, *bin, *dir)
		if err != nil {
			fmt.Fprintln(stderr, "pflex drill:", err)
			return 2
		}
		defer stop()
	}
	reps, err := RunDrill(ctx, o, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "pflex drill:", err)
		return 2
	}
	fmt.Fprint(stdout, DrillSummary(reps))
	for _, r := range reps {
		if r.Err != "" {
			return 1
		}
	}
	return 0
}

// RunDrill runs o.Reps repetitions, printing each to out as it ends.
func RunDrill(ctx context.Context, o DrillOptions, out io.Writer) ([]DrillRep, error) {
	switch o.Fault {
	case "leader-kill", "sds-kill":
	case "partition":
		if o.Cluster == nil && (o.KillCmd == "" || o.StartCmd == "") {
			return nil, errors.New("partition needs -kill-cmd and -start-cmd that isolate and reconnect {id} (e.g. docker network disconnect/connect); local processes share one loopback")
		}
	default:
		return nil, fmt.Errorf("unknown drill %q (leader-kill, sds-kill, partition)", o.Fault)
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	}
	admin, err := api.NewClient(o.MDMs, api.WithToken(o.Token), api.WithRetryDeadline(30*time.Second))
	if err != nil {
		return nil, err
	}
	if o.VolumeID == 0 {
		var vols []fsm.Volume
		if err := admin.Get(ctx, "/vol/list", nil, &vols); err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		if len(vols) == 0 {
			return nil, errors.New("the write probe sets a label on a volume and there is none: create one or pass -volume-id")
		}
		o.VolumeID = vols[0].ID
	}
	d := &drill{o: o, admin: admin}
	fmt.Fprintf(out, "drill %s x%d against %s (probe: label pflex-drill on volume %d", o.Fault, o.Reps, strings.Join(o.MDMs, ","), o.VolumeID)
	if o.NBD != "" {
		fmt.Fprintf(out, ", NBD writes to %s", o.NBD)
	}
	fmt.Fprintln(out, ")")
	fmt.Fprintf(out, "%-4s %-8s %12s %12s %12s\n", "rep", "target", "new-leader", "first-write", "nbd-stall")
	var reps []DrillRep
	for i := 0; i < o.Reps && ctx.Err() == nil; i++ {
		if i > 0 {
			sleep(ctx, o.Interval)
		}
		r := d.rep(ctx)
		reps = append(reps, r)
		fmt.Fprintf(out, "%-4d %-8s %12s %12s %12s", i+1, r.Target, fmtDur(r.NewLeader), fmtDur(r.FirstWrite), fmtDur(r.NBDStall))
		if r.Err != "" {
			fmt.Fprintf(out, "  error: %s", r.Err)
		}
		fmt.Fprintln(out)
	}
	return reps, nil
}

func fmtDur(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return d.Round(time.Millisecond).String()
}

// DrillSummary renders median, p99 and worst of each measurement.
func DrillSummary(reps []DrillRep) string {
	var b strings.Builder
	for _, m := range []struct {
		name string
		get  func(DrillRep) time.Duration
	}{{"new-leader", func(r DrillRep) time.Duration { return r.NewLeader }},
		{"first-write", func(r DrillRep) time.Duration { return r.FirstWrite }},
		{"nbd-stall", func(r DrillRep) time.Duration { return r.NBDStall }}} {
		var ds []time.Duration
		for _, r := range reps {
			if v := m.get(r); v >= 0 {
				ds = append(ds, v)
			}
		}
		if len(ds) == 0 {
			continue
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		p99 := ds[min(len(ds)-1, (len(ds)*99+99)/100-1)]
		fmt.Fprintf(&b, "%-12s n=%d  median %s  p99 %s  worst %s\n", m.name, len(ds), fmtDur(ds[len(ds)/2]), fmtDur(p99), fmtDur(ds[len(ds)-1]))
	}
	return b.String()
}

type drill struct {
	o     DrillOptions
	admin *api.Client
}

// status asks one MDM for its own view (one request, 500 ms).
func (d *drill) status(ctx context.Context, addr string) (*api.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/cluster/status?stale=1", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.o.Token)
	resp, err := d.o.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %d", addr, resp.StatusCode)
	}
	var st api.ClusterStatus
	return &st, json.NewDecoder(resp.Body).Decode(&st)
}

// leader returns the address and status of the MDM that says it leads with the highest term.
func (d *drill) leader(ctx context.Context, skip string) (string, *api.ClusterStatus) {
	var best string
	var bestSt *api.ClusterStatus
	for _, a := range d.o.MDMs {
		if a == skip {
			continue
		}
		st, err := d.status(ctx, a)
		if err == nil && st.State == "leader" && (bestSt == nil || st.Term > bestSt.Term) {
			best, bestSt = a, st
		}
	}
	return best, bestSt
}

// healthy: a leader, and every MDM answers with the same leader.
func (d *drill) healthy(ctx context.Context) bool {
	addr, st := d.leader(ctx, "")
	if addr == "" {
		return false
	}
	for _, a := range d.o.MDMs {
		s, err := d.status(ctx, a)
		if err != nil || s.LeaderID != st.NodeID {
			return false
		}
	}
	return true
}

func (d *drill) target(ctx context.Context) (*drillTarget, uint64, error) {
	var t drillTarget
	var term uint64
	var match func(string) bool
	role := "mdm"
	switch d.o.Fault {
	case "leader-kill", "partition":
		addr, st := d.leader(ctx, "")
		if addr == "" {
			return nil, 0, errors.New("no MDM says it leads")
		}
		t.id, t.addr, term = st.NodeID, addr, st.Term
		match = func(cfg string) bool { return sameAddr(hclString(cfg, "api_addr"), addr) }
	case "sds-kill":
		var ms []api.Member
		if err := d.admin.Get(ctx, "/cluster/members", nil, &ms); err != nil {
			return nil, 0, err
		}
		var up []api.Member
		for _, m := range ms {
			if strings.HasPrefix(m.ID, "sds") && m.State == "up" {
				up = append(up, m)
			}
		}
		if len(up) == 0 {
			return nil, 0, errors.New("no SDS is up")
		}
		m := up[rand.Intn(len(up))]
		t.id, t.addr = m.ID, m.APIAddr
		role = "sds"
		match = func(cfg string) bool { return hclString(cfg, "id") == m.ID }
	}
	if c := d.o.Cluster; c != nil {
		return d.clusterTarget(c, &t, role), term, nil
	}
	if d.o.KillCmd != "" && d.o.StartCmd != "" {
		run := func(tmpl string) func() error {
			return func() error {
				cmd := strings.NewReplacer("{id}", t.id, "{addr}", t.addr, "{pid}", "").Replace(tmpl)
				out, err := exec.CommandContext(ctx, "sh", "-c", cmd).CombinedOutput()
				if err != nil {
					return fmt.Errorf("%s: %v: %s", cmd, err, strings.TrimSpace(string(out)))
				}
				return nil
			}
		}
		t.kill, t.start = run(d.o.KillCmd), run(d.o.StartCmd)
		return &t, term, nil
	}
	p, err := FindLocalProcess(role, match)
	if err != nil {
		return nil, 0, fmt.Errorf("%s (%s): %w; pass -kill-cmd and -start-cmd for processes that are not local", t.id, t.addr, err)
	}
	t.kill, t.start = p.Kill, p.Restart
	return &t, term, nil
}

// clusterTarget does the fault through the drill's own cluster.
func (d *drill) clusterTarget(c runCluster, t *drillTarget, role string) *drillTarget {
	if role == "sds" {
		for i := 0; i < c.SDSCount(); i++ {
			if c.SDSID(i) == t.id {
				t.kill = func() error { return c.KillSDS(i) }
				t.start = func() error { return c.StartSDS(i) }
			}
		}
		return t
	}
	node := -1
	var rest []int
	for i, n := range c.Nodes() {
		if n.ID == t.id {
			node = i
		} else {
			rest = append(rest, i)
		}
	}
	if node < 0 {
		t.kill = func() error { return fmt.Errorf("%s is not a node of the cluster", t.id) }
		t.start = func() error { return nil }
		return t
	}
	if d.o.Fault == "partition" {
		p, ok := c.(Partitioner)
		if !ok {
			t.kill = func() error { return fmt.Errorf("%s cannot partition", c.Describe()) }
			t.start = func() error { return nil }
			return t
		}
		t.kill = func() error { return p.Partition([][]int{{node}, rest}) }
		t.start = func() error { return c.Heal(context.Background()) }
		return t
	}
	t.kill = func() error { return c.Kill(node) }
	t.start = func() error { return c.Start(context.Background(), node) }
	return t
}

// startDrillCluster starts a cluster of the backend for the drill and points o at it (MDMs,
// token, and for sds-kill the NBD export); stop closes it.
func startDrillCluster(ctx context.Context, o *DrillOptions, backend, bin, dir string) (stop func(), err error) {
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	keep := dir != ""
	if !keep {
		if dir, err = os.MkdirTemp("", "pflex-drill-"); err != nil {
			return nil, err
		}
	}
	dataPath := o.Fault == "sds-kill"
	c, err := newCluster(Options{Backend: backend}, LocalConfig{Binary: bin, Dir: dir, DataPath: dataPath})
	if err != nil {
		return nil, err
	}
	stop = func() {
		c.Close()
		if !keep {
			os.RemoveAll(dir)
		}
	}
	fail := func(err error) (func(), error) {
		stop()
		return nil, fmt.Errorf("%w (cluster logs were in %s; -dir keeps them)", err, dir)
	}
	fmt.Fprintf(o.Log, "pflex drill: starting 3 MDMs on %s\n", c.Describe())
	if err := c.StartAll(ctx); err != nil {
		return fail(err)
	}
	if _, ok := waitLeader(ctx, c, 60*time.Second); !ok {
		return fail(errors.New("no MDM leader within 60s"))
	}
	o.MDMs, o.Token, o.Cluster = nil, c.AdminToken(), c
	for _, n := range c.Nodes() {
		o.MDMs = append(o.MDMs, n.API)
	}
	admin, err := api.NewClient(o.MDMs, api.WithToken(o.Token), api.WithRetryDeadline(60*time.Second))
	if err != nil {
		return fail(err)
	}
	if dataPath {
		if err := c.StartDataPath(ctx, admin); err != nil {
			return fail(err)
		}
		if o.NBD == "" {
			addr, export := c.NBD()
			o.NBD = "nbd://" + addr + "/" + export
		}
		return stop, nil
	}
	var pd fsm.ProtectionDomain
	var pool fsm.Pool
	if err := admin.Post(ctx, "/pd/create", map[string]any{"name": "drill-pd"}, &pd); err != nil {
		return fail(fmt.Errorf("create pd: %w", err))
	}
	if err := admin.Post(ctx, "/pool/create", map[string]any{"name": "drill-pool", "pd_id": pd.ID,
		"protection_policy": "two_copies", "total_capacity_gb": 1024}, &pool); err != nil {
		return fail(fmt.Errorf("create pool: %w", err))
	}
	if err := admin.Post(ctx, "/vol/create", map[string]any{"name": "drill-vol", "size_gb": 8,
		"provisioning": "thin", "pool_id": pool.ID}, nil); err != nil {
		return fail(fmt.Errorf("create volume: %w", err))
	}
	return stop, nil
}

// rep runs one repetition.
func (d *drill) rep(ctx context.Context) DrillRep {
	r := DrillRep{NewLeader: -1, FirstWrite: -1, NBDStall: -1}
	if err := pollUntil(ctx, d.o.Timeout, func() bool { return d.healthy(ctx) }); err != nil {
		r.Err = "cluster not healthy before the fault"
		return r
	}
	t, term, err := d.target(ctx)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.Target = t.id
	var nbd *nbdProbe
	if d.o.NBD != "" {
		if nbd, err = startNBDProbe(ctx, d.o.NBD); err != nil {
			r.Err = "nbd: " + err.Error()
			return r
		}
		defer nbd.stop()
		time.Sleep(500 * time.Millisecond) // acknowledgements before the fault
	}
	killedAt := time.Now()
	if err := t.kill(); err != nil {
		r.Err = "kill: " + err.Error()
		return r
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if d.o.Fault == "sds-kill" {
			return
		}
		if pollUntilEvery(ctx, d.o.Timeout, 20*time.Millisecond, func() bool {
			_, st := d.leader(ctx, t.addr)
			return st != nil && st.Term > term && st.NodeID != t.id
		}) == nil {
			r.NewLeader = time.Since(killedAt)
		}
	}()
	go func() {
		defer wg.Done()
		if d.o.Fault == "sds-kill" {
			return // the MDMs are not touched
		}
		var alive []string
		for _, a := range d.o.MDMs {
			if a != t.addr {
				alive = append(alive, a)
			}
		}
		if at, ok := d.firstWrite(ctx, alive); ok {
			r.FirstWrite = at.Sub(killedAt)
		}
	}()
	sleep(ctx, d.o.Down)
	wg.Wait()
	if err := t.start(); err != nil {
		r.Err = "start: " + err.Error()
	}
	if err := pollUntil(ctx, d.o.Timeout, func() bool {
		return d.healthy(ctx) && (nbd == nil || nbd.ackedSince(time.Now().Add(-200*time.Millisecond)))
	}); err != nil && r.Err == "" {
		r.Err = "not recovered within " + d.o.Timeout.String()
	}
	if nbd != nil {
		sleep(ctx, 2*time.Second)
		r.NBDStall = nbd.stall(killedAt, time.Now())
	}
	return r
}

// firstWrite starts a write probe every 20 ms, round robin over addrs, each its own request
// with its own 1 s timeout, until one is acknowledged (or Timeout passes), and returns when
// the first acknowledgement came. Overlapping probes keep the measurement exact when a
// request hangs (a follower forwarding to a leader cut off by a partition) instead of
// being refused: a later request can succeed while an earlier one waits out its timeout.
func (d *drill) firstWrite(ctx context.Context, addrs []string) (time.Time, bool) {
	var probes sync.WaitGroup
	defer probes.Wait() // after cancel: the probes still in flight give up at once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	acked := make(chan time.Time, 1)
	deadline := time.After(d.o.Timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		probes.Add(1)
		go func() {
			defer probes.Done()
			if d.probeWrite(ctx, addrs[n%len(addrs)], n) {
				select {
				case acked <- time.Now():
				default:
				}
			}
		}()
		select {
		case at := <-acked:
			return at, true
		case <-deadline:
			return time.Time{}, false
		case <-ctx.Done():
			return time.Time{}, false
		case <-tick.C:
		}
	}
}

// probeWrite PUTs label pflex-drill through one MDM (which forwards to the leader).
func (d *drill) probeWrite(ctx context.Context, addr string, n int) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	body := strings.NewReader(fmt.Sprintf(`{"value":"drill-%d-%d"}`, time.Now().UnixNano(), n))
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, fmt.Sprintf("http://%s/vol/%d/labels/pflex-drill", addr, d.o.VolumeID), body)
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+d.o.Token)
	resp, err := d.o.HTTPClient.Do(req)
	if err != nil {
		time.Sleep(10 * time.Millisecond)
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		time.Sleep(10 * time.Millisecond)
	}
	return resp.StatusCode == http.StatusOK
}

// pollUntilEvery is pollUntil with a chosen period.
func pollUntilEvery(ctx context.Context, timeout, every time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return context.DeadlineExceeded
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
	return nil
}

// nbdProbe writes 4 KiB every 10 ms to block 0 of an export and notes every acknowledgement.
type nbdProbe struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	acks []time.Time
}

// parseNBDURI splits nbd://host:port/export.
func parseNBDURI(uri string) (addr, export string, err error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "nbd" || u.Host == "" {
		return "", "", fmt.Errorf("want nbd://HOST:PORT/EXPORT, got %q", uri)
	}
	addr = u.Host
	if u.Port() == "" {
		addr += ":10809"
	}
	return addr, strings.TrimPrefix(u.Path, "/"), nil
}

func startNBDProbe(ctx context.Context, uri string) (*nbdProbe, error) {
	addr, export, err := parseNBDURI(uri)
	if err != nil {
		return nil, err
	}
	conn, err := DialNBD(ctx, addr, export, 5*time.Second)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &nbdProbe{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, BlockSize)
		for ctx.Err() == nil {
			if conn == nil {
				if conn, err = DialNBD(ctx, addr, export, time.Second); err != nil {
					conn = nil
					sleep(ctx, 10*time.Millisecond)
					continue
				}
			}
			copy(buf, fmt.Sprintf("pflex drill %d", time.Now().UnixNano()))
			if err := conn.Write(0, buf, time.Now().Add(60*time.Second)); err != nil {
				conn.Close()
				conn = nil
				continue
			}
			p.mu.Lock()
			p.acks = append(p.acks, time.Now())
			p.mu.Unlock()
			sleep(ctx, 10*time.Millisecond)
		}
		if conn != nil {
			conn.Close()
		}
	}()
	return p, nil
}

func (p *nbdProbe) stop() { p.cancel(); <-p.done }

func (p *nbdProbe) ackedSince(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acks) > 0 && p.acks[len(p.acks)-1].After(t)
}

// stall is the longest gap between acknowledgements that overlaps [from, to].
func (p *nbdProbe) stall(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var worst time.Duration
	prev := time.Time{}
	for _, a := range p.acks {
		if !prev.IsZero() && a.After(from) && prev.Before(to) && a.Sub(prev) > worst {
			worst = a.Sub(prev)
		}
		prev = a
	}
	if !prev.IsZero() && to.Sub(prev) > worst {
		worst = to.Sub(prev)
	}
	return worst
}
