package gossip

import (
	"bytes"
	"io"
	"sync"
	"time"
)

// logBridge carries memberlist's standard-library log lines into hclog (levels inferred
// from "[WARN]" etc.) and, when a line shows a peer's traffic could not be decrypted,
// adds one plain-words warning (at most every 5 s) pointing at the gossip key.
type logBridge struct {
	p    *Pool
	next io.Writer

	mu       sync.Mutex
	lastHint time.Time
}

func (b *logBridge) Write(line []byte) (int, error) {
	n, err := b.next.Write(line)
	if bytes.Contains(line, []byte("memberlist:")) && looksLikeKeyMismatch(string(line)) {
		b.mu.Lock()
		due := time.Since(b.lastHint) >= joinWarnEvery
		if due {
			b.lastHint = time.Now()
		}
		b.mu.Unlock()
		if due {
			b.p.log.Warn("a peer's gossip could not be decrypted"+keyHint,
				"detail", oneLine(string(bytes.TrimSpace(line))))
		}
	}
	return n, err
}
