package mdm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/layout"
)

// The rebuild planner runs on the leader. Every rebuild_interval (and at once when a report
// arrives or an operator starts a pool's rebuild) it looks at the volumes whose layouts have
// exclusions and, per volume, either begins a rebuild with a first batch of at most
// rebuild_batch_chunks eligible chunks, or advances the active one to its next batch once
// every source SDS of the batch reported its copies durable. The FSM holds the orders
// (fsm/rebuild.go); the planner holds only the SDSs' reports and run statistics, in memory:
// SDSs repeat a Done report until the layout moves on, so a new leader learns them again and
// the orders survive a leader change.

// Rebuild states of a pool (api.RebuildStatus.State).
const (
	RebuildIdle       = "idle"
	RebuildRebuilding = "rebuilding"
	RebuildWaiting    = "waiting"
	RebuildCancelled  = "cancelled"
)

// rebuildStore is what the planner needs from the replica; *Node implements it.
type rebuildStore interface {
	Read(fn func(r *fsm.Reader) error) error
	Propose(ctx context.Context, requestID string, c fsm.Command) (any, error)
}

// batchKey names one batch of one rebuild: the rebuild's epoch and the batch's end.
type batchKey struct{ volume, epoch, ordered int64 }

// rebuildRun is one pool's re-protection as this leader saw it: from the first round that
// found degraded chunks until the round that found none.
type rebuildRun struct {
	started, finished time.Time
	chunksDone        int64 // pending chunks of the batches completed in this run
	bytesDone         int64 // reported bytes of the batches completed in this run
	inProgress        int64 // reported bytes of the batches being copied, at the last look
}

// rebuildPlanner decides rebuild orders; one per MDM, active while it leads.
type rebuildPlanner struct {
	store rebuildStore
	cfg   RebuildSettings
	log   hclog.Logger
	kick  chan struct{}
	now   func() time.Time

	mu      sync.Mutex
	term    uint64
	reports map[batchKey]map[int64]api.RebuildReport // batch -> source SDS -> its latest report
	runs    map[int64]*rebuildRun                    // pool -> current or last run
	// Counters for /metrics, per pool, over this leadership.
	chunksTotal map[int64]int64
	bytesTotal  map[int64]int64
	// balanced is per pool what rebalance found balanced (rebalance.go); only rounds touch it.
	balanced map[int64]balanceMemo
	// quiet: the last round found every pool fully protected with nothing to copy or move.
	// quietAt is the applied index it read, while that holds (0 otherwise): a round over the
	// same state would find the same, so the loop skips rounds until the state moves or a
	// report or request wakes it.
	quiet   bool
	quietAt uint64
}

func newRebuildPlanner(store rebuildStore, cfg RebuildSettings, log hclog.Logger) *rebuildPlanner {
	p := &rebuildPlanner{store: store, cfg: cfg, log: log, kick: make(chan struct{}, 1), now: time.Now}
	p.reset(0)
	return p
}

// reset forgets everything learned in memory: a new leadership learns it again.
func (p *rebuildPlanner) reset(term uint64) {
	p.term = term
	p.reports = map[batchKey]map[int64]api.RebuildReport{}
	p.runs = map[int64]*rebuildRun{}
	p.chunksTotal = map[int64]int64{}
	p.bytesTotal = map[int64]int64{}
	p.balanced = map[int64]balanceMemo{}
	p.quiet, p.quietAt = false, 0
}

// due tells whether a round is needed at applied index idx: always when woken by a report or a
// request, else unless the last round was quiet at the same index.
func (p *rebuildPlanner) due(idx uint64, kicked bool) bool {
	return kicked || p.quietAt == 0 || idx != p.quietAt
}

// after records how the round that read index idx ended.
func (p *rebuildPlanner) after(idx uint64, err error) {
	p.quietAt = 0
	if err == nil && p.quiet {
		p.quietAt = idx
	}
}

// wake asks for a round now.
func (p *rebuildPlanner) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// record keeps an SDS's report (the newest per source and batch) and wakes the planner.
func (p *rebuildPlanner) record(rep api.RebuildReport) {
	k := batchKey{rep.VolumeID, rep.Epoch, rep.Ordered}
	p.mu.Lock()
	m := p.reports[k]
	if m == nil {
		m = map[int64]api.RebuildReport{}
		p.reports[k] = m
	}
	// A Done report stays done: a late progress report of the same batch does not undo it.
	if old, ok := m[rep.SDSID]; !ok || !old.Done || rep.Done {
		m[rep.SDSID] = rep
	}
	p.mu.Unlock()
	if rep.Done {
		p.wake()
	}
}

// validateReport refuses a malformed report before it reaches the planner.
func validateReport(rep api.RebuildReport) error {
	if err := firstErr(required("sds_id", rep.SDSID), required("volume_id", rep.VolumeID),
		required("epoch", rep.Epoch), required("ordered", rep.Ordered)); err != nil {
		return err
	}
	if rep.Chunks < 0 || rep.Total < 0 || rep.Bytes < 0 {
		return &fsm.Error{Kind: fsm.KindInvalid, Message: fmt.Sprintf("chunks (%d), total (%d) and bytes (%d) must not be negative", rep.Chunks, rep.Total, rep.Bytes)}
	}
	return nil
}

// volumeScan is what one pass over a volume's chunks found.
type volumeScan struct {
	volumeID, poolID int64
	chunks           int64
	degraded         int64 // one full copy on an SDS that is up (a pending target is not a full copy)
	unavailable      int64 // no full copy on an SDS that is up
	rb               layout.Rebuild
	active           bool
	pending          int64          // chunks of the active batch still being copied
	sources          map[int64]bool // primaries of those chunks: who must report
	eligible         int64          // chunks the next batch would order (at most the batch size)
	next             int64          // end of the next batch: just after its last eligible chunk
}

// scanVolume makes one pass over l's chunks. With batch > 0 it also finds the next batch: for
// a volume without an active rebuild, the chunks a rebuild beginning now (at l.Epoch+1) would
// give a pending target; with one, the chunks from its Ordered on that it would give one if
// its batch were extended to the end. Either way the source (primary) must be up.
func scanVolume(l *layout.Layout, up map[int64]bool, batch int64) volumeScan {
	s := volumeScan{volumeID: l.VolumeID, chunks: l.Chunks(), sources: map[int64]bool{}}
	s.rb, s.active = l.ActiveRebuild()
	var hyp *layout.Layout
	from := int64(0)
	if batch > 0 {
		h := *l
		h.Rebuilds = slices.Clone(l.Rebuilds)
		if s.active {
			for i := range h.Rebuilds {
				if h.Rebuilds[i].Epoch == s.rb.Epoch {
					h.Rebuilds[i].Ordered = s.chunks
				}
			}
			from = s.rb.Ordered
		} else {
			h.Rebuilds = append(h.Rebuilds, layout.Rebuild{Epoch: l.Epoch + 1, Done: 0, Ordered: s.chunks})
		}
		hyp = &h
	}
	s.next = from
	for c := range s.chunks {
		ids, pending := l.ReplicaSet(c)
		full := ids
		if pending { // the pending target is the last id
			full = ids[:len(ids)-1]
		}
		avail := 0
		for _, id := range full {
			if up[id] {
				avail++
			}
		}
		switch {
		case avail == 0:
			s.unavailable++
		case len(full) < layout.Copies:
			s.degraded++
		}
		if s.active && pending && c >= s.rb.Done && c < s.rb.Ordered {
			s.pending++
			s.sources[ids[0]] = true
		}
		// Only a chunk standing with one replica can be given a target (the rebuild record
		// is the last step of the replay), so the second replay is for those alone.
		if hyp != nil && c >= from && s.eligible < batch && len(ids) == 1 {
			if hids, hp := hyp.ReplicaSet(c); hp && up[hids[0]] {
				s.eligible++
				s.next = c + 1
			}
		}
	}
	return s
}

// poolScan is one pool's volumes, scanned.
type poolScan struct {
	pool    fsm.Pool
	paused  bool
	volumes []volumeScan
	epochs  map[int64]int64 // every volume of the pool with a layout -> its layout epoch
}

func (ps *poolScan) degraded() (n int64) {
	for _, v := range ps.volumes {
		n += v.degraded
	}
	return n
}

func (ps *poolScan) unavailable() (n int64) {
	for _, v := range ps.volumes {
		n += v.unavailable
	}
	return n
}

func (ps *poolScan) anyActive() bool {
	for _, v := range ps.volumes {
		if v.active {
			return true
		}
	}
	return false
}

func (ps *poolScan) anyEligible() bool {
	for _, v := range ps.volumes {
		if v.eligible > 0 {
			return true
		}
	}
	return false
}

// upSDSs maps every SDS id to whether it is up.
func upSDSs(r *fsm.Reader) (map[int64]bool, error) {
	sdss, err := r.SDSs()
	if err != nil {
		return nil, err
	}
	up := make(map[int64]bool, len(sdss))
	for _, s := range sdss {
		up[s.ID] = s.State == fsm.SDSUp
	}
	return up, nil
}

// scanPools scans the volumes with exclusions of the given pools (all pools when ids is nil).
// Layouts are read inside the read transaction and scanned after it, so the database is not
// held for the chunk pass.
func scanPools(store rebuildStore, ids []int64, batch int64) ([]poolScan, error) {
	type item struct {
		pool int
		l    layout.Layout
	}
	var out []poolScan
	var items []item
	var up map[int64]bool
	err := store.Read(func(r *fsm.Reader) error {
		var err error
		if up, err = upSDSs(r); err != nil {
			return err
		}
		var pools []fsm.Pool
		if ids == nil {
			if pools, err = r.Pools(); err != nil {
				return err
			}
		}
		for _, id := range ids {
			p, err := r.Pool(id)
			if err != nil {
				return err
			}
			pools = append(pools, p)
		}
		index := map[int64]int{}
		for _, p := range pools {
			paused, err := r.RebuildPaused(p.ID)
			if err != nil {
				return err
			}
			index[p.ID] = len(out)
			out = append(out, poolScan{pool: p, paused: paused, epochs: map[int64]int64{}})
		}
		for _, p := range pools {
			i := index[p.ID]
			layouts, err := r.PoolLayouts(p.ID)
			if err != nil {
				return err
			}
			for _, l := range layouts {
				out[i].epochs[l.VolumeID] = l.Epoch
				if _, active := l.ActiveRebuild(); len(l.Excluded) > 0 || active { // rebuilds follow exclusions; moves may be active without
					items = append(items, item{i, l})
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		s := scanVolume(&it.l, up, batch)
		s.poolID = out[it.pool].pool.ID
		out[it.pool].volumes = append(out[it.pool].volumes, s)
	}
	return out, nil
}

// round is one planning pass over every pool.
func (p *rebuildPlanner) round(ctx context.Context) error {
	pools, err := scanPools(p.store, nil, p.cfg.BatchChunks)
	if err != nil {
		return err
	}
	now := p.now()
	p.quiet = true
	for i := range pools {
		ps := &pools[i]
		p.observe(ps, now)
		p.prune(ps)
		if ps.paused || ps.degraded() > 0 || ps.unavailable() > 0 || ps.anyActive() || ps.anyEligible() {
			p.quiet = false
		}
		if ps.paused {
			continue
		}
		for _, v := range ps.volumes {
			if err := p.step(ctx, ps.pool.ID, v); err != nil {
				if ctx.Err() != nil {
					return err
				}
				p.log.Warn("rebuild step failed", "volume", v.volumeID, "error", err)
			}
		}
		// Rebalance only a pool with every chunk fully protected and nothing being copied.
		if p.cfg.Rebalance && ps.degraded() == 0 && ps.unavailable() == 0 && !ps.anyActive() {
			proposed, err := p.rebalance(ctx, ps.pool.ID)
			if proposed || err != nil {
				p.quiet = false
			}
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				p.log.Warn("rebalance step failed", "pool", ps.pool.ID, "error", err)
			}
		}
	}
	return nil
}

// step begins or advances one volume's rebuild.
func (p *rebuildPlanner) step(ctx context.Context, poolID int64, v volumeScan) error {
	if !v.active {
		if v.eligible == 0 {
			return nil
		}
		_, err := p.store.Propose(ctx, "", &fsm.BeginRebuild{VolumeID: v.volumeID, Ordered: v.next})
		if isKind(err, fsm.KindConflict) || isKind(err, fsm.KindPrecondition) {
			return nil // it moved (or was cancelled) since the scan: next round sees it
		}
		if err == nil {
			p.log.Info("rebuild begun", "volume", v.volumeID, "batch_end", v.next, "chunks", v.eligible)
		}
		return err
	}
	k := batchKey{v.volumeID, v.rb.Epoch, v.rb.Ordered}
	p.mu.Lock()
	reps := p.reports[k]
	done := true
	for src := range v.sources {
		if !reps[src].Done {
			done = false
		}
	}
	var bytes int64
	for _, r := range reps {
		bytes += r.Bytes
	}
	p.mu.Unlock()
	if !done {
		return nil
	}
	next := v.next
	if v.eligible == 0 {
		next = v.rb.Ordered // nothing left: the rebuild is complete
	}
	_, err := p.store.Propose(ctx, "", &fsm.AdvanceRebuild{VolumeID: v.volumeID, Epoch: v.rb.Epoch, Done: v.rb.Ordered, Ordered: next})
	if isKind(err, fsm.KindPrecondition) || isKind(err, fsm.KindNotFound) {
		return nil // it moved since the scan (cut short, cancelled): next round sees it
	}
	if err != nil {
		return err
	}
	p.log.Info("rebuild batch done", "volume", v.volumeID, "epoch", v.rb.Epoch, "batch", fmt.Sprintf("[%d, %d)", v.rb.Done, v.rb.Ordered),
		"chunks", v.pending, "bytes", bytes, "next_batch_end", next)
	p.mu.Lock()
	delete(p.reports, k)
	run := p.runs[poolID]
	if run == nil || !run.finished.IsZero() {
		run = &rebuildRun{started: p.now()}
		p.runs[poolID] = run
	}
	run.chunksDone += v.pending
	run.bytesDone += bytes
	p.chunksTotal[poolID] += v.pending
	p.bytesTotal[poolID] += bytes
	p.mu.Unlock()
	return nil
}

func isKind(err error, k fsm.Kind) bool {
	e, ok := fsm.AsError(err)
	return ok && e.Kind == k
}

// observe starts a pool's run when it is first seen with chunks to re-protect, and ends it
// when it has none left. The last run's figures stay until the next one starts.
func (p *rebuildPlanner) observe(ps *poolScan, now time.Time) {
	remaining := ps.degraded() + ps.unavailable()
	p.mu.Lock()
	defer p.mu.Unlock()
	run := p.runs[ps.pool.ID]
	switch {
	case remaining > 0 && (run == nil || !run.finished.IsZero()):
		run = &rebuildRun{started: now}
		p.runs[ps.pool.ID] = run
	case remaining == 0 && run != nil && run.finished.IsZero():
		run.finished, run.inProgress = now, 0
	}
	if run != nil && run.finished.IsZero() {
		run.inProgress = p.inProgressBytes(ps)
	}
}

// prune forgets reports of batches that are over: a report is kept while its batch is the
// active one, or while its rebuild is newer than the layout this replica has applied.
func (p *rebuildPlanner) prune(ps *poolScan) {
	active := map[int64]volumeScan{}
	for _, v := range ps.volumes {
		if v.active {
			active[v.volumeID] = v
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.reports {
		epoch, ok := ps.epochs[k.volume]
		if !ok {
			continue // another pool's volume, or one without a layout yet
		}
		v, isActive := active[k.volume]
		switch {
		case k.epoch > epoch:
		case isActive && k.epoch == v.rb.Epoch && k.ordered >= v.rb.Ordered:
		default:
			delete(p.reports, k)
		}
	}
}

// inProgressBytes sums the latest reports of the pool's active batches.
func (p *rebuildPlanner) inProgressBytes(ps *poolScan) (n int64) {
	for _, v := range ps.volumes {
		if !v.active {
			continue
		}
		for _, r := range p.reports[batchKey{v.volumeID, v.rb.Epoch, v.rb.Ordered}] {
			n += r.Bytes
		}
	}
	return n
}

// status answers GET /rebuild/status/{pool_id} from a fresh scan of the pool and the run
// statistics of this leader.
func (p *rebuildPlanner) status(poolID int64) (api.RebuildStatus, error) {
	pools, err := scanPools(p.store, []int64{poolID}, 1)
	if err != nil {
		return api.RebuildStatus{}, err
	}
	ps := &pools[0]
	var h PoolHealth
	if err := p.store.Read(func(r *fsm.Reader) (err error) { h, err = healthOf(r, poolID); return }); err != nil {
		return api.RebuildStatus{}, err
	}
	now := p.now()
	p.observe(ps, now)
	st := api.RebuildStatus{PoolID: poolID, Health: h.Health, DegradedChunks: ps.degraded(), ETASeconds: -1}
	remaining := ps.degraded() + ps.unavailable()
	switch {
	case ps.paused:
		st.State = RebuildCancelled
	case remaining == 0:
		st.State = RebuildIdle
	case ps.anyActive() || ps.anyEligible():
		st.State = RebuildRebuilding
	default:
		st.State = RebuildWaiting
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if run := p.runs[poolID]; run != nil {
		end := now
		if !run.finished.IsZero() {
			end = run.finished
		}
		st.StartedAt = run.started.UnixMilli()
		st.ChunksDone = run.chunksDone
		st.BytesDone = run.bytesDone + run.inProgress
		st.ChunksTotal = st.ChunksDone + remaining
		st.MBPerSec, st.ETASeconds = runRates(run, st.BytesDone, remaining, end)
	}
	if remaining == 0 {
		st.ETASeconds = 0
	}
	for _, v := range ps.volumes {
		vr := api.VolumeRebuild{VolumeID: v.volumeID, Chunks: v.chunks, DegradedChunks: v.degraded + v.unavailable}
		if v.active {
			vr.Epoch, vr.Done, vr.Ordered = v.rb.Epoch, v.rb.Done, v.rb.Ordered
		}
		st.Volumes = append(st.Volumes, vr)
	}
	sort.Slice(st.Volumes, func(i, j int) bool { return st.Volumes[i].VolumeID < st.Volumes[j].VolumeID })
	return st, nil
}

// runRates is the run's throughput (MiB/s over its time so far) and, while chunks remain, the
// time to re-protect them at the run's chunk rate (-1 before a batch completed).
func runRates(run *rebuildRun, bytes, remaining int64, end time.Time) (mbps, eta float64) {
	secs := end.Sub(run.started).Seconds()
	eta = -1
	if secs <= 0 {
		return 0, eta
	}
	mbps = float64(bytes) / (1 << 20) / secs
	if run.chunksDone > 0 && remaining > 0 {
		eta = float64(remaining) / (float64(run.chunksDone) / secs)
	}
	return mbps, eta
}

// RebuildProgress is the rebuild part of a pool's health answer.
type RebuildProgress struct {
	ChunksDone  int64   `json:"chunks_done"`
	ChunksTotal int64   `json:"chunks_total"`
	Percent     float64 `json:"percent"`
	MBPerSec    float64 `json:"mb_per_s"`
	ETASeconds  float64 `json:"eta_seconds"`
}

// progress is the pool's run as this leader counted it, with remaining chunks from health.
func (p *rebuildPlanner) progress(poolID, remaining int64) *RebuildProgress {
	p.mu.Lock()
	defer p.mu.Unlock()
	run := p.runs[poolID]
	if run == nil {
		return nil
	}
	end := p.now()
	if !run.finished.IsZero() {
		end = run.finished
	}
	pr := &RebuildProgress{ChunksDone: run.chunksDone, ChunksTotal: run.chunksDone + remaining}
	pr.MBPerSec, pr.ETASeconds = runRates(run, run.bytesDone+run.inProgress, remaining, end)
	if pr.ChunksTotal > 0 {
		pr.Percent = 100 * float64(pr.ChunksDone) / float64(pr.ChunksTotal)
	}
	if remaining == 0 {
		pr.Percent, pr.ETASeconds = 100, 0
	}
	return pr
}

// counters returns the per-pool counters for /metrics.
func (p *rebuildPlanner) counters() (chunks, bytes map[int64]int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	chunks, bytes = make(map[int64]int64, len(p.chunksTotal)), make(map[int64]int64, len(p.bytesTotal))
	for k, v := range p.chunksTotal {
		chunks[k] = v
	}
	for k, v := range p.bytesTotal {
		bytes[k] = v
	}
	return chunks, bytes
}

// rebuildLoop runs the planner while this node leads and its leadership is established (the
// barrier committed, so its state covers every earlier term).
func (n *Node) rebuildLoop() {
	defer n.wg.Done()
	p := n.rebuild
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	for {
		kicked := false
		select {
		case <-n.stop:
			return
		case <-tick.C:
		case <-p.kick:
			kicked = true
		}
		term := n.raft.CurrentTerm()
		if n.raft.State() != raft.Leader || n.readyTerm.Load() != term {
			continue
		}
		p.mu.Lock()
		if p.term != term {
			p.reset(term)
		}
		p.mu.Unlock()
		idx := n.store.AppliedIndex() // before the round's reads: an entry applied meanwhile makes the next round due
		if !p.due(idx, kicked) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		err := p.round(ctx)
		if err != nil && !errors.Is(err, ErrNotLeader) {
			n.log.Warn("rebuild round failed", "error", err)
		}
		p.after(idx, err)
		cancel()
	}
}

// RebuildReport records an SDS's rebuild report (leader only).
func (n *Node) RebuildReport(rep api.RebuildReport) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	n.rebuild.record(rep)
	return nil
}

// RebuildStatus answers GET /rebuild/status/{pool_id} (leader only).
func (n *Node) RebuildStatus(poolID int64) (api.RebuildStatus, error) {
	if !n.IsLeader() {
		return api.RebuildStatus{}, ErrNotLeader
	}
	return n.rebuild.status(poolID)
}

// RebuildProgress is the pool's run on this leader, nil elsewhere or when none was seen.
func (n *Node) RebuildProgress(poolID, remaining int64) *RebuildProgress {
	if !n.IsLeader() {
		return nil
	}
	return n.rebuild.progress(poolID, remaining)
}

// RebuildCounters are the per-pool rebuild counters of this leadership.
func (n *Node) RebuildCounters() (chunks, bytes map[int64]int64) { return n.rebuild.counters() }

// KickRebuild asks the planner for a round now.
func (n *Node) KickRebuild() { n.rebuild.wake() }
