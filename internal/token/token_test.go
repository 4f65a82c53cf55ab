package token

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

var testNow = time.UnixMilli(1_700_000_000_000)

func testClaims() Claims {
	return Claims{
		TokenID:       42,
		VolumeID:      7,
		SDCID:         3,
		Mode:          ReadWrite,
		MapGeneration: 5,
		ExpiresAt:     testNow.Add(time.Minute).UnixMilli(),
		KeyID:         1,
	}
}

// setup returns a verifier knowing key 1 and a token for testClaims signed with it.
func setup(t testing.TB) (*Verifier, Token, []byte) {
	t.Helper()
	var kr Keyring
	key := NewKey()
	if err := kr.Add(1, key); err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(&kr)
	v.SetGeneration(7, 5)
	return v, Sign(testClaims(), key), key
}

func TestRoundTrip(t *testing.T) {
	_, tok, _ := setup(t)
	b := tok.Bytes()
	if len(b) != Size {
		t.Fatalf("Bytes: %d bytes, want %d", len(b), Size)
	}
	got, err := Parse(b)
	if err != nil || got != tok {
		t.Fatalf("Parse(Bytes) = %+v, %v; want %+v", got, err, tok)
	}
	s := tok.String()
	if strings.ContainsAny(s, "+/=") {
		t.Fatalf("String %q is not unpadded base64url", s)
	}
	got, err = ParseString(s)
	if err != nil || got != tok {
		t.Fatalf("ParseString(String) = %+v, %v", got, err)
	}
	// JSON through TextMarshaler.
	type msg struct{ Token Token }
	j, err := json.Marshal(msg{tok})
	if err != nil {
		t.Fatal(err)
	}
	var m msg
	if err := json.Unmarshal(j, &m); err != nil || m.Token != tok {
		t.Fatalf("json round trip: %+v, %v (json %s)", m.Token, err, j)
	}
}

func TestEncodingIsCanonical(t *testing.T) {
	// The layout is a compatibility promise: pin it.
	c := Claims{TokenID: 0x0102030405060708, VolumeID: 9, SDCID: -1, Mode: ReadOnly,
		MapGeneration: 2, ExpiresAt: 3, KeyID: 0xaabbccdd}
	tok := Token{Claims: c}
	b := tok.Bytes()[:ClaimsSize]
	want := []byte{1,
		1, 2, 3, 4, 5, 6, 7, 8,
		0, 0, 0, 0, 0, 0, 0, 9,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		1,
		0, 0, 0, 0, 0, 0, 0, 2,
		0, 0, 0, 0, 0, 0, 0, 3,
		0xaa, 0xbb, 0xcc, 0xdd}
	if !bytes.Equal(b, want) {
		t.Fatalf("encoding\n got %x\nwant %x", b, want)
	}
}

func TestParseErrors(t *testing.T) {
	_, tok, _ := setup(t)
	good := tok.Bytes()
	badVersion := append([]byte(nil), good...)
	badVersion[0] = 2
	badMode := append([]byte(nil), good...)
	badMode[25] = 0
	for name, b := range map[string][]byte{
		"empty": nil, "short": good[:Size-1], "long": append(good, 0),
		"version": badVersion, "mode": badMode,
	} {
		if _, err := Parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse err = %v, want ErrMalformed", name, err)
		}
	}
	for name, s := range map[string]string{
		"empty": "", "short": tok.String()[1:], "alphabet": "*" + tok.String()[1:],
		"padded": tok.String()[:len(tok.String())-1] + "=",
	} {
		if _, err := ParseString(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParseString err = %v, want ErrMalformed", name, err)
		}
	}
	if _, err := Parse(badVersion); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("version error does not name the version: %v", err)
	}
}

func TestVerify(t *testing.T) {
	v, tok, key := setup(t)
	if err := v.Verify(tok, 7, true, testNow); err != nil {
		t.Fatalf("good token: %v", err)
	}
	ro := testClaims()
	ro.Mode = ReadOnly
	roTok := Sign(ro, key)
	if err := v.Verify(roTok, 7, false, testNow); err != nil {
		t.Fatalf("read-only token, read: %v", err)
	}
	other := testClaims()
	other.KeyID = 2
	otherKey := Sign(other, NewKey())
	newer := testClaims()
	newer.MapGeneration = 6
	for _, tc := range []struct {
		name  string
		tok   Token
		vol   int64
		write bool
		now   time.Time
		want  error
	}{
		{"expired", tok, 7, false, time.UnixMilli(tok.Claims.ExpiresAt), ErrExpired},
		{"wrong volume", tok, 8, false, testNow, ErrWrongVolume},
		{"unknown key", otherKey, 7, false, testNow, ErrUnknownKey},
		{"read-only write", roTok, 7, true, testNow, ErrReadOnly},
		{"wrong key bytes", Sign(testClaims(), NewKey()), 7, false, testNow, ErrBadSignature},
		{"invalid mode", Token{Claims: Claims{KeyID: 1}}, 7, false, testNow, ErrMalformed},
		{"future generation ok", Sign(newer, key), 7, true, testNow, nil},
	} {
		if err := v.Verify(tc.tok, tc.vol, tc.write, tc.now); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// A Peer token passes VerifyPeer and authorizes no volume IO; no other token passes VerifyPeer.
func TestPeerTokens(t *testing.T) {
	v, tok, key := setup(t)
	pc := Claims{TokenID: 9, Mode: Peer, ExpiresAt: testNow.Add(time.Minute).UnixMilli(), KeyID: 1}
	peer := Sign(pc, key)
	parsed, err := Parse(peer.Bytes())
	if err != nil || parsed != peer {
		t.Fatalf("parse of a peer token: %+v %v", parsed, err)
	}
	if err := v.VerifyPeer(parsed, testNow); err != nil {
		t.Fatalf("peer token: %v", err)
	}
	if err := v.Verify(peer, 0, false, testNow); !errors.Is(err, ErrMalformed) {
		t.Fatalf("peer token for volume IO: %v", err)
	}
	forged := peer
	forged.MAC[3] ^= 1
	other := pc
	other.KeyID = 2
	for name, tc := range map[string]struct {
		tok  Token
		now  time.Time
		want error
	}{
		"volume token": {tok, testNow, ErrMalformed},
		"forged":       {forged, testNow, ErrBadSignature},
		"unknown key":  {Sign(other, key), testNow, ErrUnknownKey},
		"expired":      {peer, time.UnixMilli(pc.ExpiresAt), ErrExpired},
	} {
		if err := v.VerifyPeer(tc.tok, tc.now); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

// TestForgery flips every bit of the binary token: each must be refused.
func TestForgery(t *testing.T) {
	v, tok, _ := setup(t)
	good := tok.Bytes()
	for i := range good {
		for bit := range 8 {
			b := append([]byte(nil), good...)
			b[i] ^= 1 << bit
			f, err := Parse(b)
			if err != nil {
				continue // refused at parse (version or mode byte)
			}
			if err := v.Verify(f, f.Claims.VolumeID, false, testNow); err == nil {
				t.Fatalf("byte %d bit %d flipped: forged token accepted", i, bit)
			} else if !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("byte %d bit %d flipped: err = %v, want ErrBadSignature or ErrUnknownKey", i, bit, err)
			}
		}
	}
}

func TestRevocation(t *testing.T) {
	v, tok, _ := setup(t)
	v.SetGeneration(7, 6)
	if err := v.Verify(tok, 7, false, testNow); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after bump: err = %v, want ErrRevoked", err)
	}
	v.SetGeneration(7, 4) // a late, older broadcast does not un-revoke
	if g := v.Generation(7); g != 6 {
		t.Fatalf("generation went back to %d", g)
	}
	if err := v.Verify(tok, 7, false, testNow); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after older broadcast: err = %v, want ErrRevoked", err)
	}
	if g := v.Generation(99); g != 0 {
		t.Fatalf("unknown volume generation %d", g)
	}
}

func TestKeyring(t *testing.T) {
	var kr Keyring
	if _, ok := kr.Key(1); ok {
		t.Fatal("empty keyring has key 1")
	}
	if err := kr.Add(1, make([]byte, MinKeySize-1)); err == nil {
		t.Fatal("short key accepted")
	}
	key := NewKey()
	if len(key) != KeySize || bytes.Equal(key, NewKey()) {
		t.Fatal("NewKey not 32 random bytes")
	}
	kr.Add(1, key)
	key[0] ^= 1 // the keyring keeps its own copy
	got, ok := kr.Key(1)
	if !ok || got[0] == key[0] {
		t.Fatal("keyring does not keep a copy")
	}
	got[1] ^= 1
	if again, _ := kr.Key(1); again[1] == got[1] {
		t.Fatal("Key does not return a copy")
	}
	kr.Remove(1)
	if _, ok := kr.Key(1); ok {
		t.Fatal("removed key still present")
	}
}

func TestKeyRotation(t *testing.T) {
	v, tok, _ := setup(t)
	k2 := NewKey()
	v.keys.Add(2, k2)
	c2 := testClaims()
	c2.KeyID = 2
	if err := v.Verify(Sign(c2, k2), 7, true, testNow); err != nil {
		t.Fatalf("new key: %v", err)
	}
	if err := v.Verify(tok, 7, true, testNow); err != nil {
		t.Fatalf("old key while still held: %v", err)
	}
	v.keys.Remove(1)
	if err := v.Verify(tok, 7, true, testNow); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old key after removal: %v", err)
	}
}

func TestCache(t *testing.T) {
	v, tok, key := setup(t)
	c := NewCache(v)
	if _, err := c.Authorize(7, false, testNow); !errors.Is(err, ErrNoToken) {
		t.Fatalf("no token: %v", err)
	}
	forged := tok
	forged.Claims.Mode = ReadWrite
	forged.Claims.VolumeID = 8
	if err := c.Register(forged, testNow); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged register: %v", err)
	}
	if err := c.Register(tok, testNow); err != nil {
		t.Fatal(err)
	}
	cl, err := c.Authorize(7, true, testNow)
	if err != nil || cl != tok.Claims {
		t.Fatalf("Authorize = %+v, %v", cl, err)
	}
	if _, err := c.Authorize(8, false, testNow); !errors.Is(err, ErrNoToken) {
		t.Fatalf("other volume: %v", err)
	}
	if _, err := c.Authorize(7, false, time.UnixMilli(tok.Claims.ExpiresAt)); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}

	// Replace with a read-only token: writes refused from the cache.
	ro := testClaims()
	ro.Mode = ReadOnly
	ro.TokenID = 43
	if err := c.Register(Sign(ro, key), testNow); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Authorize(7, true, testNow); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("read-only write: %v", err)
	}
	if _, err := c.Authorize(7, false, testNow); err != nil {
		t.Fatalf("read-only read: %v", err)
	}

	// A generation bump revokes the cached token at once.
	v.SetGeneration(7, 6)
	if _, err := c.Authorize(7, false, testNow); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after bump: %v", err)
	}
	// A bump on another volume re-verifies but does not revoke.
	c.Register(Sign(testClaims(), key), testNow) // refused: generation 5 < 6
	nc := testClaims()
	nc.MapGeneration = 6
	if err := c.Register(Sign(nc, key), testNow); err != nil {
		t.Fatal(err)
	}
	v.SetGeneration(9, 100)
	if _, err := c.Authorize(7, true, testNow); err != nil {
		t.Fatalf("after unrelated bump: %v", err)
	}
	// Key removal revokes cached tokens too.
	v.keys.Remove(1)
	if _, err := c.Authorize(7, false, testNow); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("after key removal: %v", err)
	}
	c.Forget(7)
	if _, err := c.Authorize(7, false, testNow); !errors.Is(err, ErrNoToken) {
		t.Fatalf("after Forget: %v", err)
	}
}

func TestConcurrent(t *testing.T) {
	v, tok, key := setup(t)
	c := NewCache(v)
	c.Register(tok, testNow)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 500 {
				switch (i + j) % 5 {
				case 0:
					v.SetGeneration(int64(100+j), int64(j))
				case 1:
					v.keys.Add(uint32(10+i), key)
				case 2:
					c.Register(tok, testNow)
				default:
					if _, err := c.Authorize(7, true, testNow); err != nil {
						t.Error(err)
						return
					}
					if err := v.Verify(tok, 7, true, testNow); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func FuzzParse(f *testing.F) {
	_, tok, _ := setup(f)
	f.Add(tok.Bytes())
	f.Add([]byte{})
	f.Add(make([]byte, Size))
	f.Fuzz(func(t *testing.T, b []byte) {
		tk, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !bytes.Equal(tk.Bytes(), b) {
			t.Fatalf("Parse/Bytes not a round trip:\n in %x\nout %x", b, tk.Bytes())
		}
		if _, err := ParseString(string(b)); err == nil {
			t.Fatalf("ParseString accepted raw binary")
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	v, tok, _ := setup(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Verify(tok, 7, true, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCacheAuthorize(b *testing.B) {
	v, tok, _ := setup(b)
	c := NewCache(v)
	c.Register(tok, testNow)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Authorize(7, true, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCacheAuthorizeParallel(b *testing.B) {
	v, tok, _ := setup(b)
	c := NewCache(v)
	c.Register(tok, testNow)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Authorize(7, true, testNow); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
