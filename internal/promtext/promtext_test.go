package promtext

import (
	"strings"
	"testing"
)

func TestExposition(t *testing.T) {
	var b strings.Builder
	p := New(&b)
	p.Counter("pflex_sdc_ops_total", "IO requests by op.\nSecond line with a \\.")
	p.Sample("pflex_sdc_ops_total", 12, "node", "sdc-1", "volume", `a"b\c`+"\n", "op", "read")
	p.Gauge("pflex_up", "1.")
	p.Sample("pflex_up", 1)
	p.Sample("pflex_up", 0.25, "node", "x")
	p.Sample("pflex_up", 139358208, "node", "y")
	p.Sample("pflex_up", 1e300, "node", "z")
	want := "# HELP pflex_sdc_ops_total IO requests by op.\\nSecond line with a \\\\.\n" +
		"# TYPE pflex_sdc_ops_total counter\n" +
		`pflex_sdc_ops_total{node="sdc-1",volume="a\"b\\c\n",op="read"} 12` + "\n" +
		"# HELP pflex_up 1.\n# TYPE pflex_up gauge\npflex_up 1\n" +
		`pflex_up{node="x"} 0.25` + "\n" + `pflex_up{node="y"} 139358208` + "\n" + `pflex_up{node="z"} 1e+300` + "\n"
	if b.String() != want || p.Err() != nil {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	if err := Validate(b.String()); err != nil {
		t.Fatalf("Validate of its own output: %v", err)
	}
}

func TestValidateRefuses(t *testing.T) {
	for _, bad := range []string{
		"pflex_x 1\n", // no TYPE
		"# TYPE pflex_x counter\npflex_x one\n",
		"# TYPE pflex_x counter\npflex_x{node=\"a} 1\n",
		"# TYPE pflex_x counter\npflex_x{9node=\"a\"} 1\n",
		"# TYPE pflex_x histogram\npflex_x 1\n",
		"# TYPE pflex_x gauge\n\npflex_x 1\n",
	} {
		if Validate(bad) == nil {
			t.Errorf("Validate accepted %q", bad)
		}
	}
	if err := Validate("# TYPE s summary\ns_sum{a=\"x\\\"y\"} 1.5\ns_count 3\n"); err != nil {
		t.Errorf("a summary: %v", err)
	}
}

// GaugeOf and CounterOf write what the family and its one sample would.
func TestSingleSampleFamilies(t *testing.T) {
	var a, b strings.Builder
	pa, pb := New(&a), New(&b)
	pa.GaugeOf("pflex_g", "G.", 2, "node", "n")
	pa.CounterOf("pflex_c_total", "C.", 3, "node", "n")
	pb.Gauge("pflex_g", "G.")
	pb.Sample("pflex_g", 2, "node", "n")
	pb.Counter("pflex_c_total", "C.")
	pb.Sample("pflex_c_total", 3, "node", "n")
	if a.String() != b.String() {
		t.Fatalf("got\n%s\nwant\n%s", a.String(), b.String())
	}
}
