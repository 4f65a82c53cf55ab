package gossip

import (
	"math/rand/v2"
	"net"
	"strings"
	"time"
)

const (
	// tcpTimeout bounds one join (push/pull) attempt and TCP fallback pings.
	tcpTimeout = 5 * time.Second
	// reconnectInterval is how often a dead (not left) member is re-dialled, which
	// heals a partition after both sides declared each other dead.
	reconnectInterval = 10 * time.Second
)

// keyHint is appended to join failures that look like a key mismatch.
const keyHint = " — is the gossip key the same on every node?"

// joinLoop retries the Join list while this node has no live peer (at start, or after
// losing every peer), and now and then re-dials dead members. It runs until Shutdown.
func (p *Pool) joinLoop() {
	defer close(p.done)
	t := time.NewTicker(p.cfg.JoinRetryInterval)
	defer t.Stop()
	lastWarn := make(map[string]time.Time)
	joined := false
	lastReconnect := time.Now()
	for {
		if !p.left.Load() {
			if p.ml.NumMembers() <= 1 {
				if p.joinSeeds(lastWarn, joined) {
					joined = true
				}
			} else if time.Since(lastReconnect) >= reconnectInterval {
				lastReconnect = time.Now()
				p.reconnectDead()
			}
		}
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// joinSeeds tries each seed that is not this node; true once a peer is reached.
func (p *Pool) joinSeeds(lastWarn map[string]time.Time, rejoin bool) bool {
	for _, seed := range p.seeds() {
		select {
		case <-p.stop:
			return false
		default:
		}
		_, err := p.ml.Join([]string{seed})
		if err == nil && p.ml.NumMembers() > 1 {
			verb := "joined gossip pool"
			if rejoin {
				verb = "rejoined gossip pool"
			}
			p.log.Info(verb, "via", seed, "members", p.ml.NumMembers())
			clear(lastWarn)
			return true
		}
		if err == nil {
			p.log.Debug("join reached only this node", "seed", seed)
			continue
		}
		if time.Since(lastWarn[seed]) < joinWarnEvery {
			continue
		}
		lastWarn[seed] = time.Now()
		msg := "gossip join to " + seed + " failed: " + joinErrText(err)
		if looksLikeKeyMismatch(err.Error()) {
			msg += keyHint
		} else {
			msg += " (retrying every " + p.cfg.JoinRetryInterval.String() + ")"
		}
		p.log.Warn(msg)
	}
	return false
}

// seeds is the Join list minus entries that are obviously this node.
func (p *Pool) seeds() []string {
	self := p.Addr()
	_, selfPort, _ := splitHostPort(self)
	var out []string
	for _, s := range p.cfg.Join {
		s = strings.TrimSpace(s)
		if s == self || s == p.cfg.BindAddr || s == p.cfg.AdvertiseAddr {
			continue
		}
		if h, port, err := splitHostPort(s); err == nil && port == selfPort && isLocalIP(h) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// reconnectDead re-dials one random dead member: after a partition heals, each side
// otherwise keeps the other as dead forever.
func (p *Pool) reconnectDead() {
	var dead []string
	p.mu.Lock()
	for _, m := range p.members {
		if m.State == StateDead {
			dead = append(dead, m.Addr)
		}
	}
	p.mu.Unlock()
	if len(dead) == 0 {
		return
	}
	addr := dead[rand.IntN(len(dead))]
	if _, err := p.ml.Join([]string{addr}); err != nil {
		p.log.Debug("reconnect to dead member failed", "addr", addr, "error", oneLine(err.Error()))
	}
}

// isLocalIP reports whether host is an IP address of this machine.
func isLocalIP(host string) bool {
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// looksLikeKeyMismatch recognises memberlist's errors for a wrong key (cannot decrypt),
// a missing key (plain text to an encrypted pool) and the reverse.
func looksLikeKeyMismatch(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "decrypt") || strings.Contains(s, "encrypt")
}

// joinErrText strips memberlist's one-seed error list down to the cause.
func joinErrText(err error) string {
	s := oneLine(err.Error())
	s = strings.TrimPrefix(s, "1 error occurred: * ")
	if rest, ok := strings.CutPrefix(s, "failed to join "); ok {
		if _, cause, ok := strings.Cut(rest, ": "); ok {
			s = cause
		}
	}
	return s
}

// oneLine flattens memberlist's multi-line error lists.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}
