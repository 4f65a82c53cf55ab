package nbd

import (
	"io"
	"os"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// testLogger logs through t, and keeps quiet after the test ends
// (connections may still be closing).
func testLogger(t testing.TB) hclog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	var out io.Writer = w
	level := hclog.Debug
	if os.Getenv("NBD_TEST_QUIET") != "" {
		level = hclog.Warn
	}
	return hclog.New(&hclog.LoggerOptions{Output: out, Level: level})
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}
