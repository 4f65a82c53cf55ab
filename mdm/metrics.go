package mdm

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"pflex/fsm"
	"pflex/internal/promtext"
)

// Pool health values. Health follows the chunks of the pool's volumes as their layouts place
// them (DEGRADED: some chunk has one full copy; REBUILDING: and a rebuild is copying, not
// cancelled; FAILED: some chunk has no full copy on an SDS that is up), and how many SDSs of the
// protection domain are up (two copies need two). A rebuild target still being copied is not a
// full copy: its chunk stays degraded until its batch completes.
const (
	HealthOK         = "OK"
	HealthDegraded   = "DEGRADED"
	HealthRebuilding = "REBUILDING"
	HealthFailed     = "FAILED"
)

type PoolHealth struct {
	PoolID   int64  `json:"pool_id"`
	Name     string `json:"name"`
	Health   string `json:"health"`
	SDSTotal int    `json:"sds_total"`
	SDSUp    int    `json:"sds_up"`
	// Chunks of the pool's volumes with one full copy left, and with no full copy on an SDS
	// that is up.
	DegradedChunks    int64  `json:"degraded_chunks"`
	UnavailableChunks int64  `json:"unavailable_chunks"`
	Reason            string `json:"reason,omitempty"`
	// RebuildActive: some volume of the pool has a batch being copied.
	RebuildActive    bool `json:"rebuild_active,omitempty"`
	RebuildCancelled bool `json:"rebuild_cancelled,omitempty"`
	// Rebuild is the current (or last finished) run as the leader counted it; absent on a
	// follower's stale answer and before the leader saw any degraded chunk.
	Rebuild *RebuildProgress `json:"rebuild,omitempty"`
}

func (a *httpAPI) poolHealth(c *gin.Context, r *fsm.Reader) (any, error) {
	id, err := pathID(c, "id")
	if err != nil {
		return nil, err
	}
	h, err := healthOf(r, id)
	if err != nil {
		return nil, err
	}
	h.Rebuild = a.store.RebuildProgress(id, h.DegradedChunks+h.UnavailableChunks)
	return h, nil
}

func healthOf(r *fsm.Reader, id int64) (PoolHealth, error) {
	p, err := r.Pool(id)
	if err != nil {
		return PoolHealth{}, err
	}
	sdss, err := r.SDSs()
	if err != nil {
		return PoolHealth{}, err
	}
	h := PoolHealth{PoolID: p.ID, Name: p.Name}
	for _, s := range sdss {
		if s.ProtectionDomainID == p.PDID {
			h.SDSTotal++
			if s.State == fsm.SDSUp {
				h.SDSUp++
			}
		}
	}
	up := map[int64]bool{}
	for _, s := range sdss {
		up[s.ID] = s.State == fsm.SDSUp
	}
	if err := countChunks(r, p.ID, up, &h); err != nil {
		return PoolHealth{}, err
	}
	if h.RebuildCancelled, err = r.RebuildPaused(p.ID); err != nil {
		return PoolHealth{}, err
	}
	switch {
	case h.UnavailableChunks > 0:
		h.Health, h.Reason = HealthFailed, fmt.Sprintf("%d chunks have no full copy on an SDS that is up", h.UnavailableChunks)
	case h.DegradedChunks > 0 && h.RebuildActive && !h.RebuildCancelled:
		h.Health, h.Reason = HealthRebuilding, fmt.Sprintf("%d chunks have a single full copy; a rebuild is re-protecting them", h.DegradedChunks)
	case h.DegradedChunks > 0 && h.RebuildCancelled:
		h.Health, h.Reason = HealthDegraded, fmt.Sprintf("%d chunks have a single full copy; rebuild is cancelled (pflex rebuild start)", h.DegradedChunks)
	case h.DegradedChunks > 0:
		h.Health, h.Reason = HealthDegraded, fmt.Sprintf("%d chunks have a single full copy (an SDS went down; rebuild re-protects them)", h.DegradedChunks)
	case h.SDSUp >= 2:
		h.Health = HealthOK
	case h.SDSUp == 1:
		h.Health, h.Reason = HealthDegraded, "only one SDS of the protection domain is up: data would have a single copy"
	default:
		h.Health, h.Reason = HealthFailed, "no SDS of the protection domain is up"
	}
	return h, nil
}

// countChunks counts the degraded and unavailable chunks of the pool's volumes (scanVolume).
// Only layouts with exclusions can have degraded chunks.
func countChunks(r *fsm.Reader, poolID int64, up map[int64]bool, h *PoolHealth) error {
	layouts, err := r.PoolLayouts(poolID)
	if err != nil {
		return err
	}
	for i := range layouts {
		l := &layouts[i]
		if len(l.Excluded) == 0 {
			continue // every SDS that went down or failed is excluded: all chunks have two copies
		}
		s := scanVolume(l, up, 0)
		h.DegradedChunks += s.degraded
		h.UnavailableChunks += s.unavailable
		h.RebuildActive = h.RebuildActive || s.active
	}
	return nil
}

type PoolMetrics struct {
	fsm.Pool
	Health                 string  `json:"health"`
	FreeThickGB            int64   `json:"free_thick_gb"`
	OverProvisioningRatio  float64 `json:"over_provisioning_ratio"`
	SDSUp                  int     `json:"sds_up"`
	SDSTotal               int     `json:"sds_total"`
	SDSRawCapacityGB       int64   `json:"sds_raw_capacity_gb"`
	UsableCapacityTwoCopGB int64   `json:"usable_capacity_two_copies_gb"`
}

func poolMetrics(c *gin.Context, r *fsm.Reader) (any, error) {
	id, err := pathID(c, "id")
	if err != nil {
		return nil, err
	}
	p, err := r.Pool(id)
	if err != nil {
		return nil, err
	}
	h, err := healthOf(r, id)
	if err != nil {
		return nil, err
	}
	sdss, err := r.SDSs()
	if err != nil {
		return nil, err
	}
	m := PoolMetrics{Pool: p, Health: h.Health, FreeThickGB: p.TotalCapacityGB - p.ThickReservedGB, SDSUp: h.SDSUp, SDSTotal: h.SDSTotal}
	for _, s := range sdss {
		if s.ProtectionDomainID == p.PDID && s.State == fsm.SDSUp {
			m.SDSRawCapacityGB += s.TotalCapacityGB
		}
	}
	m.UsableCapacityTwoCopGB = m.SDSRawCapacityGB / 2
	if p.TotalCapacityGB > 0 {
		m.OverProvisioningRatio = float64(p.ProvisionedGB) / float64(p.TotalCapacityGB)
	}
	return m, nil
}

func sdsMetrics(c *gin.Context, r *fsm.Reader) (any, error) {
	id, err := pathID(c, "id")
	if err != nil {
		return nil, err
	}
	s, err := r.SDS(id)
	if err != nil {
		return nil, err
	}
	return gin.H{"sds": s, "state": s.State, "total_capacity_gb": s.TotalCapacityGB, "device_count": len(s.Devices)}, nil
}

func volumeMetrics(c *gin.Context, r *fsm.Reader) (any, error) {
	id, err := pathID(c, "id")
	if err != nil {
		return nil, err
	}
	v, err := r.Volume(id)
	if err != nil {
		return nil, err
	}
	return gin.H{"volume": v, "size_gb": v.SizeGB, "mapped_sdcs": len(v.Mappings), "map_generation": v.MapGeneration}, nil
}

func sdcMetrics(c *gin.Context, r *fsm.Reader) (any, error) {
	id, err := pathID(c, "id")
	if err != nil {
		return nil, err
	}
	s, err := r.SDC(id)
	if err != nil {
		return nil, err
	}
	vols, err := r.Volumes()
	if err != nil {
		return nil, err
	}
	mapped := []int64{}
	var gb int64
	for _, v := range vols {
		for _, m := range v.Mappings {
			if m.SDCID == id {
				mapped = append(mapped, v.ID)
				gb += v.SizeGB
			}
		}
	}
	return gin.H{"sdc": s, "mapped_volumes": mapped, "mapped_capacity_gb": gb}, nil
}

// TimelineEvent is one dated change derived from the objects' timestamps.
type TimelineEvent struct {
	Time  int64  `json:"time"`
	Kind  string `json:"kind"`
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Event string `json:"event"`
}

// timeline lists the newest changes the state records (creations, mappings, SDS state changes).
func timeline(c *gin.Context, r *fsm.Reader) (any, error) {
	limit := int64(100)
	if err := queryInt(c, "limit", &limit); err != nil {
		return nil, err
	}
	var ev []TimelineEvent
	pds, err := r.PDs()
	if err != nil {
		return nil, err
	}
	for _, p := range pds {
		ev = append(ev, TimelineEvent{p.CreatedAt, "pd", p.ID, p.Name, "created"})
	}
	pools, err := r.Pools()
	if err != nil {
		return nil, err
	}
	for _, p := range pools {
		ev = append(ev, TimelineEvent{p.CreatedAt, "pool", p.ID, p.Name, "created"})
	}
	sdss, err := r.SDSs()
	if err != nil {
		return nil, err
	}
	for _, s := range sdss {
		ev = append(ev, TimelineEvent{s.CreatedAt, "sds", s.ID, s.Name, "added"})
		if s.StateChangedAt != s.CreatedAt {
			ev = append(ev, TimelineEvent{s.StateChangedAt, "sds", s.ID, s.Name, "state " + s.State})
		}
	}
	sdcs, err := r.SDCs()
	if err != nil {
		return nil, err
	}
	for _, s := range sdcs {
		ev = append(ev, TimelineEvent{s.CreatedAt, "sdc", s.ID, s.Name, "added"})
	}
	vols, err := r.Volumes()
	if err != nil {
		return nil, err
	}
	for _, v := range vols {
		ev = append(ev, TimelineEvent{v.CreatedAt, "volume", v.ID, v.Name, "created"})
		for _, m := range v.Mappings {
			ev = append(ev, TimelineEvent{m.CreatedAt, "volume", v.ID, v.Name, fmt.Sprintf("mapped to sdc %d (%s)", m.SDCID, m.AccessMode)})
		}
	}
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].Time > ev[j].Time })
	if limit > 0 && int64(len(ev)) > limit {
		ev = ev[:limit]
	}
	if ev == nil {
		ev = []TimelineEvent{}
	}
	return ev, nil
}

// httpMetrics counts requests by status for /metrics.
type httpMetrics struct {
	mu       sync.Mutex
	byStatus map[int]uint64
	nanos    atomic.Uint64
	count    atomic.Uint64
}

func newHTTPMetrics() *httpMetrics { return &httpMetrics{byStatus: map[int]uint64{}} }

func (m *httpMetrics) middleware(c *gin.Context) {
	start := time.Now()
	c.Next()
	m.nanos.Add(uint64(time.Since(start)))
	m.count.Add(1)
	m.mu.Lock()
	m.byStatus[c.Writer.Status()]++
	m.mu.Unlock()
}

// prometheus serves GET /metrics in Prometheus's text format (internal/promtext).
func (a *httpAPI) prometheus(c *gin.Context) {
	st := a.store.Status()
	p := promtext.ForHTTP(c.Writer)
	c.Status(http.StatusOK)
	node := []string{"node", st.NodeID}
	gauge := func(name, help string, v float64) { p.GaugeOf(name, help, v, node...) }
	isLeader := 0.0
	if st.State == "leader" {
		isLeader = 1
	}
	gauge("pflex_raft_is_leader", "1 if this MDM is the raft leader.", isLeader)
	gauge("pflex_raft_term", "Current raft term.", float64(st.Term))
	gauge("pflex_raft_commit_index", "Raft commit index.", float64(st.CommitIndex))
	gauge("pflex_raft_applied_index", "Raft applied index.", float64(st.AppliedIndex))
	gauge("pflex_raft_last_log_index", "Last index in the raft log.", float64(st.LastLogIndex))
	gauge("pflex_raft_peers", "Servers in the raft configuration.", float64(len(st.Peers)))
	var counts fsm.Counts
	if a.store.Read(func(r *fsm.Reader) error { var err error; counts, err = r.Counts(); return err }) == nil {
		p.Gauge("pflex_objects", "Objects in the MDM state.")
		for _, kv := range []struct {
			k string
			v int64
		}{{"protection_domains", counts.ProtectionDomains}, {"fault_sets", counts.FaultSets}, {"pools", counts.Pools},
			{"sds", counts.SDS}, {"sds_up", counts.SDSUp}, {"sdc", counts.SDC}, {"volumes", counts.Volumes}, {"mappings", counts.Mappings}} {
			p.Sample("pflex_objects", float64(kv.v), "node", st.NodeID, "kind", kv.k)
		}
	}
	a.rebuildMetrics(p, st.NodeID)
	p.Counter("pflex_http_requests_total", "Admin API requests by status.")
	a.metrics.mu.Lock()
	codes := make([]int, 0, len(a.metrics.byStatus))
	for code := range a.metrics.byStatus {
		codes = append(codes, code)
	}
	sort.Ints(codes)
	for _, code := range codes {
		p.Sample("pflex_http_requests_total", float64(a.metrics.byStatus[code]), "node", st.NodeID, "code", strconv.Itoa(code))
	}
	a.metrics.mu.Unlock()
	p.Summary("pflex_http_request_seconds", "Admin API request time.")
	p.Sample("pflex_http_request_seconds_sum", float64(a.metrics.nanos.Load())/1e9, node...)
	p.Sample("pflex_http_request_seconds_count", float64(a.metrics.count.Load()), node...)
}

// rebuildMetrics writes the rebuild counters of this leadership (zero on followers) and the
// degraded chunks of every pool as this replica's state places them.
func (a *httpAPI) rebuildMetrics(p *promtext.Writer, node string) {
	var healths []PoolHealth
	if a.store.Read(func(r *fsm.Reader) error {
		pools, err := r.Pools()
		if err != nil {
			return err
		}
		for _, p := range pools {
			h, err := healthOf(r, p.ID)
			if err != nil {
				return err
			}
			healths = append(healths, h)
		}
		return nil
	}) != nil {
		return
	}
	chunks, bytes := a.store.RebuildCounters()
	perPool := func(name string, v func(h PoolHealth) float64) {
		for _, h := range healths {
			p.Sample(name, v(h), "node", node, "pool_id", strconv.FormatInt(h.PoolID, 10), "pool", h.Name)
		}
	}
	p.Counter("pflex_rebuild_chunks_done_total", "Chunks re-protected by rebuilds this MDM ordered as leader.")
	perPool("pflex_rebuild_chunks_done_total", func(h PoolHealth) float64 { return float64(chunks[h.PoolID]) })
	p.Counter("pflex_rebuild_bytes_total", "Bytes the SDSs copied for rebuild batches this MDM completed as leader.")
	perPool("pflex_rebuild_bytes_total", func(h PoolHealth) float64 { return float64(bytes[h.PoolID]) })
	p.Gauge("pflex_pool_degraded_chunks", "Chunks with a single full copy.")
	perPool("pflex_pool_degraded_chunks", func(h PoolHealth) float64 { return float64(h.DegradedChunks) })
}
