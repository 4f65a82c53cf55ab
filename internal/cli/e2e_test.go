package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pflex/internal/cli"
	"pflex/mdm/mdmtest"
)

// The CLI against a real three-MDM cluster on loopback.
func TestCLIAgainstRealCluster(t *testing.T) {
	c := mdmtest.StartCluster(t, 3)
	var addrs []string
	for _, m := range c.Members {
		addrs = append(addrs, m.Cfg.APIAddr)
	}
	mdmList := strings.Join(addrs, ",")
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := cli.Run(context.Background(), append([]string{"-mdm", mdmList, "-timeout", "10s"}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	must := func(args ...string) string {
		t.Helper()
		code, out, errOut := run(args...)
		if code != 0 {
			t.Fatalf("pflex %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	must("pd", "create", "pd1")
	must("faultset", "create", "fs1", "-pd", "pd1")
	must("pool", "create", "pool1", "-pd", "pd1", "-capacity-gb", "100")
	must("sds", "add", "sds1", "-pd", "pd1", "-capacity-gb", "50", "-devices", "/dev/vdb,/dev/vdc", "-faultset", "fs1")
	must("sdc", "add", "sdc1")
	must("vol", "create", "vol1", "-size-gb", "8", "-pool", "pool1")
	must("vol", "map", "vol1", "sdc1", "-readonly")
	must("vol", "extend", "vol1", "-size-gb", "16")
	must("vol", "label", "set", "vol1", "owner", "alice", "-expect", "")
	if out := must("vol", "label", "get", "vol1", "owner"); !strings.Contains(out, "alice") {
		t.Fatalf("label get: %s", out)
	}
	if out := must("vol", "show", "vol1"); !strings.Contains(out, "16") || !strings.Contains(out, "readOnly") {
		t.Fatalf("vol show: %s", out)
	}
	// Plain-words errors with a non-zero exit.
	if code, _, errOut := run("vol", "create", "vol1", "-size-gb", "8", "-pool", "pool1"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Fatalf("duplicate: %d %s", code, errOut)
	}
	if code, _, errOut := run("vol", "label", "set", "vol1", "owner", "bob", "-expect", "carol"); code != 1 || !strings.Contains(errOut, "412") {
		t.Fatalf("cas mismatch: %d %s", code, errOut)
	}
	if code, _, errOut := run("pd", "delete", "pd1"); code != 1 || !strings.Contains(errOut, "409") {
		t.Fatalf("delete non-empty pd: %d %s", code, errOut)
	}
	out := must("status")
	for _, want := range []string{"leader", "mdm-1", "mdm-2", "mdm-3", "volumes"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}

	if out := must("cluster", "members"); !strings.Contains(out, "MDM") || !strings.Contains(out, "voter") {
		t.Fatalf("cluster members:\n%s", out)
	}

	// Backup, change, restore.
	backup := filepath.Join(t.TempDir(), "backup.db")
	must("cluster", "snapshot", "save", backup)
	if fi, err := os.Stat(backup); err != nil || fi.Size() == 0 {
		t.Fatalf("backup file: %v", err)
	}
	must("vol", "unmap", "vol1", "sdc1")
	must("vol", "delete", "vol1")
	must("cluster", "snapshot", "restore", backup)
	if out := must("vol", "list"); !strings.Contains(out, "vol1") {
		t.Fatalf("vol list after restore: %s", out)
	}

	// Leader kill: the CLI retries through the failover.
	leader := c.WaitLeader(5 * time.Second)
	c.Kill(leader)
	must("pd", "create", "pd2")
	if out := must("pd", "list", "--json"); !strings.Contains(out, `"pd2"`) {
		t.Fatalf("json list: %s", out)
	}
}
