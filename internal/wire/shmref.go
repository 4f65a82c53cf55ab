package wire

import (
	"encoding/binary"
	"fmt"
)

// ShmRefSize is the encoded size of a ShmRef, the payload of OpShmWrite and OpShmReplWrite.
const ShmRefSize = 20

// ShmRef names a write's data in a shared region that the connection has attached with
// OpShmAttach: Length bytes at Offset in region Region.
type ShmRef struct {
	Region uint64
	Offset uint64
	Length uint32
}

// Encode returns the ShmRefSize-byte payload for r.
func (r ShmRef) Encode() []byte {
	b := make([]byte, ShmRefSize)
	binary.BigEndian.PutUint64(b[0:], r.Region)
	binary.BigEndian.PutUint64(b[8:], r.Offset)
	binary.BigEndian.PutUint32(b[16:], r.Length)
	return b
}

// DecodeShmRef parses a ShmRef payload.
func DecodeShmRef(b []byte) (ShmRef, error) {
	if len(b) != ShmRefSize {
		return ShmRef{}, fmt.Errorf("shared-memory reference of %d bytes, want %d: %w", len(b), ShmRefSize, ErrProtocol)
	}
	return ShmRef{
		Region: binary.BigEndian.Uint64(b[0:]),
		Offset: binary.BigEndian.Uint64(b[8:]),
		Length: binary.BigEndian.Uint32(b[16:]),
	}, nil
}
