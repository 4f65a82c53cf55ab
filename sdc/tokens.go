package sdc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/internal/api"
	"pflex/internal/token"
)

// issuedToken is one token the MDM issued for a volume. Connections remember the *issuedToken
// they registered (OpAuth), so a renewal is noticed by pointer comparison.
type issuedToken struct {
	tok       token.Token
	bytes     []byte
	issuedAt  time.Time // local clock, when the answer arrived
	expiresAt time.Time // issuedAt + the lifetime the MDM granted
}

// tokenSource keeps a valid IO token for one volume: it fetches one from the MDM leader when
// the volume is exported, renews it when half its lifetime has passed, and fetches a new one at
// once when an SDS refuses the current one (Invalidate). IO never waits for the MDM while the
// current token is valid. Concurrent requests for a new token share one fetch.
type tokenSource struct {
	ctx  context.Context // the volume's: ends fetches when the volume is closed
	mdm  MDM
	req  api.TokenRequest
	log  hclog.Logger
	lost func() // called once when the MDM says the volume is not mapped here

	issues atomic.Int64 // tokens issued to us: one per renewal period in steady state

	mu       sync.Mutex
	cur      *issuedToken
	fetching chan struct{} // non-nil while a fetch runs; closed when it ends
	lastErr  error
	unmapped bool
	changed  chan struct{} // wakes the renewal loop (cur replaced or invalidated); buffered 1
}

// minRenewal bounds how often a token is renewed, whatever lifetime the MDM grants.
const minRenewal = 20 * time.Millisecond

func newTokenSource(ctx context.Context, m MDM, req api.TokenRequest, log hclog.Logger, lost func()) *tokenSource {
	return &tokenSource{ctx: ctx, mdm: m, req: req, log: log, lost: lost, changed: make(chan struct{}, 1)}
}

// Get returns the current token, fetching one if there is none or it has expired.
func (s *tokenSource) Get(ctx context.Context) (*issuedToken, error) {
	for {
		s.mu.Lock()
		if s.unmapped {
			s.mu.Unlock()
			return nil, ErrUnmapped
		}
		if t := s.cur; t != nil && time.Now().Before(t.expiresAt) {
			s.mu.Unlock()
			return t, nil
		}
		ch := s.startFetchLocked()
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
		s.mu.Lock()
		t, err, unmapped := s.cur, s.lastErr, s.unmapped
		s.mu.Unlock()
		switch {
		case unmapped:
			return nil, ErrUnmapped
		case t != nil && time.Now().Before(t.expiresAt):
			return t, nil
		case err != nil:
			return nil, err
		}
	}
}

// Invalidate drops t if it is still the current token (an SDS refused it); the next Get fetches
// a new one. A token already replaced is left alone, so many IOs failing with the same token
// cause one fetch.
func (s *tokenSource) Invalidate(t *issuedToken) {
	s.mu.Lock()
	if s.cur == t && t != nil {
		s.cur = nil
		s.notifyLocked()
	}
	s.mu.Unlock()
}

// Current is the token held now (nil if none) and whether the volume was found unmapped.
func (s *tokenSource) Current() (*issuedToken, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.unmapped
}

// Issues is how many tokens the MDM issued to this source.
func (s *tokenSource) Issues() int64 { return s.issues.Load() }

// startFetchLocked starts a fetch unless one is running and returns the channel closed when it
// ends. s.mu must be held.
func (s *tokenSource) startFetchLocked() chan struct{} {
	if s.fetching != nil {
		return s.fetching
	}
	ch := make(chan struct{})
	s.fetching = ch
	go s.fetch(ch)
	return ch
}

// fetchTimeout bounds one fetch; IO waiting for it has its own deadline.
const fetchTimeout = 10 * time.Second

func (s *tokenSource) fetch(done chan struct{}) {
	ctx, cancel := context.WithTimeout(s.ctx, fetchTimeout)
	defer cancel()
	resp, err := s.mdm.IssueToken(ctx, s.req)
	var t *issuedToken
	if err == nil {
		t, err = parseIssued(resp, s.req.VolumeID)
	}
	s.mu.Lock()
	lost := false
	switch {
	case err == nil:
		s.issues.Add(1)
		s.cur, s.lastErr = t, nil
	case notMapped(err):
		lost = !s.unmapped
		s.unmapped, s.cur, s.lastErr = true, nil, err
	default:
		s.lastErr = err
	}
	s.fetching = nil
	s.notifyLocked()
	s.mu.Unlock()
	close(done)
	switch {
	case err == nil:
		s.log.Debug("IO token issued", "volume_id", s.req.VolumeID, "expires_in", time.Until(t.expiresAt).Round(time.Millisecond))
	case lost:
		s.log.Info("MDM refuses a token: the volume is no longer mapped here", "volume_id", s.req.VolumeID, "error", err)
		if s.lost != nil {
			s.lost()
		}
	case s.ctx.Err() == nil:
		s.log.Warn("IO token request failed", "volume_id", s.req.VolumeID, "error", err)
	}
}

func parseIssued(resp api.TokenResponse, volumeID int64) (*issuedToken, error) {
	tok, err := token.ParseString(resp.Token)
	if err != nil {
		return nil, fmt.Errorf("token from the MDM: %w", err)
	}
	if tok.Claims.VolumeID != volumeID {
		return nil, fmt.Errorf("token from the MDM is for volume %d, not %d", tok.Claims.VolumeID, volumeID)
	}
	now := time.Now()
	// The lifetime is measured from the claims' expiry against our clock; a clock behind the
	// MDM's only makes us renew early, one ahead of it is bounded below by minRenewal.
	life := time.UnixMilli(tok.Claims.ExpiresAt).Sub(now)
	if life < 2*minRenewal {
		life = 2 * minRenewal
	}
	return &issuedToken{tok: tok, bytes: tok.Bytes(), issuedAt: now, expiresAt: now.Add(life)}, nil
}

func (s *tokenSource) notifyLocked() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// run keeps a token until ctx ends: it fetches one at start, renews it when half its lifetime
// has passed, and on failure retries with backoff (the current token stays usable until it
// expires). It returns when ctx ends or the volume is found unmapped.
func (s *tokenSource) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		s.mu.Lock()
		cur, unmapped, fetching, lastErr := s.cur, s.unmapped, s.fetching, s.lastErr
		s.mu.Unlock()
		if unmapped {
			return
		}
		var wait time.Duration
		switch {
		case fetching != nil:
			select {
			case <-ctx.Done():
				return
			case <-fetching:
			}
			continue
		case cur == nil && lastErr != nil:
			wait = backoff
			backoff = min(backoff*2, 2*time.Second)
			s.mu.Lock()
			s.lastErr = nil // retry once the wait is over
			s.mu.Unlock()
		case cur == nil:
			s.renew(ctx)
			continue
		default:
			backoff = 50 * time.Millisecond
			renewAt := cur.issuedAt.Add(max(cur.expiresAt.Sub(cur.issuedAt)/2, minRenewal))
			wait = time.Until(renewAt)
			if wait <= 0 {
				s.renewFrom(ctx, cur)
				continue
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.changed:
			t.Stop()
		case <-t.C:
		}
	}
}

// renew starts a fetch and waits for it.
func (s *tokenSource) renew(ctx context.Context) {
	s.mu.Lock()
	ch := s.startFetchLocked()
	s.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-ch:
	}
}

// renewFrom fetches a successor of cur, keeping cur usable meanwhile. If the fetch fails, it
// waits a little before the loop tries again (until cur expires, and after).
func (s *tokenSource) renewFrom(ctx context.Context, cur *issuedToken) {
	s.renew(ctx)
	s.mu.Lock()
	failed := s.cur == cur && s.lastErr != nil
	s.mu.Unlock()
	if !failed {
		return
	}
	t := time.NewTimer(min(100*time.Millisecond, max(time.Until(cur.expiresAt)/4, time.Millisecond)))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
