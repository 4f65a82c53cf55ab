// Package cli is the `pflex` admin command line: verbs that talk to the MDM admin API.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"pflex/internal/api"
)

// Exit codes of Run.
const (
	ExitOK    = 0
	ExitError = 1 // the request failed (API error, MDM unreachable, local IO)
	ExitUsage = 2 // the command line is wrong
)

// DefaultMDM is the MDM list used when neither -mdm nor PFLEX_MDM is given (the one-host layout).
const DefaultMDM = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"

// Environment variables that supply global flag defaults.
const (
	EnvMDM   = "PFLEX_MDM"
	EnvToken = "PFLEX_TOKEN"
)

// runFunc runs a verb with its positional arguments; its flags were bound by verb.define.
type runFunc func(ctx context.Context, s *session, args []string) error

// verb is one leaf command such as "vol create".
type verb struct {
	path     string // the words after "pflex"
	synopsis string // arguments and flags, for usage
	summary  string // one line
	minArgs  int
	maxArgs  int // -1: any number
	define   func(fs *flag.FlagSet) runFunc
}

// globals are the flags every verb accepts, before or after the verb.
type globals struct {
	mdm     string
	token   string
	json    bool
	timeout time.Duration
}

func (g *globals) register(fs *flag.FlagSet) {
	mdm := os.Getenv(EnvMDM)
	if mdm == "" {
		mdm = DefaultMDM
	}
	fs.StringVar(&g.mdm, "mdm", mdm, "MDM API addresses, comma separated (env "+EnvMDM+")")
	fs.StringVar(&g.token, "token", os.Getenv(EnvToken), "admin bearer token (env "+EnvToken+")")
	fs.BoolVar(&g.json, "json", false, "print the JSON the API returned")
	fs.DurationVar(&g.timeout, "timeout", api.DefaultRetryDeadline, "how long to keep retrying through MDM failover")
}

var globalTakesValue = map[string]bool{"mdm": true, "token": true, "timeout": true, "json": false}

// usageError is a wrong command line: exit code 2.
type usageError struct {
	verb string // "vol create", or "" for the top level
	msg  string
}

func (e *usageError) Error() string { return e.msg }

func usagef(v, format string, args ...any) error {
	return &usageError{verb: v, msg: fmt.Sprintf(format, args...)}
}

// Run executes one pflex admin command. args exclude the program name.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	inv := parseInvocation(args)
	switch {
	case inv.help && inv.leaf == nil && len(inv.rest) == 0:
		printGroupUsage(stdout, inv.words)
		return ExitOK
	case inv.leaf == nil && len(inv.words) == 0 && len(inv.rest) == 0:
		printGroupUsage(stderr, nil)
		return ExitUsage
	case inv.leaf == nil:
		if len(inv.rest) > 0 && strings.HasPrefix(inv.rest[0], "-") {
			fmt.Fprintf(stderr, "pflex: flag provided but not defined: %s\n\n", inv.rest[0])
		} else if len(inv.rest) > 0 {
			what := strings.TrimSpace("pflex " + strings.Join(append(slices.Clone(inv.words), inv.rest[0]), " "))
			fmt.Fprintf(stderr, "pflex: unknown command %q\n\n", what)
		} else {
			fmt.Fprintf(stderr, "pflex: %q needs a subcommand\n\n", "pflex "+strings.Join(inv.words, " "))
		}
		printGroupUsage(stderr, inv.words)
		return ExitUsage
	}
	return runVerb(ctx, inv.leaf, append(inv.globalArgs, inv.rest...), stdout, stderr)
}

func runVerb(ctx context.Context, v *verb, args []string, stdout, stderr io.Writer) int {
	var g globals
	fs := flag.NewFlagSet("pflex "+v.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	run := v.define(fs)
	ordered := reorderArgs(fs, args)
	if err := fs.Parse(ordered); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printVerbUsage(stdout, v, fs)
			return ExitOK
		}
		return reportUsage(stderr, v, err.Error())
	}
	pos := fs.Args()
	if len(pos) < v.minArgs {
		return reportUsage(stderr, v, "missing argument")
	}
	if v.maxArgs >= 0 && len(pos) > v.maxArgs {
		return reportUsage(stderr, v, fmt.Sprintf("unexpected argument %q", pos[v.maxArgs]))
	}
	s, err := newSession(g, stdout, stderr)
	if err != nil {
		return reportUsage(stderr, v, err.Error())
	}
	if err := run(ctx, s, pos); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			return reportUsage(stderr, v, ue.msg)
		}
		fmt.Fprintf(stderr, "pflex: %v\n", err)
		return ExitError
	}
	return ExitOK
}

func reportUsage(stderr io.Writer, v *verb, msg string) int {
	fmt.Fprintf(stderr, "pflex %s: %s\nusage: pflex %s %s\nrun 'pflex %s -h' for details\n",
		v.path, msg, v.path, v.synopsis, v.path)
	return ExitUsage
}

// invocation is a command line split into the verb path, global flags seen before the
// verb's last word, and the rest (the verb's own arguments and flags).
type invocation struct {
	words      []string
	leaf       *verb
	globalArgs []string
	rest       []string
	help       bool
}

func parseInvocation(args []string) invocation {
	var inv invocation
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if len(inv.words) == 0 && a == "help" && !inv.help {
			inv.help = true
			continue
		}
		if a == "--" {
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			name, hasValue := flagName(a)
			if name == "h" || name == "help" {
				inv.help = true
				continue
			}
			takesValue, global := globalTakesValue[name]
			if !global {
				break
			}
			inv.globalArgs = append(inv.globalArgs, a)
			if takesValue && !hasValue && i+1 < len(args) {
				i++
				inv.globalArgs = append(inv.globalArgs, args[i])
			}
			continue
		}
		next := append(slices.Clone(inv.words), a)
		if !isPathPrefix(next) {
			break
		}
		inv.words = next
		if v := findVerb(strings.Join(next, " ")); v != nil {
			inv.leaf = v
			i++
			break
		}
	}
	inv.rest = args[i:]
	if inv.leaf != nil && inv.help {
		inv.rest = append(inv.rest, "-h")
	}
	return inv
}

func flagName(a string) (name string, hasValue bool) {
	name = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
	if i := strings.IndexByte(name, '='); i >= 0 {
		return name[:i], true
	}
	return name, false
}

func findVerb(path string) *verb {
	for i := range verbs {
		if verbs[i].path == path {
			return &verbs[i]
		}
	}
	return nil
}

func isPathPrefix(words []string) bool {
	p := strings.Join(words, " ")
	for _, v := range verbs {
		if v.path == p || strings.HasPrefix(v.path, p+" ") {
			return true
		}
	}
	return false
}

// reorderArgs moves flags (and their values) in front of positional arguments, so that
// `vol create vol1 -size-gb 8` parses: the flag package stops at the first non-flag.
// Everything after "--" stays positional.
func reorderArgs(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name, hasValue := flagName(a)
		f := fs.Lookup(name)
		if f == nil || hasValue || isBoolFlag(f) {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return append(append(flags, "--"), pos...)
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// printGroupUsage lists the verbs under words (all verbs for the top level).
func printGroupUsage(w io.Writer, words []string) {
	prefix := strings.Join(words, " ")
	if prefix == "" {
		fmt.Fprint(w, "pflex: admin command line of the pflex block storage cluster\n\n")
	}
	fmt.Fprintln(w, "usage:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, v := range verbs {
		if prefix != "" && v.path != prefix && !strings.HasPrefix(v.path, prefix+" ") {
			continue
		}
		if prefix == "" {
			// The overview fits a terminal: what to type; what each verb does is one
			// `pflex help GROUP` away.
			fmt.Fprintf(tw, "  pflex %s %s\n", v.path, v.synopsis)
		} else {
			fmt.Fprintf(tw, "  pflex %s %s\n      %s\n", v.path, v.synopsis, v.summary)
		}
	}
	tw.Flush()
	if prefix == "" {
		fmt.Fprint(w, "\nrun 'pflex help GROUP' (pd, faultset, pool, sds, sdc, vol, rebuild, cluster) for what each verb does, 'pflex VERB -h' for its flags\n")
	}
	fmt.Fprint(w, globalUsage)
}

const globalUsage = `
global flags (before or after the verb):
  -mdm ADDRS    MDM API addresses, comma separated (env PFLEX_MDM, default ` + DefaultMDM + `)
  -token TOKEN  admin bearer token (env PFLEX_TOKEN)
  -json         print the JSON the API returned
  -timeout D    how long to keep retrying through MDM failover (default 30s)

Objects (PD, FS, POOL, SDS, SDC, VOL) are named by numeric id or by name.
`

func printVerbUsage(w io.Writer, v *verb, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: pflex %s %s\n\n%s\n", v.path, v.synopsis, v.summary)
	var own []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if _, global := globalTakesValue[f.Name]; !global {
			own = append(own, f)
		}
	})
	if len(own) > 0 {
		fmt.Fprintln(w, "\nflags:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range own {
			arg, usage := flag.UnquoteUsage(f)
			def := ""
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				def = fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(tw, "  -%s %s\t%s%s\n", f.Name, arg, usage, def)
		}
		tw.Flush()
	}
	fmt.Fprint(w, globalUsage)
}

// session is what a running verb needs: the API client, the output streams and the mode.
type session struct {
	api     *api.Client
	stdout  io.Writer
	stderr  io.Writer
	json    bool
	g       globals
	nameMap map[string]map[int64]string // display names per list route, filled lazily
}

func newSession(g globals, stdout, stderr io.Writer) (*session, error) {
	if g.timeout <= 0 {
		return nil, fmt.Errorf("-timeout must be positive")
	}
	c, err := api.NewClient(splitList(g.mdm), api.WithToken(g.token), api.WithRetryDeadline(g.timeout))
	if err != nil {
		return nil, fmt.Errorf("-mdm %q: %v", g.mdm, err)
	}
	return &session{api: c, stdout: stdout, stderr: stderr, json: g.json, g: g}, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
