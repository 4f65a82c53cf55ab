package gossip

import (
	"bytes"
	"io"
	"strings"
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
	// Our own failed joins are reported by joinSeeds; this catches the receiving side
	// (streams and packets from a peer with another key, or none).
	if bytes.Contains(line, []byte("memberlist:")) && !bytes.Contains(line, []byte("failed to join")) &&
		looksLikeKeyMismatch(string(line)) {
		b.mu.Lock()
		due := time.Since(b.lastHint) >= joinWarnEvery
		if due {
			b.lastHint = time.Now()
		}
		b.mu.Unlock()
		if due {
			text := oneLine(string(bytes.TrimSpace(line)))
			from := "unknown"
			if _, f, ok := strings.Cut(text, "from="); ok {
				from, _, _ = strings.Cut(f, " ")
			}
			b.p.log.Warn("gossip from "+from+" could not be decrypted"+keyHint, "detail", text)
		}
	}
	return n, err
}
