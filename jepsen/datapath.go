package jepsen

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
)

// Names of what StartDataPath creates.
const (
	dataPathPD     = "pd1"
	dataPathPool   = "jepsen-pool"
	dataPathVolume = "jepsen-vol"
)

// dataPath is the SDS and SDC part of a local cluster.
type dataPath struct {
	sds      []int  // process indexes of the SDSs
	sdc      int    // process index of the SDC
	nbd      string // the SDC's NBD address
	volumeID int64
}

// prepareDataPath writes the SDS and SDC configs (shapes of configs/local and systest):
// every SDS has one sparse 4 GB file device in its directory.
func (c *LocalCluster) prepareDataPath(gossipJoin []string) error {
	n := c.cfg.SDSs
	if n == 0 {
		n = 3
	}
	var mdms, join []string
	for _, node := range c.nodes {
		mdms = append(mdms, fmt.Sprintf("%q", node.API))
	}
	for _, j := range gossipJoin {
		join = append(join, fmt.Sprintf("%q", j))
	}
	common := func(id, dir, api, mgmt, gossip string) string {
		return fmt.Sprintf("id = %q\ndata_dir = %q\napi_addr = %q\nmgmt_addr = %q\ncluster_key = %q\n"+
			"log_level = %q\nheartbeat_interval = \"200ms\"\nmdm = [%s]\n"+
			"gossip {\n  bind_addr = %q\n  join = [%s]\n  key = %q\n}\n",
			id, filepath.Join(dir, "data"), api, mgmt, c.cfg.ClusterKey, c.cfg.LogLevel, strings.Join(mdms, ", "),
			gossip, strings.Join(join, ", "), c.cfg.GossipKey)
	}
	d := &dataPath{}
	for j := 0; j < n; j++ {
		id := fmt.Sprintf("sds-%d", j+1)
		dir := filepath.Join(c.cfg.Dir, id)
		a, err := c.cfg.host.listen(id, "sds", 4)
		if err != nil {
			return err
		}
		api := a[0]
		hcl := common(id, dir, api, a[1], a[3]) +
			fmt.Sprintf("data_addr = %q\nprotection_domain = %q\ndevices = [%q]\ntotal_capacity_gb = 4\n",
				a[2], dataPathPD, filepath.Join(dir, "data", "dev0.img"))
		if err := c.addSpec(id, "sds", dir, api, hcl); err != nil {
			return err
		}
		d.sds = append(d.sds, len(c.specs)-1)
	}
	p, err := c.cfg.host.listen("sdc-1", "sdc", 4)
	if err != nil {
		return err
	}
	dir := filepath.Join(c.cfg.Dir, "sdc-1")
	api := p[0]
	d.nbd = p[2]
	hcl := common("sdc-1", dir, api, p[1], p[3]) + fmt.Sprintf("nbd_addr = %q\n", d.nbd)
	if c.cfg.IOTimeout != "" {
		hcl += fmt.Sprintf("io_timeout = %q\n", c.cfg.IOTimeout)
	}
	if err := c.addSpec("sdc-1", "sdc", dir, api, hcl); err != nil {
		return err
	}
	d.sdc = len(c.specs) - 1
	c.data = d
	return nil
}

func (c *LocalCluster) addSpec(id, role, dir, api, hcl string) error {
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, role+".hcl")
	if err := os.WriteFile(path, []byte(hcl), 0o600); err != nil {
		return err
	}
	c.specs = append(c.specs, procSpec{ID: id, Role: role, HCL: path, API: api})
	return nil
}

// StartDataPath creates the protection domain, starts the SDSs and the SDC, waits for them to
// register, creates a pool and a 1 GB thin volume, maps it read-write to the SDC and waits until
// the SDC exports it. The MDMs must have a leader; admin follows it.
func (c *LocalCluster) StartDataPath(ctx context.Context, admin *api.Client) error {
	d := c.data
	if d == nil {
		return fmt.Errorf("jepsen: the cluster was made without DataPath")
	}
	var pd fsm.ProtectionDomain
	if err := admin.Post(ctx, "/pd/create", map[string]any{"name": dataPathPD}, &pd); err != nil {
		return fmt.Errorf("jepsen: create pd: %w", err)
	}
	for k := len(c.nodes); k < len(c.specs); k++ {
		if err := c.startProc(k); err != nil {
			return err
		}
	}
	want := map[string]bool{}
	for _, k := range append(append([]int(nil), d.sds...), d.sdc) {
		want[c.specs[k].ID] = true
	}
	if err := pollUntil(ctx, 60*time.Second, func() bool {
		var ms []api.Member
		if admin.Get(ctx, "/cluster/members", nil, &ms) != nil {
			return false
		}
		up := 0
		for _, m := range ms {
			if want[m.ID] && m.Registered && m.State == "up" {
				up++
			}
		}
		return up == len(want)
	}); err != nil {
		return fmt.Errorf("jepsen: SDSs and SDC did not register within 60s (see their logs): %w", err)
	}
	var pool fsm.Pool
	if err := admin.Post(ctx, "/pool/create", map[string]any{"name": dataPathPool, "pd_id": pd.ID,
		"total_capacity_gb": 10}, &pool); err != nil {
		return fmt.Errorf("jepsen: create pool: %w", err)
	}
	var vol fsm.Volume
	if err := admin.Post(ctx, "/vol/create", map[string]any{"name": dataPathVolume, "size_gb": 1, "pool_id": pool.ID}, &vol); err != nil {
		return fmt.Errorf("jepsen: create volume: %w", err)
	}
	d.volumeID = vol.ID
	var sdcs []fsm.SDC
	if err := admin.Get(ctx, "/sdc/list", nil, &sdcs); err != nil {
		return fmt.Errorf("jepsen: list SDCs: %w", err)
	}
	var sdcID int64
	for _, s := range sdcs {
		if s.NodeID == c.specs[d.sdc].ID {
			sdcID = s.ID
		}
	}
	if sdcID == 0 {
		return fmt.Errorf("jepsen: %s is not in /sdc/list", c.specs[d.sdc].ID)
	}
	if err := admin.Post(ctx, "/vol/map", map[string]any{"volume_id": vol.ID, "sdc_id": sdcID, "access_mode": "readWrite"}, nil); err != nil {
		return fmt.Errorf("jepsen: map volume: %w", err)
	}
	if err := pollUntil(ctx, 30*time.Second, func() bool {
		conn, err := DialNBD(ctx, d.nbd, dataPathVolume, 2*time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}); err != nil {
		return fmt.Errorf("jepsen: the SDC does not export %s at %s within 30s: %w", dataPathVolume, d.nbd, err)
	}
	return nil
}

// pollUntil calls cond every 100 ms until it holds or timeout passes.
func pollUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return context.DeadlineExceeded
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// NBD returns the SDC's NBD address and the export name of the volume.
func (c *LocalCluster) NBD() (addr, export string) { return c.data.nbd, dataPathVolume }

// VolumeID is the id of the volume StartDataPath created.
func (c *LocalCluster) VolumeID() int64 { return c.data.volumeID }

// SDSCount is the number of SDSs (0 without DataPath).
func (c *LocalCluster) SDSCount() int {
	if c.data == nil {
		return 0
	}
	return len(c.data.sds)
}

// SDSID names SDS i.
func (c *LocalCluster) SDSID(i int) string { return c.specs[c.data.sds[i]].ID }

// SDSAPI is SDS i's HTTP API address.
func (c *LocalCluster) SDSAPI(i int) string { return c.specs[c.data.sds[i]].API }

// SDCAPI is the SDC's HTTP API address.
func (c *LocalCluster) SDCAPI() string { return c.specs[c.data.sdc].API }

// KillSDS SIGKILLs SDS i and waits until it is reaped.
func (c *LocalCluster) KillSDS(i int) error { return c.stop(c.data.sds[i], syscall.SIGKILL, 0) }

// StartSDS starts SDS i again (same config, same device file).
func (c *LocalCluster) StartSDS(i int) error { return c.startProc(c.data.sds[i]) }

// PauseSDS SIGSTOPs SDS i; ResumeSDS SIGCONTs it.
func (c *LocalCluster) PauseSDS(i int) error { return c.setPaused(c.data.sds[i], true) }

// ResumeSDS SIGCONTs SDS i.
func (c *LocalCluster) ResumeSDS(i int) error { return c.setPaused(c.data.sds[i], false) }

// SDSRunning reports whether SDS i runs.
func (c *LocalCluster) SDSRunning(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[c.data.sds[i]] != nil
}

// DataPathCluster is the optional interface of backends with SDSs and an SDC exporting a volume.
type DataPathCluster interface {
	Cluster
	NBD() (addr, export string)
	VolumeID() int64
	SDSCount() int
	SDSID(i int) string
	SDSAPI(i int) string
	SDCAPI() string
	KillSDS(i int) error
	StartSDS(i int) error
	PauseSDS(i int) error
	ResumeSDS(i int) error
}

var _ DataPathCluster = (*LocalCluster)(nil)

// ledger reads the token ledger totals of a volume.
func ledger(ctx context.Context, admin *api.Client, volumeID int64) (api.LedgerTotals, error) {
	var l api.Ledger
	err := admin.Get(ctx, "/token/ledger", url.Values{"volume_id": {fmt.Sprint(volumeID)}}, &l)
	return l.Totals, err
}
