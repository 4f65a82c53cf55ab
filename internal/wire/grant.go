package wire

import (
	"encoding/binary"
	"fmt"
)

// ReadGrantSize is the encoded size of a ReadGrant, the reply payload of OpReadGrant.
const ReadGrantSize = 4 + 4 + 4 + 8 + 8 + 8 + 8

// ReadGrant answers OpReadGrant: the chunk's extent on the SDS's device, which the SDC opens as
// /proc/<PID>/fd/<FD> (and checks is the file Dev and Ino name), and the grant's generation in
// the grant entry (internal/shm GrantEntry). The SDC may read the extent while the entry holds
// Gen, no write is in progress and the entry has not expired.
type ReadGrant struct {
	Gen    uint32
	PID    uint32
	FD     uint32
	Dev    uint64
	Ino    uint64
	Offset int64 // of the chunk's extent in the device
	Size   int64 // of the extent (the chunk size)
}

// Encode returns the ReadGrantSize-byte payload for g.
func (g ReadGrant) Encode() []byte {
	b := make([]byte, ReadGrantSize)
	binary.BigEndian.PutUint32(b[0:], g.Gen)
	binary.BigEndian.PutUint32(b[4:], g.PID)
	binary.BigEndian.PutUint32(b[8:], g.FD)
	binary.BigEndian.PutUint64(b[12:], g.Dev)
	binary.BigEndian.PutUint64(b[20:], g.Ino)
	binary.BigEndian.PutUint64(b[28:], uint64(g.Offset))
	binary.BigEndian.PutUint64(b[36:], uint64(g.Size))
	return b
}

// DecodeReadGrant parses a ReadGrant payload.
func DecodeReadGrant(b []byte) (ReadGrant, error) {
	if len(b) != ReadGrantSize {
		return ReadGrant{}, fmt.Errorf("read grant of %d bytes, want %d: %w", len(b), ReadGrantSize, ErrProtocol)
	}
	g := ReadGrant{
		Gen: binary.BigEndian.Uint32(b[0:]), PID: binary.BigEndian.Uint32(b[4:]), FD: binary.BigEndian.Uint32(b[8:]),
		Dev: binary.BigEndian.Uint64(b[12:]), Ino: binary.BigEndian.Uint64(b[20:]),
		Offset: int64(binary.BigEndian.Uint64(b[28:])), Size: int64(binary.BigEndian.Uint64(b[36:])),
	}
	if g.Offset < 0 || g.Size <= 0 || g.Offset+g.Size < g.Offset {
		return ReadGrant{}, fmt.Errorf("read grant extent [%d, +%d): %w", g.Offset, g.Size, ErrProtocol)
	}
	return g, nil
}

// ReadReportSize is the encoded size of a ReadReport.
const ReadReportSize = 16

// ReadReport is the payload of OpReadReport: reads an SDC did under this SDS's grants for a
// volume since its last report, which the SDS enters in the token ledger as if it had served
// them.
type ReadReport struct {
	Ops   uint64
	Bytes uint64
}

// Encode returns the ReadReportSize-byte payload for r.
func (r ReadReport) Encode() []byte {
	b := make([]byte, ReadReportSize)
	binary.BigEndian.PutUint64(b[0:], r.Ops)
	binary.BigEndian.PutUint64(b[8:], r.Bytes)
	return b
}

// DecodeReadReport parses a ReadReport payload.
func DecodeReadReport(b []byte) (ReadReport, error) {
	if len(b) != ReadReportSize {
		return ReadReport{}, fmt.Errorf("read report of %d bytes, want %d: %w", len(b), ReadReportSize, ErrProtocol)
	}
	return ReadReport{Ops: binary.BigEndian.Uint64(b[0:]), Bytes: binary.BigEndian.Uint64(b[8:])}, nil
}
