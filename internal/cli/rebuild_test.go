package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"pflex/internal/api"
)

func TestRebuildVerbs(t *testing.T) {
	f := newFakeMDM(t)
	mustRun(t, f.addr(), "pd", "create", "pd1")
	mustRun(t, f.addr(), "pool", "create", "pool1", "-pd", "pd1", "-capacity-gb", "100")
	mustRun(t, f.addr(), "pool", "create", "pool2", "-pd", "pd1", "-capacity-gb", "100")
	mustRun(t, f.addr(), "vol", "create", "vol1", "-pool", "pool2", "-size-gb", "1")
	// pd1 is id 1, pool1 id 2, pool2 id 3, vol1 id 4.
	f.rebuild["3"] = api.RebuildStatus{PoolID: 3, State: "rebuilding", Health: "REBUILDING", DegradedChunks: 63,
		ChunksTotal: 100, ChunksDone: 37, BytesDone: 37 << 20, MBPerSec: 210, ETASeconds: 11.2, StartedAt: 1700000000000,
		Volumes: []api.VolumeRebuild{{VolumeID: 4, Epoch: 5, Done: 512, Ordered: 1024, Chunks: 1024, DegradedChunks: 63}}}

	out := mustRun(t, f.addr(), "rebuild", "status", "pool2")
	for _, want := range []string{"POOL", "pool2  rebuilding  REBUILDING  63", "37/100", "37%", "210.0", "12s", "vol1", "[512, 1024)"} {
		if !strings.Contains(out, want) {
			t.Errorf("rebuild status pool2 lacks %q:\n%s", want, out)
		}
	}
	out = mustRun(t, f.addr(), "rebuild", "status")
	if !strings.Contains(out, "pool1  idle") || !strings.Contains(out, "pool2  rebuilding") {
		t.Errorf("rebuild status (all):\n%s", out)
	}
	out = mustRun(t, f.addr(), "rebuild", "status", "--json")
	var all []api.RebuildStatus
	if err := json.Unmarshal([]byte(out), &all); err != nil || len(all) != 2 || all[1].ChunksDone != 37 {
		t.Fatalf("rebuild status --json: %v\n%s", err, out)
	}
	out = mustRun(t, f.addr(), "rebuild", "status", "3", "--json")
	var one api.RebuildStatus
	if err := json.Unmarshal([]byte(out), &one); err != nil || one.PoolID != 3 || len(one.Volumes) != 1 {
		t.Fatalf("rebuild status 3 --json: %v\n%s", err, out)
	}

	if out := mustRun(t, f.addr(), "rebuild", "cancel", "pool2"); !strings.Contains(out, "rebuild of pool pool2 (id 3) cancelled (2 volume batches cut short)") {
		t.Errorf("cancel: %s", out)
	}
	if out := mustRun(t, f.addr(), "rebuild", "start", "2"); !strings.Contains(out, "rebuild of pool 2 allowed") {
		t.Errorf("start: %s", out)
	}

	// Errors: plain words, exit 1; usage, exit 2.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"rebuild", "status", "nosuch"}, ExitError, `no pool named "nosuch"`},
		{[]string{"rebuild", "status", "99"}, ExitError, "storage pool 99 not found"},
		{[]string{"rebuild", "cancel", "99"}, ExitError, "cancel the rebuild of pool 99: 404 not found: storage pool 99 not found"},
		{[]string{"rebuild", "start"}, ExitUsage, "missing argument"},
		{[]string{"rebuild", "status", "a", "b"}, ExitUsage, `unexpected argument "b"`},
		{[]string{"rebuild"}, ExitUsage, "needs a subcommand"},
	} {
		r := run(t, f.addr(), tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
	if out := mustRun(t, f.addr(), "help"); !strings.Contains(out, "pflex rebuild status [POOL]") || !strings.Contains(out, "rebuild, cluster") {
		t.Errorf("help lacks the rebuild verbs:\n%s", out)
	}
}

func TestStatusShowsPoolHealthAndRebuildProgress(t *testing.T) {
	f := newFakeMDM(t)
	mustRun(t, f.addr(), "pd", "create", "pd1")
	mustRun(t, f.addr(), "pool", "create", "pool1", "-pd", "pd1", "-capacity-gb", "100")
	mustRun(t, f.addr(), "pool", "create", "pool2", "-pd", "pd1", "-capacity-gb", "100")
	f.health["3"] = `{"pool_id":3,"name":"pool2","health":"REBUILDING","degraded_chunks":63,` +
		`"rebuild":{"chunks_done":37,"chunks_total":100,"percent":37,"mb_per_s":210.4,"eta_seconds":11.2}}`
	f.health["2"] = `{"pool_id":2,"name":"pool1","health":"OK","degraded_chunks":0}`
	out := mustRun(t, f.addr(), "status")
	if !strings.Contains(out, "pools: pool1 OK, pool2 REBUILDING 37% 210 MB/s ETA 12s") {
		t.Fatalf("status:\n%s", out)
	}
	out = mustRun(t, f.addr(), "status", "--json")
	var doc struct {
		Pools []poolHealth `json:"pools"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Pools) != 2 || doc.Pools[1].Rebuild == nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
}
