package jepsen

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// ErrNoProcess: no local pflex process matches.
var ErrNoProcess = errors.New("jepsen: no matching local pflex process")

// LocalProcess is a running `pflex <role> -config FILE` found in /proc: what a drill needs to
// SIGKILL it and to start it again the way it was started.
type LocalProcess struct {
	PID    int
	Argv   []string
	Cwd    string
	Env    []string
	Config string // absolute path of its config
	Stdout string // file its stdout went to ("" if not a regular file)
}

// FindLocalProcess scans /proc for `... <role> -config FILE` processes whose config file
// satisfies match (the config text is passed).
func FindLocalProcess(role string, match func(config string) bool) (*LocalProcess, error) {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		cfg := configArg(argv, role)
		if cfg == "" {
			continue
		}
		cwd, _ := os.Readlink(filepath.Join(d, "cwd"))
		if !filepath.IsAbs(cfg) {
			cfg = filepath.Join(cwd, cfg)
		}
		text, err := os.ReadFile(cfg)
		if err != nil || !match(string(text)) {
			continue
		}
		p := &LocalProcess{PID: pid, Argv: argv, Cwd: cwd, Config: cfg}
		if env, err := os.ReadFile(filepath.Join(d, "environ")); err == nil {
			p.Env = strings.Split(strings.TrimRight(string(env), "\x00"), "\x00")
		}
		if out, err := os.Readlink(filepath.Join(d, "fd", "1")); err == nil {
			if st, err := os.Stat(out); err == nil && st.Mode().IsRegular() {
				p.Stdout = out
			}
		}
		return p, nil
	}
	return nil, ErrNoProcess
}

// configArg returns FILE of argv = [.../pflex, role, ..., -config FILE] (or -config=FILE,
// --config), or "".
func configArg(argv []string, role string) string {
	if len(argv) < 3 || !strings.Contains(filepath.Base(argv[0]), "pflex") || argv[1] != role {
		return ""
	}
	for i := 2; i < len(argv); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(argv[i], "-"), "=")
		if !strings.HasPrefix(argv[i], "-") || name != "config" {
			continue
		}
		if hasVal {
			return val
		}
		if i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return ""
}

// hclString returns the value of `key = "value"` in an HCL config (top level or not).
func hclString(config, key string) string {
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(key) + `\s*=\s*"([^"]*)"`).FindStringSubmatch(config)
	if m == nil {
		return ""
	}
	return m[1]
}

// sameAddr: a configured listen address (maybe 0.0.0.0:port or :port) serves endpoint.
func sameAddr(listen, endpoint string) bool {
	lh, lp, err1 := net.SplitHostPort(listen)
	eh, ep, err2 := net.SplitHostPort(endpoint)
	if err1 != nil || err2 != nil || lp != ep {
		return false
	}
	return lh == eh || lh == "" || lh == "0.0.0.0" || lh == "::" || (lh == "localhost" && eh == "127.0.0.1")
}

// Kill SIGKILLs the process.
func (p *LocalProcess) Kill() error { return syscall.Kill(p.PID, syscall.SIGKILL) }

// Restart starts the process again with the same argv, working directory and environment, its
// output appended to the file it wrote to before, in a session of its own so that it outlives
// the drill.
func (p *LocalProcess) Restart() error {
	cmd := exec.Command(p.Argv[0], p.Argv[1:]...)
	cmd.Dir, cmd.Env = p.Cwd, p.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if p.Stdout != "" {
		f, err := os.OpenFile(p.Stdout, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("jepsen: restart %v: %w", p.Argv, err)
	}
	go cmd.Wait() // reap it if it exits while the drill runs
	return nil
}
