package mdm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"pflex/fsm"
	"pflex/internal/api"
)

func (a *httpAPI) routes(e *gin.Engine) {
	e.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	e.GET("/readyz", a.readyz)
	e.GET("/metrics", a.prometheus)
	e.GET("/", a.summary)
	// Go profiles for operators (admin token required when one is set).
	e.GET("/debug/pprof/*profile", gin.WrapF(pprofHandler))

	e.POST("/pd/create", a.write(func(c *gin.Context) (fsm.Command, error) {
		var cmd fsm.CreatePD
		return &cmd, bindBody(c, &cmd)
	}))
	e.GET("/pd/list", a.read(func(c *gin.Context, r *fsm.Reader) (any, error) { return r.PDs() }))
	e.GET("/pd/:id", a.read(byID("id", (*fsm.Reader).PD)))
	e.DELETE("/pd/:id", a.write(deleteByID("id", func(id int64) fsm.Command { return &fsm.DeletePD{ID: id} })))

	e.POST("/faultset/create", a.write(func(c *gin.Context) (fsm.Command, error) {
		var cmd fsm.CreateFaultSet
		return &cmd, bindBody(c, &cmd)
	}))
	e.GET("/faultset/list", a.read(func(c *gin.Context, r *fsm.Reader) (any, error) { return r.FaultSets() }))
	e.GET("/faultset/:id", a.read(byID("id", (*fsm.Reader).FaultSet)))
	e.DELETE("/faultset/:id", a.write(deleteByID("id", func(id int64) fsm.Command { return &fsm.DeleteFaultSet{ID: id} })))

	e.POST("/pool/create", a.write(func(c *gin.Context) (fsm.Command, error) {
		var cmd fsm.CreatePool
		return &cmd, bindBody(c, &cmd)
	}))
	e.GET("/pool/list", a.read(func(c *gin.Context, r *fsm.Reader) (any, error) { return r.Pools() }))
	e.GET("/pool/:id", a.read(byID("id", (*fsm.Reader).Pool)))
	e.GET("/pool/:id/health", a.read(a.poolHealth))
	e.DELETE("/pool/:id", a.write(deleteByID("id", func(id int64) fsm.Command { return &fsm.DeletePool{ID: id} })))

	e.POST("/sds/add", a.write(func(c *gin.Context) (fsm.Command, error) {
		var cmd fsm.AddSDS
		return &cmd, bindBody(c, &cmd)
	}))
	e.GET("/sds/list", a.read(func(c *gin.Context, r *fsm.Reader) (any, error) { return r.SDSs() }))
	e.GET("/sds/:id", a.read(byID("id", (*fsm.Reader).SDS)))
	e.POST("/sds/:id/fail", a.write(deleteByID("id", func(id int64) fsm.Command { return &fsm.SetSDSState{ID: id, State: fsm.SDSFailed} })))
	e.POST("/sds/:id/recover", a.write(deleteByID("id", func(id int64) fsm.Command { return &fsm.SetSDSState{ID: id, State: fsm.SDSUp} })))
	// Instant maintenance mode: out of the replica sets without a rebuild; exit re-syncs the delta.
	e.POST("/sds/:id/maintenance/enter", a.write(deleteByID("id", func(id int64) fsm.Command { return &fsm.SetMaintenance{SDSID: id, Enter: true} })))
	e.POST("/sds/:id/maintenance/exit", a.write(deleteByID("id", func(id int64) fsm.Command { return &fsm.SetMaintenance{SDSID: id, Enter: false} })))
	e.DELETE("/sds/:id", a.write(deleteByID("id", func(id int64) fsm.Command { return &fsm.RemoveSDS{ID: id} })))

	e.POST("/sdc/add", a.write(func(c *gin.Context) (fsm.Command, error) {
		var cmd fsm.AddSDC
		return &cmd, bindBody(c, &cmd)
	}))
	e.GET("/sdc/list", a.read(func(c *gin.Context, r *fsm.Reader) (any, error) { return r.SDCs() }))
	e.GET("/sdc/:id", a.read(byID("id", (*fsm.Reader).SDC)))
	e.GET("/sdc/:id/volumes", a.read(sdcVolumes))
	e.DELETE("/sdc/:id", a.write(deleteByID("id", func(id int64) fsm.Command { return &fsm.RemoveSDC{ID: id} })))

	e.POST("/vol/create", a.write(func(c *gin.Context) (fsm.Command, error) {
		var cmd fsm.CreateVolume
		return &cmd, bindBody(c, &cmd)
	}))
	e.POST("/vol/map", a.write(func(c *gin.Context) (fsm.Command, error) {
		var cmd fsm.MapVolume
		if err := bind(c, &cmd); err != nil {
			return nil, err
		}
		if m, ok := c.GetQuery("access_mode"); ok {
			cmd.AccessMode = m
		}
		return &cmd, firstErr(queryInt(c, "volume_id", &cmd.VolumeID), queryInt(c, "sdc_id", &cmd.SDCID),
			queryInt(c, "iops_limit", &cmd.IOPSLimit), queryInt(c, "bandwidth_limit_mbps", &cmd.BandwidthLimitMBps),
			required("volume_id", cmd.VolumeID), required("sdc_id", cmd.SDCID))
	}))
	e.POST("/vol/unmap", a.write(func(c *gin.Context) (fsm.Command, error) {
		var cmd fsm.UnmapVolume
		if err := bind(c, &cmd); err != nil {
			return nil, err
		}
		return &cmd, firstErr(queryInt(c, "volume_id", &cmd.VolumeID), queryInt(c, "sdc_id", &cmd.SDCID),
			required("volume_id", cmd.VolumeID), required("sdc_id", cmd.SDCID))
	}))
	// Change a mapping's IOPS and bandwidth limits in place; an omitted limit is kept.
	e.POST("/vol/limits", a.write(func(c *gin.Context) (fsm.Command, error) {
		var cmd fsm.SetMappingLimits
		if err := bind(c, &cmd); err != nil {
			return nil, err
		}
		return &cmd, firstErr(queryInt(c, "volume_id", &cmd.VolumeID), queryInt(c, "sdc_id", &cmd.SDCID),
			queryIntPtr(c, "iops_limit", &cmd.IOPSLimit), queryIntPtr(c, "bandwidth_limit_mbps", &cmd.BandwidthLimitMBps),
			required("volume_id", cmd.VolumeID), required("sdc_id", cmd.SDCID))
	}))
	e.POST("/vol/extend", a.write(func(c *gin.Context) (fsm.Command, error) {
		var cmd fsm.ExtendVolume
		if err := bind(c, &cmd); err != nil {
			return nil, err
		}
		return &cmd, firstErr(queryInt(c, "volume_id", &cmd.VolumeID), queryInt(c, "size_gb", &cmd.SizeGB),
			required("volume_id", cmd.VolumeID))
	}))
	e.GET("/vol/list", a.read(func(c *gin.Context, r *fsm.Reader) (any, error) { return r.Volumes() }))
	e.GET("/vol/:id", a.read(byID("id", (*fsm.Reader).Volume)))
	e.DELETE("/vol/:id", a.write(deleteByID("id", func(id int64) fsm.Command { return &fsm.DeleteVolume{ID: id} })))
	e.PUT("/vol/:id/labels/:key", a.write(func(c *gin.Context) (fsm.Command, error) {
		id, err := pathID(c, "id")
		if err != nil {
			return nil, err
		}
		var req api.LabelRequest
		if err := bindBody(c, &req); err != nil {
			return nil, err
		}
		return &fsm.SetLabel{VolumeID: id, Key: c.Param("key"), Value: req.Value, Expect: req.Expect}, nil
	}))
	e.GET("/vol/:id/labels/:key", a.read(func(c *gin.Context, r *fsm.Reader) (any, error) {
		id, err := pathID(c, "id")
		if err != nil {
			return nil, err
		}
		return r.Label(id, c.Param("key"))
	}))

	e.POST("/rebuild/start/:pool_id", a.leaderOnly(a.setRebuildPaused(false)))
	e.POST("/rebuild/cancel/:pool_id", a.leaderOnly(a.setRebuildPaused(true)))
	e.GET("/rebuild/status/:pool_id", a.leaderOnly(func(c *gin.Context) (any, error) {
		id, err := pathID(c, "pool_id")
		if err != nil {
			return nil, err
		}
		return a.store.RebuildStatus(id)
	}))
	e.POST("/rebuild/report", a.leaderOnly(func(c *gin.Context) (any, error) {
		var rep api.RebuildReport
		if err := bindBody(c, &rep); err != nil {
			return nil, err
		}
		if err := validateReport(rep); err != nil {
			return nil, err
		}
		if err := a.store.RebuildReport(rep); err != nil {
			return nil, err
		}
		return gin.H{"accepted": true}, nil
	}))

	e.GET("/metrics/pool/:id", a.read(poolMetrics))
	e.GET("/metrics/sds/:id", a.read(sdsMetrics))
	e.GET("/metrics/volume/:id", a.read(volumeMetrics))
	e.GET("/metrics/sdc/:id", a.read(sdcMetrics))
	e.GET("/metrics/timeline", a.read(timeline))

	e.GET("/cluster/status", a.clusterStatus)
	e.GET("/cluster/peers", func(c *gin.Context) {
		if !a.barrier(c) {
			return
		}
		a.respond(c, a.store.Peers())
	})
	e.GET("/cluster/members", a.leaderView(func(c *gin.Context) (any, error) { return a.store.Members() }))

	e.POST("/discovery/register", a.leaderOnly(func(c *gin.Context) (any, error) {
		var cmd fsm.RegisterNode
		if err := bindBody(c, &cmd); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), requestTimeout)
		defer cancel()
		v, err := a.store.Propose(ctx, c.GetHeader(api.HeaderRequestID), &cmd)
		if err != nil {
			return nil, err
		}
		reg, ok := v.(fsm.Registration)
		if !ok { // a retried request answered from the dedupe record
			if err := remarshal(v, &reg); err != nil {
				return nil, err
			}
		}
		// Registering is also a sign of life, and grants an SDS its lease.
		hb, err := a.store.Heartbeat(api.HeartbeatRequest{ID: cmd.ID})
		if err != nil {
			return nil, err
		}
		id, addr := a.store.Leader()
		resp := api.RegisterResponse{Registration: reg, LeaderID: id, LeaderAPI: addr, LeaseMs: hb.LeaseMs}
		if reg.SDSID != 0 {
			if resp.IO, err = a.store.IOState(); err != nil {
				return nil, err
			}
		}
		return resp, nil
	}))
	e.POST("/heartbeat", a.leaderOnly(func(c *gin.Context) (any, error) {
		var req api.HeartbeatRequest
		if err := bindBody(c, &req); err != nil {
			return nil, err
		}
		if req.ID == "" {
			return nil, &fsm.Error{Kind: fsm.KindInvalid, Message: "id is required"}
		}
		return a.store.Heartbeat(req)
	}))

	e.POST("/token/issue", a.leaderOnly(func(c *gin.Context) (any, error) {
		var req api.TokenRequest
		if err := bindBody(c, &req); err != nil {
			return nil, err
		}
		if err := firstErr(required("volume_id", req.VolumeID), required("sdc_id", req.SDCID)); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), requestTimeout)
		defer cancel()
		return a.store.IssueToken(ctx, req)
	}))
	e.POST("/token/ack", a.write(func(c *gin.Context) (fsm.Command, error) {
		var req api.AckRequest
		if err := bindBody(c, &req); err != nil {
			return nil, err
		}
		return &fsm.AckTokens{SDSID: req.SDSID, Entries: req.Entries}, required("sds_id", req.SDSID)
	}))
	e.GET("/token/ledger", a.read(func(c *gin.Context, _ *fsm.Reader) (any, error) {
		var f fsm.LedgerFilter
		if err := firstErr(queryInt(c, "volume_id", &f.VolumeID), queryInt(c, "sdc_id", &f.SDCID), queryInt(c, "sds_id", &f.SDSID)); err != nil {
			return nil, err
		}
		return a.store.Ledger(f)
	}))
	e.POST("/token/rotate", a.leaderOnly(func(c *gin.Context) (any, error) {
		id, err := a.store.RotateTokenKey(c.Request.Context())
		return map[string]uint32{"key_id": id}, err
	}))
	e.GET("/vol/:id/layout", a.leaderOnly(func(c *gin.Context) (any, error) {
		id, err := pathID(c, "id")
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), requestTimeout)
		defer cancel()
		return a.store.VolumeLayout(ctx, id)
	}))
	e.GET("/discovery/nodes", a.leaderView(func(c *gin.Context) (any, error) {
		members, err := a.store.Members()
		if err != nil {
			return nil, err
		}
		byID := map[string]api.Member{}
		for _, m := range members {
			byID[m.ID] = m
		}
		var nodes []fsm.Node
		if err := a.store.Read(func(r *fsm.Reader) (err error) { nodes, err = r.Nodes(); return }); err != nil {
			return nil, err
		}
		out := make([]api.NodeView, 0, len(nodes))
		for _, n := range nodes {
			out = append(out, api.NodeView{Node: n, GossipState: byID[n.ID].GossipState, LastHeartbeatMs: byID[n.ID].LastHeartbeatMs})
		}
		return out, nil
	}))
	e.POST("/cluster/join", a.leaderOnly(func(c *gin.Context) (any, error) {
		var req api.JoinRequest
		if err := bindBody(c, &req); err != nil {
			return nil, err
		}
		if req.NodeID == "" || req.RaftAddr == "" || req.APIAddr == "" {
			return nil, &fsm.Error{Kind: fsm.KindInvalid, Message: "node_id, raft_addr and api_addr are required"}
		}
		if err := a.store.Join(c.Request.Context(), req); err != nil {
			return nil, err
		}
		return a.store.Peers(), nil
	}))
	e.POST("/cluster/remove", a.leaderOnly(func(c *gin.Context) (any, error) {
		var req api.RemoveRequest
		if err := bindBody(c, &req); err != nil {
			return nil, err
		}
		if req.NodeID == "" {
			return nil, &fsm.Error{Kind: fsm.KindInvalid, Message: "node_id is required"}
		}
		if err := a.store.Remove(c.Request.Context(), req.NodeID); err != nil {
			return nil, err
		}
		return a.store.Peers(), nil
	}))
	e.POST("/cluster/transfer-leadership", a.leaderOnly(func(c *gin.Context) (any, error) {
		var req api.TransferRequest
		if err := bind(c, &req); err != nil {
			return nil, err
		}
		if err := a.store.TransferLeadership(req.NodeID); err != nil {
			return nil, err
		}
		id, addr := a.store.Leader()
		return api.TransferResponse{LeaderID: id, LeaderAPI: addr}, nil
	}))
	e.GET("/cluster/snapshot", a.snapshot)
	e.POST("/cluster/restore", a.restore)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func required(name string, id int64) error {
	if id <= 0 {
		return &fsm.Error{Kind: fsm.KindInvalid, Message: fmt.Sprintf("%s is required (a positive integer)", name)}
	}
	return nil
}

// byID serves GET /kind/:id with a Reader method.
func byID[T any](param string, get func(*fsm.Reader, int64) (T, error)) func(*gin.Context, *fsm.Reader) (any, error) {
	return func(c *gin.Context, r *fsm.Reader) (any, error) {
		id, err := pathID(c, param)
		if err != nil {
			return nil, err
		}
		return get(r, id)
	}
}

// deleteByID builds a command from the path id alone.
func deleteByID(param string, build func(int64) fsm.Command) func(*gin.Context) (fsm.Command, error) {
	return func(c *gin.Context) (fsm.Command, error) {
		id, err := pathID(c, param)
		if err != nil {
			return nil, err
		}
		return build(id), nil
	}
}

// leaderView answers from the leader's memory as well as its state (heartbeat times live only
// there): forwarded like a read, without the ReadIndex barrier; ?stale=1 answers locally.
func (a *httpAPI) leaderView(view func(c *gin.Context) (any, error)) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !stale(c) && !a.store.IsLeader() {
			a.forward(c)
			return
		}
		v, err := view(c)
		if err != nil {
			failErr(c, err)
			return
		}
		a.respond(c, v)
	}
}

// leaderOnly runs a cluster operation on the leader (followers forward).
func (a *httpAPI) leaderOnly(op func(c *gin.Context) (any, error)) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !a.store.IsLeader() {
			a.forward(c)
			return
		}
		v, err := op(c)
		if err != nil {
			failErr(c, err)
			return
		}
		a.respond(c, v)
	}
}

func (a *httpAPI) readyz(c *gin.Context) {
	id, addr := a.store.Leader()
	if id == "" {
		fail(c, http.StatusServiceUnavailable, api.CodeNoLeader, "no MDM leader is elected")
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready", "leader_id": id, "leader_api": addr})
}

// clusterStatus is the leader's view by default; ?stale=1 gives this replica's own.
func (a *httpAPI) clusterStatus(c *gin.Context) {
	if !stale(c) && !a.store.IsLeader() {
		a.forward(c)
		return
	}
	st := a.store.Status()
	if err := a.store.Read(func(r *fsm.Reader) error {
		counts, err := r.Counts()
		st.Counts = &counts
		return err
	}); err != nil {
		failErr(c, err)
		return
	}
	a.respond(c, st)
}

func (a *httpAPI) summary(c *gin.Context) {
	if !a.barrier(c) {
		return
	}
	var s api.Summary
	s.Cluster = a.store.Status()
	if err := a.store.Read(func(r *fsm.Reader) error {
		var err error
		s.Counts, err = r.Counts()
		return err
	}); err != nil {
		failErr(c, err)
		return
	}
	a.respond(c, s)
}

// snapshot streams a consistent copy of the state database (a backup).
func (a *httpAPI) snapshot(c *gin.Context) {
	if !a.barrier(c) {
		return
	}
	dir, err := os.MkdirTemp("", "pflex-backup-")
	if err != nil {
		failErr(c, err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "state.db")
	if err := a.store.SnapshotTo(path); err != nil {
		failErr(c, err)
		return
	}
	idx, err := fsm.DatabaseIndex(path)
	if err != nil {
		failErr(c, err)
		return
	}
	c.Header(api.HeaderIndex, strconv.FormatUint(idx, 10))
	c.Header("Content-Disposition", fmt.Sprintf(`attachment; filename="pflex-mdm-%d.db"`, idx))
	c.File(path)
}

// restore replaces the whole MDM state with an uploaded backup, through the log.
func (a *httpAPI) restore(c *gin.Context) {
	if !a.store.IsLeader() {
		a.forward(c)
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxRestoreBody))
	if err != nil {
		fail(c, http.StatusBadRequest, string(fsm.KindInvalid), fmt.Sprintf("backup upload (at most %d MiB): %v", maxRestoreBody>>20, err))
		return
	}
	if err := checkBackup(data); err != nil {
		fail(c, http.StatusBadRequest, string(fsm.KindInvalid), err.Error())
		return
	}
	if _, err := a.store.Propose(c.Request.Context(), c.GetHeader(api.HeaderRequestID), &fsm.RestoreState{DB: data}); err != nil {
		failErr(c, err)
		return
	}
	st := a.store.Status()
	a.respond(c, api.RestoreResponse{Restored: true, AppliedIndex: st.FSMIndex, Digest: st.Digest})
}

// checkBackup refuses an upload that is not a pflex state database before it reaches the log.
func checkBackup(data []byte) error {
	dir, err := os.MkdirTemp("", "pflex-restore-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "backup.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	if err := fsm.CheckDatabase(path); err != nil {
		return fmt.Errorf("not a pflex MDM backup: %v", err)
	}
	return nil
}

// pprofHandler serves net/http/pprof's pages under /debug/pprof/.
func pprofHandler(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, "/debug/pprof/") {
	case "profile":
		pprof.Profile(w, r)
	case "trace":
		pprof.Trace(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "cmdline":
		pprof.Cmdline(w, r)
	default:
		pprof.Index(w, r)
	}
}

// remarshal converts a JSON-encodable value (such as a stored json.RawMessage) into out.
func remarshal(v any, out any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// sdcVolumes lists what an SDC exports: the volumes mapped to it (GET /sdc/{id}/volumes).
func sdcVolumes(c *gin.Context, r *fsm.Reader) (any, error) {
	id, err := pathID(c, "id")
	if err != nil {
		return nil, err
	}
	if _, err := r.SDC(id); err != nil {
		return nil, err
	}
	vols, err := r.Volumes()
	if err != nil {
		return nil, err
	}
	out := []api.MappedVolume{}
	for _, v := range vols {
		for _, m := range v.Mappings {
			if m.SDCID == id {
				out = append(out, api.MappedVolume{VolumeID: v.ID, Name: v.Name, SizeBytes: v.SizeGB << 30,
					AccessMode: m.AccessMode, MapGeneration: v.MapGeneration, IOPSLimit: m.IOPSLimit, BandwidthLimitMBps: m.BandwidthLimitMBps})
			}
		}
	}
	return out, nil
}

// setRebuildPaused serves POST /rebuild/cancel and /rebuild/start: the pool's rebuilds are
// cancelled (the batch being copied is cut short) or allowed again, and the planner runs at once.
func (a *httpAPI) setRebuildPaused(paused bool) func(c *gin.Context) (any, error) {
	return func(c *gin.Context) (any, error) {
		id, err := pathID(c, "pool_id")
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), requestTimeout)
		defer cancel()
		v, err := a.store.Propose(ctx, c.GetHeader(api.HeaderRequestID), &fsm.SetRebuildPaused{PoolID: id, Paused: paused})
		if err != nil {
			return nil, err
		}
		a.store.KickRebuild()
		return v, nil
	}
}
