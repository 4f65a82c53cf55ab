// Command pflex runs every pflex role and the admin CLI from one static binary.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"pflex/internal/cli"
	"pflex/mdm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "mdm" {
		os.Exit(runMDM(ctx, args[1:]))
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
