package sdc

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/sdc/nbd"
)

// Exporter keeps the NBD exports equal to the volumes the MDM maps to this SDC: it polls
// GET /sdc/{id}/volumes (every poll interval, at once on a leader change or when a token
// request says a volume is gone), exports a new mapping under its volume name, removes an
// unmapped one (disconnecting its NBD clients) and picks up size changes.
type Exporter struct {
	cfg     ExporterConfig
	log     hclog.Logger
	exports *nbd.ExportMap

	mu      sync.Mutex
	vols    map[int64]*Volume
	cached  map[int64]layout.Layout // loaded from the cache at start, used once per volume
	polls   int64
	lastErr string
	lastOK  time.Time

	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// ExporterConfig wires an Exporter.
type ExporterConfig struct {
	MDM   MDM
	Conns *SDSConns
	Cache *LayoutCache // optional
	// SDCID is this SDC's id, 0 until it is registered.
	SDCID func() int64
	// LeaderChanged returns a channel closed at the next leader change (optional).
	LeaderChanged func() <-chan struct{}
	// Removed is called after an export is removed, to disconnect its clients
	// (nbd.Server.ExportRemoved). Optional.
	Removed   func(name string)
	Poll      time.Duration
	IOTimeout time.Duration
	Logger    hclog.Logger
}

// NewExporter loads the layout cache and returns an Exporter with no exports; Start polls.
func NewExporter(cfg ExporterConfig) (*Exporter, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.IOTimeout <= 0 {
		cfg.IOTimeout = DefaultIOTimeout
	}
	e := &Exporter{
		cfg: cfg, log: cfg.Logger, exports: nbd.NewExportMap(),
		vols: map[int64]*Volume{}, cached: map[int64]layout.Layout{},
		kick: make(chan struct{}, 1), done: make(chan struct{}),
	}
	if cfg.Cache != nil {
		m, err := cfg.Cache.LoadAll()
		if err != nil {
			return nil, err
		}
		e.cached = m
		if len(m) > 0 {
			e.log.Info("layout cache loaded", "volumes", len(m))
		}
	}
	return e, nil
}

// Exports is the export set the NBD server serves.
func (e *Exporter) Exports() nbd.Exports { return e.exports }

// Start runs the poll loop until Close.
func (e *Exporter) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() {
		defer close(e.done)
		e.run(ctx)
	}()
}

// Kick asks for a poll now.
func (e *Exporter) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

func (e *Exporter) run(ctx context.Context) {
	for ctx.Err() == nil {
		e.Poll(ctx)
		var changed <-chan struct{}
		if e.cfg.LeaderChanged != nil {
			changed = e.cfg.LeaderChanged()
		}
		t := time.NewTimer(e.cfg.Poll)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-e.kick:
		case <-changed:
		}
		t.Stop()
	}
}

// Poll asks the MDM for the mapped volumes once and reconciles the exports with the answer.
func (e *Exporter) Poll(ctx context.Context) error {
	id := e.cfg.SDCID()
	if id == 0 {
		return nil // not registered yet
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := e.cfg.MDM.Volumes(ctx, id)
	e.mu.Lock()
	e.polls++
	if err != nil {
		e.lastErr = err.Error()
	} else {
		e.lastErr, e.lastOK = "", time.Now()
	}
	e.mu.Unlock()
	if err != nil {
		e.log.Debug("mapped volumes poll failed", "error", err)
		return err
	}
	e.reconcile(id, list)
	return nil
}

// reconcile makes the exports match list.
func (e *Exporter) reconcile(sdcID int64, list []api.MappedVolume) {
	want := make(map[int64]api.MappedVolume, len(list))
	for _, mv := range list {
		if mv.AccessMode == "" {
			mv.AccessMode = fsm.ReadWrite
		}
		want[mv.VolumeID] = mv
	}
	var gone []*Volume
	var added []api.MappedVolume
	e.mu.Lock()
	for id, v := range e.vols {
		mv, ok := want[id]
		_, lost := v.tokens.Current()
		// Unmapped, renamed, remapped with another access mode, this SDC registered again under
		// another id, or refused a token although mapped (unmapped and mapped again): start over.
		if !ok || mv.Name != v.name || mv.AccessMode != v.mode || v.sdcID != sdcID || lost {
			gone = append(gone, v)
			delete(e.vols, id)
			e.exports.Remove(v.name)
		}
	}
	for id, mv := range want {
		v, ok := e.vols[id]
		if !ok {
			var cached *layout.Layout
			if l, ok := e.cached[id]; ok {
				cached = &l
				delete(e.cached, id)
			}
			v = newVolume(mv, volumeOptions{
				MDM: e.cfg.MDM, Conns: e.cfg.Conns, Cache: e.cfg.Cache, Layout: cached, SDCID: sdcID,
				IOTimeout: e.cfg.IOTimeout, Logger: e.log, OnLost: e.Kick,
			})
			e.vols[id] = v
			e.exports.Add(mv.Name, exportDescription(mv), v)
			added = append(added, mv)
			continue
		}
		v.setSize(mv.SizeBytes)
		v.setLimits(mv.IOPSLimit, mv.BandwidthLimitMBps)
		if old := v.generation.Swap(mv.MapGeneration); old != mv.MapGeneration {
			// Remapped: tokens of the old generation are revoked; get one of the new at once.
			cur, _ := v.tokens.Current()
			v.tokens.Invalidate(cur)
		}
	}
	e.mu.Unlock()
	for _, v := range gone {
		e.log.Info("volume unmapped: export removed", "volume", v.name, "volume_id", v.id)
		if e.cfg.Removed != nil {
			e.cfg.Removed(v.name)
		}
		v.Close()
		e.cfg.Conns.Forget(v.id)
		if e.cfg.Cache != nil && want[v.id].VolumeID == 0 {
			if err := e.cfg.Cache.Delete(v.id); err != nil {
				e.log.Warn("layout cache delete failed", "error", err)
			}
		}
	}
	for _, mv := range added {
		e.log.Info("volume mapped: exported", "volume", mv.Name, "volume_id", mv.VolumeID,
			"size_bytes", mv.SizeBytes, "access_mode", mv.AccessMode)
	}
}

func exportDescription(mv api.MappedVolume) string {
	return fmt.Sprintf("pflex volume %d (%s)", mv.VolumeID, mv.AccessMode)
}

// Volume returns the exported volume with id.
func (e *Exporter) Volume(id int64) (*Volume, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.vols[id]
	return v, ok
}

// VolumeByName returns the exported volume called name.
func (e *Exporter) VolumeByName(name string) (*Volume, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, v := range e.vols {
		if v.name == name {
			return v, true
		}
	}
	return nil, false
}

// ExporterStatus is the exports part of GET /status.
type ExporterStatus struct {
	Polls       int64          `json:"volume_polls"`
	LastPollOK  time.Time      `json:"last_poll_ok,omitzero"`
	LastPollErr string         `json:"last_poll_error,omitempty"`
	Exports     []VolumeStatus `json:"exports"`
	SDSDials    int64          `json:"sds_dials"`
	// UnreachableSDS: SDS data addresses the probes lost; their IO goes through secondaries.
	UnreachableSDS []string `json:"unreachable_sds,omitempty"`
	// SharedMemory is the region write payloads share with SDSs on this host (nil: off).
	SharedMemory *SharedMemoryStatus `json:"shared_memory,omitempty"`
	CachedLayout int                 `json:"cached_layouts_unused"` // cache entries of volumes not (yet) mapped
}

// Status reports the exports.
func (e *Exporter) Status() ExporterStatus {
	e.mu.Lock()
	vols := make([]*Volume, 0, len(e.vols))
	for _, v := range e.vols {
		vols = append(vols, v)
	}
	st := ExporterStatus{Polls: e.polls, LastPollOK: e.lastOK, LastPollErr: e.lastErr, CachedLayout: len(e.cached)}
	e.mu.Unlock()
	st.Exports = make([]VolumeStatus, 0, len(vols))
	for _, v := range vols {
		st.Exports = append(st.Exports, v.Status())
	}
	sort.Slice(st.Exports, func(i, j int) bool { return st.Exports[i].Name < st.Exports[j].Name })
	st.SDSDials = e.cfg.Conns.Dials()
	if pr := e.cfg.Conns.reach; pr != nil {
		st.UnreachableSDS = pr.Unreachable()
	}
	st.SharedMemory = e.cfg.Conns.sharedMemoryStatus()
	return st
}

// Close stops polling and closes every volume (their exports stay in the map: the NBD server is
// being closed too).
func (e *Exporter) Close() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
	}
	e.mu.Lock()
	vols := e.vols
	e.vols = map[int64]*Volume{}
	e.mu.Unlock()
	for _, v := range vols {
		v.Close()
	}
}
