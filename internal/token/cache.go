package token

import (
	"fmt"
	"sync"
	"time"
)

// Cache remembers the verified token of each volume for one connection, so that the SDS checks
// the signature once per token rather than once per IO. It is safe for concurrent use.
//
// A cached token is trusted until it expires or until any key or map generation known to the
// Verifier changes; the next Authorize after such a change verifies it again in full, so a
// generation bump or key removal revokes cached tokens as promptly as fresh ones.
type Cache struct {
	v  *Verifier
	mu sync.RWMutex
	by map[int64]cacheEntry // by volume id
}

type cacheEntry struct {
	tok   Token
	stamp uint64 // v.stamp() when tok was last verified
}

// NewCache returns an empty cache that verifies with v.
func NewCache(v *Verifier) *Cache {
	return &Cache{v: v, by: make(map[int64]cacheEntry)}
}

// Register verifies t for read access to its own volume and makes it the connection's token for
// that volume, replacing the previous one (a renewal, or a switch between read-only and
// read-write). A token that fails verification is not registered and leaves the previous one in
// place.
func (c *Cache) Register(t Token, now time.Time) error {
	stamp := c.v.stamp()
	if err := c.v.Verify(t, t.Claims.VolumeID, false, now); err != nil {
		return err
	}
	c.mu.Lock()
	c.by[t.Claims.VolumeID] = cacheEntry{tok: t, stamp: stamp}
	c.mu.Unlock()
	return nil
}

// Authorize checks that the token registered for volumeID allows an IO (a write if write) at
// time now, and returns its claims (for accounting). Without a registered token it returns
// ErrNoToken; otherwise the errors are Verify's.
func (c *Cache) Authorize(volumeID int64, write bool, now time.Time) (Claims, error) {
	c.mu.RLock()
	e, ok := c.by[volumeID]
	c.mu.RUnlock()
	if !ok {
		return Claims{}, fmt.Errorf("volume %d: %w", volumeID, ErrNoToken)
	}
	stamp := c.v.stamp()
	if e.stamp == stamp {
		if err := checkLive(&e.tok.Claims, write, now); err != nil {
			return Claims{}, err
		}
		return e.tok.Claims, nil
	}
	// Keys or generations moved since the token was verified: verify it in full again.
	if err := c.v.Verify(e.tok, volumeID, write, now); err != nil {
		return Claims{}, err
	}
	c.mu.Lock()
	if cur, ok := c.by[volumeID]; ok && cur.tok == e.tok && cur.stamp < stamp {
		c.by[volumeID] = cacheEntry{tok: e.tok, stamp: stamp}
	}
	c.mu.Unlock()
	return e.tok.Claims, nil
}

// Forget drops the token registered for volumeID.
func (c *Cache) Forget(volumeID int64) {
	c.mu.Lock()
	delete(c.by, volumeID)
	c.mu.Unlock()
}
