package token

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"
)

// KeySize is the length of keys made by NewKey.
const KeySize = 32

// MinKeySize is the shortest key Keyring.Add accepts.
const MinKeySize = 16

// NewKey returns KeySize random bytes from crypto/rand, for use as a signing key.
func NewKey() []byte {
	k := make([]byte, KeySize)
	rand.Read(k) // never returns an error; the runtime aborts if the OS fails to supply randomness
	return k
}

// Keyring maps key ids to signing keys. It is safe for concurrent use; lookups take no lock.
// The zero value is an empty keyring ready to use.
type Keyring struct {
	mu      sync.Mutex // serializes writers
	keys    atomic.Pointer[map[uint32]*keyEntry]
	version atomic.Uint64 // bumped on every change; lets a Cache notice a removed or replaced key
}

// keyEntry holds a key and a pool of HMAC states keyed with it, so that verifying does not
// re-derive the HMAC pads or allocate.
type keyEntry struct {
	key  []byte
	macs sync.Pool // *macState
}

type macState struct {
	h   hash.Hash
	msg [ClaimsSize]byte
	sum [MACSize]byte
}

func newKeyEntry(key []byte) *keyEntry {
	e := &keyEntry{key: append([]byte(nil), key...)}
	e.macs.New = func() any { return &macState{h: hmac.New(sha256.New, e.key)} }
	return e
}

// check reports whether mac is the HMAC of c under e's key, in constant time.
func (e *keyEntry) check(c *Claims, mac *[MACSize]byte) bool {
	s := e.macs.Get().(*macState)
	s.h.Reset()
	s.h.Write(c.appendTo(s.msg[:0]))
	ok := hmac.Equal(s.h.Sum(s.sum[:0]), mac[:])
	e.macs.Put(s)
	return ok
}

// Add installs key under id, replacing any key with that id. The keyring keeps a copy.
func (k *Keyring) Add(id uint32, key []byte) error {
	if len(key) < MinKeySize {
		return fmt.Errorf("token: key %d is %d bytes, want at least %d", id, len(key), MinKeySize)
	}
	k.update(func(m map[uint32]*keyEntry) { m[id] = newKeyEntry(key) })
	return nil
}

// Remove forgets the key with the given id; tokens signed with it stop verifying.
func (k *Keyring) Remove(id uint32) {
	k.update(func(m map[uint32]*keyEntry) { delete(m, id) })
}

// Key returns a copy of the key with the given id.
func (k *Keyring) Key(id uint32) ([]byte, bool) {
	e := k.entry(id)
	if e == nil {
		return nil, false
	}
	return append([]byte(nil), e.key...), true
}

func (k *Keyring) entry(id uint32) *keyEntry {
	m := k.keys.Load()
	if m == nil {
		return nil
	}
	return (*m)[id]
}

// update applies f to a copy of the key map and publishes it. Keys change rarely; readers never lock.
func (k *Keyring) update(f func(map[uint32]*keyEntry)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	next := make(map[uint32]*keyEntry)
	if m := k.keys.Load(); m != nil {
		for id, e := range *m {
			next[id] = e
		}
	}
	f(next)
	k.keys.Store(&next)
	k.version.Add(1)
}
