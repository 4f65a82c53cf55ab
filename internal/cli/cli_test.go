package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/internal/api"
)

type result struct {
	code           int
	stdout, stderr string
}

// run runs the CLI against the given MDM addresses with a short retry deadline.
func run(t *testing.T, mdm string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	full := append([]string{"-mdm", mdm, "-timeout", "300ms"}, args...)
	code := Run(context.Background(), full, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

func mustRun(t *testing.T, mdm string, args ...string) string {
	t.Helper()
	r := run(t, mdm, args...)
	if r.code != 0 {
		t.Fatalf("pflex %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// seed creates pd1, pool1 and vol1 the way a user would, flags after positionals.
func seed(t *testing.T, f *fakeMDM) {
	mustRun(t, f.addr(), "pd", "create", "pd1")
	mustRun(t, f.addr(), "pool", "create", "pool1", "-pd", "pd1", "-capacity-gb", "100")
	mustRun(t, f.addr(), "vol", "create", "vol1", "-size-gb", "8", "-pool", "pool1")
}

func TestNameOrIDResolution(t *testing.T) {
	f := newFakeMDM(t)
	seed(t, f)
	pool := f.lastBody(t, "POST /pool/create")
	if pool["pd_id"] != float64(1) || pool["total_capacity_gb"] != float64(100) ||
		pool["chunk_size_mb"] != float64(1) || pool["protection_policy"] != fsm.TwoCopies {
		t.Fatalf("pool create body %v", pool)
	}
	vol := f.lastBody(t, "POST /vol/create")
	if vol["pool_id"] != float64(2) || vol["size_gb"] != float64(8) || vol["provisioning"] != "thin" || vol["name"] != "vol1" {
		t.Fatalf("vol create body %v", vol)
	}

	byName := mustRun(t, f.addr(), "vol", "show", "vol1")
	byID := mustRun(t, f.addr(), "vol", "show", "3")
	if byName != byID {
		t.Fatalf("show by name and by id differ:\n%s\n%s", byName, byID)
	}
	for _, want := range []string{"name:           vol1", "size:           8 GB", "pool:           pool1"} {
		if !strings.Contains(byName, want) {
			t.Errorf("vol show lacks %q:\n%s", want, byName)
		}
	}

	r := run(t, f.addr(), "vol", "show", "nope")
	if r.code != ExitError || r.stderr != "pflex: no volume named \"nope\": not found\n" {
		t.Fatalf("unknown name: exit %d stderr %q", r.code, r.stderr)
	}
	r = run(t, f.addr(), "vol", "show", "99")
	if r.code != ExitError || !strings.Contains(r.stderr, "404 not found: volume 99 does not exist") {
		t.Fatalf("unknown id: exit %d stderr %q", r.code, r.stderr)
	}

	mustRun(t, f.addr(), "sdc", "add", "sdc1", "-address", "10.0.0.5:8301")
	out := mustRun(t, f.addr(), "vol", "map", "vol1", "sdc1", "-readonly", "-iops", "100")
	if out != "mapped volume vol1 (id 3) to SDC sdc1 (id 4) (readOnly)\n" {
		t.Fatalf("map output %q", out)
	}
	m := f.lastBody(t, "POST /vol/map")
	if m["volume_id"] != float64(3) || m["sdc_id"] != float64(4) || m["access_mode"] != "readOnly" || m["iops_limit"] != float64(100) {
		t.Fatalf("map body %v", m)
	}
	out = mustRun(t, f.addr(), "vol", "limits", "vol1", "sdc1", "-iops", "250")
	if out != "limits of volume vol1 (id 3) on SDC sdc1 (id 4): IOPS 250, bandwidth none\n" {
		t.Fatalf("limits output %q", out)
	}
	if m := f.lastBody(t, "POST /vol/limits"); len(m) != 3 || m["iops_limit"] != float64(250) || m["volume_id"] != float64(3) || m["sdc_id"] != float64(4) {
		t.Fatalf("limits body %v: only the limit given may be sent", m)
	}
	for _, args := range [][]string{{"vol", "limits", "vol1", "sdc1"}, {"vol", "limits", "vol1", "sdc1", "-mbps", "-2"}} {
		if r := run(t, f.addr(), args...); r.code == 0 || r.stderr == "" {
			t.Fatalf("%v: exit %d stderr %q", args, r.code, r.stderr)
		}
	}
	out = mustRun(t, f.addr(), "vol", "list")
	if !strings.Contains(out, "sdc1(ro)") {
		t.Fatalf("vol list does not show the mapping:\n%s", out)
	}
	out = mustRun(t, f.addr(), "vol", "delete", "vol1")
	if out != "deleted volume vol1 (id 3)\n" {
		t.Fatalf("delete output %q", out)
	}
}

func TestListTable(t *testing.T) {
	f := newFakeMDM(t)
	seed(t, f)
	mustRun(t, f.addr(), "vol", "create", "database-volume", "-size-gb", "1024", "-pool", "2", "-thick")
	out := mustRun(t, f.addr(), "vol", "list")
	want := "" +
		"ID  NAME             SIZE_GB  PROVISIONING  POOL   MAPPED_TO\n" +
		"3   vol1             8        thin          pool1  -\n" +
		"4   database-volume  1024     thick         pool1  -\n"
	if out != want {
		t.Fatalf("vol list:\n%s\nwant:\n%s", out, want)
	}
	out = mustRun(t, f.addr(), "pool", "list")
	if !strings.HasPrefix(out, "ID  NAME   PD   POLICY      CAPACITY_GB") || !strings.Contains(out, "2   pool1  pd1  two_copies  100") {
		t.Fatalf("pool list:\n%s", out)
	}
	if out := mustRun(t, f.addr(), "sdc", "list"); out != "no SDCs\n" {
		t.Fatalf("empty list: %q", out)
	}
	out = mustRun(t, f.addr(), "pool", "health", "pool1")
	if !strings.Contains(out, "health:          OK") {
		t.Fatalf("pool health:\n%s", out)
	}
}

func TestJSONOutput(t *testing.T) {
	f := newFakeMDM(t)
	seed(t, f)
	for _, args := range [][]string{{"--json", "vol", "list"}, {"vol", "list", "-json"}, {"vol", "-json", "list"}} {
		out := mustRun(t, f.addr(), args...)
		var vols []fsm.Volume
		if err := json.Unmarshal([]byte(out), &vols); err != nil {
			t.Fatalf("%v: not JSON: %v\n%s", args, err, out)
		}
		if len(vols) != 1 || vols[0].Name != "vol1" || vols[0].PoolID != 2 {
			t.Fatalf("%v: %+v", args, vols)
		}
		if !strings.Contains(out, "\n  {\n    \"") {
			t.Fatalf("%v: not indented:\n%s", args, out)
		}
	}
	out := mustRun(t, f.addr(), "-json", "pd", "create", "pd2")
	var pd fsm.ProtectionDomain
	if err := json.Unmarshal([]byte(out), &pd); err != nil || pd.Name != "pd2" || pd.ID == 0 {
		t.Fatalf("create --json: %v %s", err, out)
	}
}

func TestUsageErrors(t *testing.T) {
	f := newFakeMDM(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage:"},
		{[]string{"frob"}, `unknown command "pflex frob"`},
		{[]string{"help", "frob"}, `unknown command "pflex frob"`},
		{[]string{"-bogus", "status"}, "flag provided but not defined: -bogus"},
		{[]string{"status", "extra"}, `unexpected argument "extra"`},
		{[]string{"vol"}, `"pflex vol" needs a subcommand`},
		{[]string{"vol", "frob"}, `unknown command "pflex vol frob"`},
		{[]string{"vol", "create"}, "pflex vol create: missing argument"},
		{[]string{"vol", "create", "v", "x"}, `unexpected argument "x"`},
		{[]string{"vol", "create", "v", "-size-gb", "eight", "-pool", "p"}, `invalid value "eight" for flag -size-gb`},
		{[]string{"vol", "create", "v", "-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"vol", "create", "v", "-pool", "p"}, "-size-gb must be a positive number"},
		{[]string{"vol", "create", "v", "-size-gb", "8"}, "-pool is required"},
		{[]string{"sds", "add", "s1", "-pd", "pd1", "-capacity-gb", "10"}, "-devices is required"},
		{[]string{"cluster", "join", "mdm-4"}, "missing argument"},
		{[]string{"-timeout", "0", "status"}, "-timeout must be positive"},
	} {
		r := run(t, f.addr(), tc.args...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("pflex %v: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	if n := f.requestCount(); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help"}, "pflex vol create NAME -size-gb N -pool POOL [-thick]"},
		{[]string{"-h"}, "pflex cluster snapshot save FILE"},
		{[]string{"help", "vol"}, "pflex vol label set VOL KEY VALUE [-expect OLD]"},
		{[]string{"vol", "create", "-h"}, "-size-gb int"},
		{[]string{"help", "vol", "create"}, "-thick"},
	} {
		r := run(t, f.addr(), tc.args...)
		if r.code != ExitOK || !strings.Contains(r.stdout, tc.want) {
			t.Errorf("pflex %v: exit %d, stdout %q; want exit 0 and %q", tc.args, r.code, r.stdout, tc.want)
		}
	}
	r := run(t, f.addr(), "help", "vol")
	if strings.Contains(r.stdout, "pflex pd create") {
		t.Errorf("help vol lists other groups:\n%s", r.stdout)
	}
}

func TestAPIConflictExits1(t *testing.T) {
	f := newFakeMDM(t)
	seed(t, f)
	r := run(t, f.addr(), "vol", "create", "vol1", "-size-gb", "8", "-pool", "pool1")
	if r.code != ExitError || r.stderr != "pflex: 409 conflict: volume \"vol1\" already exists\n" || r.stdout != "" {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestLabels(t *testing.T) {
	f := newFakeMDM(t)
	seed(t, f)
	out := mustRun(t, f.addr(), "vol", "label", "set", "vol1", "owner", "alice", "-expect", "")
	if !strings.Contains(out, "value:   alice") || !strings.Contains(out, "version: 1") {
		t.Fatalf("label set:\n%s", out)
	}
	if b := f.lastBody(t, "PUT /vol/3/labels/owner"); b["expect"] != "" {
		t.Fatalf("expect not sent as empty string: %v", b)
	}
	mustRun(t, f.addr(), "vol", "label", "set", "vol1", "owner", "bob")
	if _, sent := f.lastBody(t, "PUT /vol/3/labels/owner")["expect"]; sent {
		t.Fatal("expect sent without -expect")
	}
	r := run(t, f.addr(), "vol", "label", "set", "vol1", "owner", "carol", "-expect", "alice")
	if r.code != ExitError || !strings.Contains(r.stderr, "pflex: 412 precondition failed: ") {
		t.Fatalf("CAS mismatch: exit %d stderr %q", r.code, r.stderr)
	}
	out = mustRun(t, f.addr(), "vol", "label", "get", "vol1", "owner")
	if !strings.Contains(out, "value:   bob") {
		t.Fatalf("label get:\n%s", out)
	}
	if r := run(t, f.addr(), "vol", "label", "get", "vol1", "missing"); r.code != ExitError {
		t.Fatalf("absent label: exit %d", r.code)
	}
}

// replicaSet is three fake MDMs whose status answers name each other as peers; the third
// address is dead.
func replicaSet(t *testing.T) (a, b *fakeMDM, dead string) {
	a, b, dead = newFakeMDM(t), newFakeMDM(t), deadAddr(t)
	peers := []api.Peer{
		{ID: "mdm-1", RaftAddr: "127.0.0.1:8101", APIAddr: a.addr(), Suffrage: "voter"},
		{ID: "mdm-2", RaftAddr: "127.0.0.1:8102", APIAddr: b.addr(), Suffrage: "voter"},
		{ID: "mdm-3", RaftAddr: "127.0.0.1:8103", APIAddr: dead, Suffrage: "voter"},
	}
	a.status = api.ClusterStatus{NodeID: "mdm-1", State: "leader", Term: 4, LeaderID: "mdm-1", LeaderAPI: a.addr(),
		CommitIndex: 42, AppliedIndex: 42, FSMIndex: 40, Digest: "0123456789abcdef0123", Peers: peers,
		Counts: &fsm.Counts{ProtectionDomains: 1, Pools: 1, SDS: 3, SDSUp: 2, SDC: 1, Volumes: 5, Mappings: 4}}
	b.status = api.ClusterStatus{NodeID: "mdm-2", State: "follower", Term: 4, LeaderID: "mdm-1", LeaderAPI: a.addr(),
		CommitIndex: 42, AppliedIndex: 42, FSMIndex: 40, Digest: "0123456789abcdef0123", Peers: peers,
		LastContact: "12ms", Counts: &fsm.Counts{}}
	return a, b, dead
}

func TestStatusWithUnreachableReplica(t *testing.T) {
	a, b, dead := replicaSet(t)
	// Only the follower is configured: the others are found through its peer list.
	out := mustRun(t, b.addr(), "status")
	for _, want := range []string{
		"quorum: DEGRADED (2/3 replicas reachable, leader mdm-1, term 4)",
		"ID     API",
		"mdm-1  " + a.addr() + "  leader       4     42      42       0123456789ab  -",
		"mdm-2  " + b.addr() + "  follower     4     42      42       0123456789ab  12ms",
		"mdm-3  " + dead + "  unreachable",
		"mdm-3 (" + dead + "): connection refused",
		"digests: agree (2 replicas at fsm index 40)",
		"objects: 1 protection domains, 0 fault sets, 1 pools, 3 SDS (2 up), 1 SDC, 5 volumes, 4 mappings",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	for _, f := range []*fakeMDM{a, b} {
		for _, req := range f.requests {
			if req != "GET /cluster/status?stale=1" && req != "GET /pool/list?stale=1" {
				t.Errorf("%s got %q, want only stale status and pool reads", f.status.NodeID, req)
			}
		}
	}

	out = mustRun(t, strings.Join([]string{a.addr(), dead}, ","), "status", "--json")
	var doc struct {
		Replicas []struct {
			NodeID    string             `json:"node_id"`
			Reachable bool               `json:"reachable"`
			Status    *api.ClusterStatus `json:"status"`
			Error     string             `json:"error"`
		} `json:"replicas"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	var got []string
	for _, r := range doc.Replicas {
		got = append(got, r.NodeID)
		if r.Reachable != (r.Status != nil) || r.Reachable == (r.Error != "") {
			t.Errorf("replica %+v: reachable, status and error disagree", r)
		}
	}
	if !reflect.DeepEqual(got, []string{"mdm-1", "mdm-2", "mdm-3"}) || doc.Replicas[2].Reachable {
		t.Fatalf("replicas %v / %+v", got, doc.Replicas)
	}
}

// Behind docker the replicas advertise container names the CLI's host cannot resolve: status
// still reaches them through the endpoints it was given, pool health included.
func TestStatusThroughPublishedPortsOfUnresolvableReplicas(t *testing.T) {
	a, b, _ := replicaSet(t)
	for _, f := range []*fakeMDM{a, b} {
		for i := range f.status.Peers {
			f.status.Peers[i].APIAddr = fmt.Sprintf("mdm-%d.invalid:8001", i+1)
		}
		f.status.LeaderAPI = "mdm-1.invalid:8001"
	}
	a.objects["pool"] = []map[string]any{{"id": int64(1), "name": "pool1"}}
	a.health["1"] = `{"pool_id":1,"name":"pool1","health":"OK","degraded_chunks":0}`
	out := mustRun(t, a.addr()+","+b.addr(), "status")
	for _, want := range []string{"leader mdm-1", "pools: pool1 OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusDivergedAndLeaderless(t *testing.T) {
	a, b, _ := replicaSet(t)
	b.status.Digest = "ffffffffffffffffffff"
	a.status.State, a.status.LeaderID = "candidate", ""
	a.status.Term = 5
	out := mustRun(t, a.addr(), "status")
	for _, want := range []string{
		"quorum: NO LEADER (2/3 replicas reachable, term 5)",
		"digests: DIVERGED at fsm index 40 (mdm-1 0123456789ab, mdm-2 ffffffffffff)",
		"(stale, from",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusNothingReachable(t *testing.T) {
	d1, d2 := deadAddr(t), deadAddr(t)
	r := run(t, d1+","+d2, "status")
	if r.code != ExitError || !strings.Contains(r.stdout, "quorum: NO LEADER (0/2 replicas reachable)") ||
		!strings.Contains(r.stderr, "no MDM replica is reachable") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
}

func TestSnapshotSaveAndRestore(t *testing.T) {
	f := newFakeMDM(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "backup.db")
	os.WriteFile(file, []byte("old"), 0o600)
	out := mustRun(t, f.addr(), "cluster", "snapshot", "save", file)
	if want := "saved snapshot to " + file + ": 20 bytes, index 10\n"; out != want {
		t.Fatalf("save: %q, want %q", out, want)
	}
	got, _ := os.ReadFile(file)
	if !bytes.Equal(got, f.snapshot) {
		t.Fatalf("file holds %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temp file left behind: %v", entries)
	}
	out = mustRun(t, f.addr(), "cluster", "snapshot", "restore", file)
	if out != "restored "+file+": applied index 77, digest abcdef012345\n" || !bytes.Equal(f.restored, f.snapshot) {
		t.Fatalf("restore: %q, server got %q", out, f.restored)
	}
	if r := run(t, f.addr(), "cluster", "snapshot", "restore", filepath.Join(dir, "nope")); r.code != ExitError {
		t.Fatalf("restore of a missing file: exit %d", r.code)
	}
}

func TestClusterVerbs(t *testing.T) {
	f := newFakeMDM(t)
	out := mustRun(t, f.addr(), "cluster", "peers")
	if !strings.Contains(out, "mdm-1  127.0.0.1:8101  "+f.addr()+"  voter     *") {
		t.Fatalf("peers:\n%s", out)
	}
	mustRun(t, f.addr(), "cluster", "join", "mdm-4", "127.0.0.1:8104", "127.0.0.1:8004", "-nonvoter")
	if b := f.lastBody(t, "POST /cluster/join"); b["node_id"] != "mdm-4" || b["voter"] != false {
		t.Fatalf("join body %v", b)
	}
	if out := mustRun(t, f.addr(), "cluster", "transfer-leadership"); out != "leader is now mdm-2 (api 127.0.0.1:8002)\n" {
		t.Fatalf("transfer: %q", out)
	}
	f.transferBlank = true // the answer comes before the election: the CLI asks for the status
	if out := mustRun(t, f.addr(), "cluster", "transfer-leadership", "mdm-1"); out != "leader is now mdm-1 (api "+f.addr()+")\n" {
		t.Fatalf("transfer with a blank answer: %q", out)
	}
	out = mustRun(t, f.addr(), "cluster", "status")
	if !strings.Contains(out, "state:          leader") || !strings.Contains(out, "digest:         d1g3st0000000000ffff") {
		t.Fatalf("cluster status:\n%s", out)
	}
}

func TestTopologyVerbs(t *testing.T) {
	f := newFakeMDM(t)
	mustRun(t, f.addr(), "pd", "create", "pd1")
	mustRun(t, f.addr(), "faultset", "create", "fs1", "-pd", "pd1")
	out := mustRun(t, f.addr(), "sds", "add", "sds1", "-pd", "pd1", "-faultset", "fs1", "-capacity-gb", "500",
		"-devices", "/dev/a, /dev/b", "-address", "10.0.0.1:9701")
	if out != "created SDS sds1 (id 3)\n" {
		t.Fatalf("sds add: %q", out)
	}
	b := f.lastBody(t, "POST /sds/add")
	if b["protection_domain_id"] != float64(1) || b["fault_set_id"] != float64(2) ||
		!reflect.DeepEqual(b["devices"], []any{"/dev/a", "/dev/b"}) {
		t.Fatalf("sds add body %v", b)
	}
	if out := mustRun(t, f.addr(), "sds", "maintenance", "enter", "sds1"); out != "SDS sds1 (id 3) is now maintenance\n" {
		t.Fatalf("sds maintenance enter: %q", out)
	}
	if out := mustRun(t, f.addr(), "sds", "maintenance", "exit", "sds1"); out != "SDS sds1 (id 3) is now up\n" {
		t.Fatalf("sds maintenance exit: %q", out)
	}
	if out := mustRun(t, f.addr(), "sds", "fail", "sds1"); out != "SDS sds1 (id 3) is now failed\n" {
		t.Fatalf("sds fail: %q", out)
	}
	out = mustRun(t, f.addr(), "sds", "list")
	if !strings.Contains(out, "3   sds1  failed  pd1  fs1        10.0.0.1:9701  500          /dev/a,/dev/b") {
		t.Fatalf("sds list:\n%s", out)
	}
	out = mustRun(t, f.addr(), "sds", "show", "sds1")
	if !strings.Contains(out, "fault set:         fs1") {
		t.Fatalf("sds show:\n%s", out)
	}
}

func TestEnvDefaults(t *testing.T) {
	f := newFakeMDM(t)
	t.Setenv(EnvMDM, deadAddr(t)+","+f.addr())
	t.Setenv(EnvToken, "tok")
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"pd", "list"}, &out, &errOut); code != 0 || out.String() != "no protection domains\n" {
		t.Fatalf("exit %d stdout %q stderr %q", code, out.String(), errOut.String())
	}
}

func TestReorderArgs(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("size-gb", 0, "")
	fs.Bool("thick", false, "")
	fs.String("pool", "", "")
	got := reorderArgs(fs, []string{"vol1", "-size-gb", "8", "--thick", "-pool=p1", "extra", "--", "-literal"})
	want := []string{"-size-gb", "8", "--thick", "-pool=p1", "--", "vol1", "extra", "-literal"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reorderArgs = %q, want %q", got, want)
	}
}

func TestStatusHungReplicaTimesOut(t *testing.T) {
	a, b, _ := replicaSet(t)
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer hung.Close()
	hungAddr := strings.TrimPrefix(hung.URL, "http://")
	a.status.Peers[2].APIAddr = hungAddr
	b.status.Peers[2].APIAddr = hungAddr
	start := time.Now()
	out := mustRun(t, a.addr(), "status") // -timeout 300ms bounds each replica's answer
	if time.Since(start) > 2*time.Second {
		t.Fatalf("status waited %s for a hung replica", time.Since(start))
	}
	if !strings.Contains(out, "mdm-3 ("+hungAddr+"): timeout") || !strings.Contains(out, "quorum: DEGRADED") {
		t.Fatalf("status:\n%s", out)
	}
}
