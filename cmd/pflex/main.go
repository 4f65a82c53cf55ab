// Command pflex runs every pflex role and the admin CLI from one static binary.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"pflex/internal/cli"
	"pflex/jepsen"
	"pflex/mdm"
	"pflex/sdc"
	"pflex/sds"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "mdm" {
		os.Exit(runMDM(ctx, args[1:]))
	}
	if len(args) > 0 && args[0] == "sds" && isServiceArgs(args[1:]) {
		os.Exit(runSDS(ctx, args[1:]))
	}
	if len(args) > 0 && args[0] == "sdc" && isServiceArgs(args[1:]) {
		os.Exit(runSDC(ctx, args[1:]))
	}
	if len(args) > 0 && args[0] == "jepsen" {
		os.Exit(jepsen.Main(ctx, args[1:], os.Stdout, os.Stderr))
	}
	if len(args) > 0 && args[0] == "healthcheck" {
		os.Exit(jepsen.HealthcheckMain(args[1:], os.Stderr))
	}
	if len(args) > 0 && args[0] == "drill" {
		os.Exit(jepsen.DrillMain(ctx, args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(cli.Run(ctx, args, os.Stdout, os.Stderr))
}

func runMDM(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("pflex mdm", flag.ContinueOnError)
	path := fs.String("config", "", "MDM configuration file (HCL), e.g. configs/local/mdm1.hcl")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(os.Stderr, "pflex mdm: -config FILE is required")
		return 2
	}
	cfg, err := mdm.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pflex mdm:", err)
		return 2
	}
	if err := mdm.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "pflex mdm:", err)
		return 1
	}
	return 0
}

// isServiceArgs tells `pflex sds -config FILE` (run the service) from the admin verbs of the
// same group (`pflex sds add ...`, `pflex sds list`, `pflex sds -h`), which go to the CLI.
func isServiceArgs(args []string) bool {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "config" {
			return true
		}
	}
	return false
}

func runSDS(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("pflex sds", flag.ContinueOnError)
	path := fs.String("config", "", "SDS configuration file (HCL), e.g. configs/local/sds1.hcl")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(os.Stderr, "pflex sds: -config FILE is required")
		return 2
	}
	cfg, err := sds.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pflex sds:", err)
		return 2
	}
	if err := sds.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "pflex sds:", err)
		return 1
	}
	return 0
}

func runSDC(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("pflex sdc", flag.ContinueOnError)
	path := fs.String("config", "", "SDC configuration file (HCL), e.g. configs/local/sdc1.hcl")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(os.Stderr, "pflex sdc: -config FILE is required")
		return 2
	}
	cfg, err := sdc.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pflex sdc:", err)
		return 2
	}
	if err := sdc.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "pflex sdc:", err)
		return 1
	}
	return 0
}
