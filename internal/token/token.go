package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// Token is a signed Claims: the canonical claims encoding followed by its HMAC-SHA256.
// Its binary form (Bytes, Parse) travels in wire.OpAuth; its text form (String, ParseString,
// MarshalText) travels in JSON.
type Token struct {
	Claims Claims
	MAC    [MACSize]byte
}

// Sign returns c signed with key. The caller sets c.KeyID to the id under which key is known to
// the verifiers' Keyring.
func Sign(c Claims, key []byte) Token {
	h := hmac.New(sha256.New, key)
	h.Write(c.appendTo(make([]byte, 0, ClaimsSize)))
	t := Token{Claims: c}
	h.Sum(t.MAC[:0])
	return t
}

// Bytes returns the Size-byte binary form of t.
func (t Token) Bytes() []byte {
	b := t.Claims.appendTo(make([]byte, 0, Size))
	return append(b, t.MAC[:]...)
}

// String returns t in unpadded base64url (RFC 4648 §5), safe in JSON, URLs and headers.
func (t Token) String() string {
	return base64.RawURLEncoding.EncodeToString(t.Bytes())
}

// MarshalText implements encoding.TextMarshaler with the String form.
func (t Token) MarshalText() ([]byte, error) {
	return []byte(t.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseString.
func (t *Token) UnmarshalText(b []byte) error {
	p, err := ParseString(string(b))
	if err != nil {
		return err
	}
	*t = p
	return nil
}

// Parse decodes the binary form. It checks length, version and access mode, not the signature:
// use a Verifier for that. Errors wrap ErrMalformed.
func Parse(b []byte) (Token, error) {
	if len(b) != Size {
		return Token{}, fmt.Errorf("token: %d bytes, want %d: %w", len(b), Size, ErrMalformed)
	}
	c, err := decodeClaims(b[:ClaimsSize])
	if err != nil {
		return Token{}, err
	}
	t := Token{Claims: c}
	copy(t.MAC[:], b[ClaimsSize:])
	return t, nil
}

// ParseString decodes the String form. Errors wrap ErrMalformed.
func ParseString(s string) (Token, error) {
	if n := base64.RawURLEncoding.EncodedLen(Size); len(s) != n {
		return Token{}, fmt.Errorf("token: %d characters, want %d: %w", len(s), n, ErrMalformed)
	}
	var b [Size]byte
	if _, err := base64.RawURLEncoding.Decode(b[:], []byte(s)); err != nil {
		return Token{}, fmt.Errorf("token: base64: %v: %w", err, ErrMalformed)
	}
	return Parse(b[:])
}
