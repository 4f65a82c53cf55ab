package token

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Verifier checks tokens against a Keyring and the current map generation of each volume.
// It is safe for concurrent use; Verify takes no lock and does not allocate on success.
type Verifier struct {
	keys *Keyring

	mu      sync.Mutex // serializes SetGeneration
	gens    atomic.Pointer[map[int64]int64]
	version atomic.Uint64 // bumped whenever a generation moves
}

// NewVerifier returns a verifier that looks signing keys up in keys. Changes to keys take effect
// immediately, including for tokens already cached by a Cache.
func NewVerifier(keys *Keyring) *Verifier {
	return &Verifier{keys: keys}
}

// SetGeneration records that volumeID's mapping is at generation gen: tokens carrying an older
// MapGeneration are refused with ErrRevoked from now on. Generations only move forward; a lower
// gen than the one known (a late or duplicated broadcast) is ignored.
func (v *Verifier) SetGeneration(volumeID, gen int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.gens.Load()
	if cur != nil {
		if old, ok := (*cur)[volumeID]; ok && old >= gen {
			return
		}
	}
	next := make(map[int64]int64)
	if cur != nil {
		for id, g := range *cur {
			next[id] = g
		}
	}
	next[volumeID] = gen
	v.gens.Store(&next)
	v.version.Add(1)
}

// Generation returns the minimum map generation accepted for volumeID (0 if never set).
func (v *Verifier) Generation(volumeID int64) int64 {
	m := v.gens.Load()
	if m == nil {
		return 0
	}
	return (*m)[volumeID]
}

// stamp changes whenever any key or generation changes; a Cache re-verifies when it does.
func (v *Verifier) stamp() uint64 {
	return v.keys.version.Load() + v.version.Load()
}

// Verify reports whether t authorizes an IO on volumeID at time now; write asks for write access.
// The checks, in order, and the error each failure wraps:
//
//	access mode is valid (or Peer)          ErrMalformed
//	KeyID is in the keyring                 ErrUnknownKey
//	MAC matches (constant time)             ErrBadSignature
//	not a Peer token                        ErrMalformed
//	token is for volumeID                   ErrWrongVolume
//	now is before ExpiresAt                 ErrExpired
//	MapGeneration >= the volume's current   ErrRevoked
//	not a write with a ReadOnly token       ErrReadOnly
//
// The signature is checked first so that a forged token learns nothing from the other checks.
func (v *Verifier) Verify(t Token, volumeID int64, write bool, now time.Time) error {
	c := &t.Claims
	if !c.Mode.valid() && c.Mode != Peer {
		return fmt.Errorf("token %d: access %v: %w", c.TokenID, c.Mode, ErrMalformed)
	}
	if err := v.signed(&t); err != nil {
		return err
	}
	if c.Mode == Peer { // after the signature, so a flipped mode byte reads as a forgery
		return fmt.Errorf("token %d is a peer token, which authorizes no volume IO: %w", c.TokenID, ErrMalformed)
	}
	return v.checkClaims(c, volumeID, write, now)
}

// VerifyPeer reports whether t is a Peer token signed with a key in the keyring and not expired
// at now: whether the connection that presented it comes from an SDS of the cluster. It wraps
// ErrMalformed (not a Peer token), ErrUnknownKey, ErrBadSignature or ErrExpired.
func (v *Verifier) VerifyPeer(t Token, now time.Time) error {
	c := &t.Claims
	if c.Mode != Peer {
		return fmt.Errorf("token %d: access %v, not a peer token: %w", c.TokenID, c.Mode, ErrMalformed)
	}
	if err := v.signed(&t); err != nil {
		return err
	}
	return checkLive(c, false, now)
}

// signed checks that t's key is in the keyring and its MAC matches (constant time).
func (v *Verifier) signed(t *Token) error {
	c := &t.Claims
	e := v.keys.entry(c.KeyID)
	if e == nil {
		return fmt.Errorf("token %d: key %d: %w", c.TokenID, c.KeyID, ErrUnknownKey)
	}
	if !e.check(c, &t.MAC) {
		return fmt.Errorf("token %d: %w", c.TokenID, ErrBadSignature)
	}
	return nil
}

// checkClaims runs the checks after the signature.
func (v *Verifier) checkClaims(c *Claims, volumeID int64, write bool, now time.Time) error {
	if c.VolumeID != volumeID {
		return fmt.Errorf("token %d is for volume %d, not %d: %w", c.TokenID, c.VolumeID, volumeID, ErrWrongVolume)
	}
	if err := checkLive(c, write, now); err != nil {
		return err
	}
	if gen := v.Generation(volumeID); c.MapGeneration < gen {
		return fmt.Errorf("token %d: map generation %d, volume %d is at %d: %w",
			c.TokenID, c.MapGeneration, volumeID, gen, ErrRevoked)
	}
	return nil
}

// checkLive checks expiry and access mode: the checks that do not depend on keys or generations.
func checkLive(c *Claims, write bool, now time.Time) error {
	if ms := now.UnixMilli(); ms >= c.ExpiresAt {
		return fmt.Errorf("token %d expired %s ago: %w", c.TokenID,
			time.Duration(ms-c.ExpiresAt)*time.Millisecond, ErrExpired)
	}
	if write && c.Mode != ReadWrite {
		return fmt.Errorf("token %d for volume %d: %w", c.TokenID, c.VolumeID, ErrReadOnly)
	}
	return nil
}
