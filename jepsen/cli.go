package jepsen

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Main is `pflex jepsen`: it parses flags, runs one test and prints the verdict. Exit status:
// 0 valid, 1 a violation (or an inconclusive check), 2 the harness could not run.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	d := DefaultOptions()
	fs := flag.NewFlagSet("pflex jepsen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	workload := fs.String("workload", d.Workload, "workload: "+strings.Join(Workloads(), ", "))
	nemesis := fs.String("nemesis", strings.Join(d.Nemeses, ","), "comma-separated faults ("+strings.Join(Nemeses(), ", ")+"), or none")
	o := Options{}
	fs.StringVar(&o.Backend, "backend", "local", "cluster: local (processes on loopback), netns (a network namespace per process; root), docker (containers of "+DefaultImage+"; root)")
	fs.DurationVar(&o.Time, "time", d.Time, "how long clients run while faults are injected")
	fs.DurationVar(&o.Recovery, "recovery", d.Recovery, "clients keep running this long after every fault is healed")
	fs.StringVar(&o.Image, "image", DefaultImage, "docker backend: the image (built FROM scratch from -bin when missing; `make image`)")
	fs.BoolVar(&o.RebuildImage, "rebuild-image", false, "docker backend: build -image from -bin even if it exists")
	fs.IntVar(&o.Clients, "clients", d.Clients, "concurrent clients")
	fs.IntVar(&o.Keys, "keys", d.Keys, "labels: label keys (registers); topology: PD names; block: 4 KiB blocks")
	fs.DurationVar(&o.OpTimeout, "op-timeout", d.OpTimeout, "per-request timeout (a timed-out write is an unknown outcome)")
	fs.DurationVar(&o.OpInterval, "op-interval", d.OpInterval, "a client waits up to this between operations")
	fs.DurationVar(&o.NemesisMin, "nemesis-min", d.NemesisMin, "least quiet time between faults")
	fs.DurationVar(&o.NemesisMax, "nemesis-max", d.NemesisMax, "most quiet time between faults")
	fs.DurationVar(&o.CheckTimeout, "check-timeout", d.CheckTimeout, "porcupine gives up after this (inconclusive)")
	fs.Int64Var(&o.Seed, "seed", 0, "random seed (0: from the clock)")
	fs.BoolVar(&o.StaleReads, "stale-reads", false, "labels: read with ?stale=1 (broken on purpose: the checker must fail)")
	fs.StringVar(&o.IOTimeout, "io-timeout", "", "block: the SDC's io_timeout (default: the SDC's, 30s)")
	fs.BoolVar(&o.KeepData, "keep-data", false, "keep the MDM data directories after a valid run")
	report := fs.String("report", "", "report directory (default jepsen-report/<time>-<workload>-<nemesis>)")
	bin := fs.String("bin", "", "pflex binary the MDMs run (default: this executable)")
	quiet := fs.Bool("q", false, "no progress lines")
	recheck := fs.String("check", "", "re-check the history of an earlier report directory with -workload's checker, and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Workload = *workload
	if *recheck != "" {
		return checkReport(*recheck, o.Workload, o.CheckTimeout, stdout, stderr)
	}
	if *nemesis != "" && *nemesis != "none" {
		o.Nemeses = strings.Split(*nemesis, ",")
	}
	o.Binary = *bin
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(stderr, "pflex jepsen: cannot find this executable; pass -bin:", err)
			return 2
		}
		o.Binary = exe
	}
	o.ReportDir = *report
	if o.ReportDir == "" {
		o.ReportDir = filepath.Join("jepsen-report", fmt.Sprintf("%s-%s-%s", time.Now().Format("20060102-150405"),
			o.Workload, strings.ReplaceAll(*nemesis, ",", "+")))
	}
	if !*quiet {
		o.Log = stderr
	}
	v, err := Run(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "pflex jepsen:", err)
		if v.ReportDir != "" {
			fmt.Fprintln(stderr, "pflex jepsen: report (node logs):", v.ReportDir)
		}
		return 2
	}
	fmt.Fprint(stdout, v.Summary())
	if !v.Valid {
		return 1
	}
	return 0
}

// checkReport re-runs a workload's checker on a report's history.jsonl.
func checkReport(dir, workload string, timeout time.Duration, stdout, stderr io.Writer) int {
	w, err := NewWorkload(workload)
	if err != nil {
		fmt.Fprintln(stderr, "pflex jepsen:", err)
		return 2
	}
	ops, err := ReadHistory(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		fmt.Fprintln(stderr, "pflex jepsen:", err)
		return 2
	}
	var client []Op
	for _, op := range ops {
		if op.Process != NemesisProcess {
			client = append(client, op)
		}
	}
	v := Verdict{Valid: true, Workload: workload, ReportDir: dir, Checks: w.Check(client, dir, timeout)}
	for _, c := range v.Checks {
		v.Valid = v.Valid && c.Valid && !c.Inconclusive
	}
	fmt.Fprint(stdout, v.Summary())
	if !v.Valid {
		return 1
	}
	return 0
}
