// Package token signs and verifies the IO authorization tokens that let an SDC talk to an SDS.
package token

import (
	"encoding/binary"
	"fmt"
)

// Mode is the access a token grants on its volume.
type Mode uint8

// Access modes. The zero Mode is invalid so that a zero Claims never authorizes anything.
const (
	ReadOnly  Mode = 1
	ReadWrite Mode = 2
	// Peer is not an access: a Peer token (volume 0, SDC 0), signed by an SDS with the cluster's
	// key, proves to another SDS that the connection comes from an SDS (VerifyPeer). Replica and
	// rebuild writes are taken only on such connections. It authorizes no volume IO.
	Peer Mode = 3
)

func (m Mode) String() string {
	switch m {
	case ReadOnly:
		return "ro"
	case ReadWrite:
		return "rw"
	case Peer:
		return "peer"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

func (m Mode) valid() bool { return m == ReadOnly || m == ReadWrite }

// Claims is what a token asserts: SDC SDCID may access volume VolumeID in Mode until ExpiresAt
// (unix milliseconds), as long as the volume's mapping generation has not moved past
// MapGeneration. KeyID names the signing key.
type Claims struct {
	TokenID       uint64
	VolumeID      int64
	SDCID         int64
	Mode          Mode
	MapGeneration int64
	ExpiresAt     int64 // unix milliseconds
	KeyID         uint32
}

// Encoding layout, big-endian, fixed size:
//
//	off len field
//	  0   1 version (EncodingVersion)
//	  1   8 TokenID
//	  9   8 VolumeID
//	 17   8 SDCID
//	 25   1 Mode
//	 26   8 MapGeneration
//	 34   8 ExpiresAt
//	 42   4 KeyID
const (
	// EncodingVersion is the first byte of every encoded Claims and Token.
	EncodingVersion = 1
	// ClaimsSize is the length of an encoded Claims.
	ClaimsSize = 46
	// MACSize is the length of the HMAC-SHA256 tag.
	MACSize = 32
	// Size is the length of an encoded Token: claims then MAC.
	Size = ClaimsSize + MACSize
)

// appendTo appends the canonical encoding of c to b; the MAC is computed over exactly these bytes.
func (c Claims) appendTo(b []byte) []byte {
	b = append(b, EncodingVersion)
	b = binary.BigEndian.AppendUint64(b, c.TokenID)
	b = binary.BigEndian.AppendUint64(b, uint64(c.VolumeID))
	b = binary.BigEndian.AppendUint64(b, uint64(c.SDCID))
	b = append(b, byte(c.Mode))
	b = binary.BigEndian.AppendUint64(b, uint64(c.MapGeneration))
	b = binary.BigEndian.AppendUint64(b, uint64(c.ExpiresAt))
	b = binary.BigEndian.AppendUint32(b, c.KeyID)
	return b
}

// decodeClaims decodes exactly ClaimsSize bytes.
func decodeClaims(b []byte) (Claims, error) {
	if len(b) != ClaimsSize {
		return Claims{}, fmt.Errorf("token: claims are %d bytes, want %d: %w", len(b), ClaimsSize, ErrMalformed)
	}
	if b[0] != EncodingVersion {
		return Claims{}, fmt.Errorf("token: encoding version %d, want %d: %w", b[0], EncodingVersion, ErrMalformed)
	}
	c := Claims{
		TokenID:       binary.BigEndian.Uint64(b[1:]),
		VolumeID:      int64(binary.BigEndian.Uint64(b[9:])),
		SDCID:         int64(binary.BigEndian.Uint64(b[17:])),
		Mode:          Mode(b[25]),
		MapGeneration: int64(binary.BigEndian.Uint64(b[26:])),
		ExpiresAt:     int64(binary.BigEndian.Uint64(b[34:])),
		KeyID:         binary.BigEndian.Uint32(b[42:]),
	}
	if !c.Mode.valid() && c.Mode != Peer {
		return Claims{}, fmt.Errorf("token: access %v: %w", c.Mode, ErrMalformed)
	}
	return c, nil
}
