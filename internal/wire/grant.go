package wire

import (
	"encoding/binary"
	"fmt"
)

// GrantRequestSize is the encoded size of a GrantRequest, the payload of OpReadGrant.
const GrantRequestSize = ShmRefSize + 4

// GrantRequest asks for a read grant on the chunk at the request's Offset: its state goes in the
// entry Entry names, under generation Gen. The SDC chooses Gen (never 0), unique among all
// the grants it asks any SDS for, so that an entry it reuses can never look like the grant an
// earlier reader checked.
type GrantRequest struct {
	Entry ShmRef
	Gen   uint32
}

// Encode returns the GrantRequestSize-byte payload for g.
func (g GrantRequest) Encode() []byte {
	return binary.BigEndian.AppendUint32(g.Entry.Encode(), g.Gen)
}

// DecodeGrantRequest parses a GrantRequest payload.
func DecodeGrantRequest(b []byte) (GrantRequest, error) {
	if len(b) != GrantRequestSize {
		return GrantRequest{}, fmt.Errorf("grant request of %d bytes, want %d: %w", len(b), GrantRequestSize, ErrProtocol)
	}
	ref, _ := DecodeShmRef(b[:ShmRefSize])
	g := GrantRequest{Entry: ref, Gen: binary.BigEndian.Uint32(b[ShmRefSize:])}
	if g.Gen == 0 {
		return GrantRequest{}, fmt.Errorf("grant generation 0: %w", ErrProtocol)
	}
	return g, nil
}

// ReadGrantSize is the encoded size of a ReadGrant, the reply payload of OpReadGrant.
const ReadGrantSize = 4 + 4 + 8 + 8 + 8 + 8

// ReadGrant answers OpReadGrant: the chunk's extent on the SDS's device, which the SDC opens as
// /proc/<PID>/fd/<FD> (and checks is the file Dev and Ino name). The SDC may read the extent
// while the grant entry (internal/shm GrantEntry) holds the generation it asked for, no write is
// in progress and the entry has not expired.
type ReadGrant struct {
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
	binary.BigEndian.PutUint32(b[0:], g.PID)
	binary.BigEndian.PutUint32(b[4:], g.FD)
	binary.BigEndian.PutUint64(b[8:], g.Dev)
	binary.BigEndian.PutUint64(b[16:], g.Ino)
	binary.BigEndian.PutUint64(b[24:], uint64(g.Offset))
	binary.BigEndian.PutUint64(b[32:], uint64(g.Size))
	return b
}

// DecodeReadGrant parses a ReadGrant payload.
func DecodeReadGrant(b []byte) (ReadGrant, error) {
	if len(b) != ReadGrantSize {
		return ReadGrant{}, fmt.Errorf("read grant of %d bytes, want %d: %w", len(b), ReadGrantSize, ErrProtocol)
	}
	g := ReadGrant{
		PID: binary.BigEndian.Uint32(b[0:]), FD: binary.BigEndian.Uint32(b[4:]),
		Dev: binary.BigEndian.Uint64(b[8:]), Ino: binary.BigEndian.Uint64(b[16:]),
		Offset: int64(binary.BigEndian.Uint64(b[24:])), Size: int64(binary.BigEndian.Uint64(b[32:])),
	}
	if g.Offset < 0 || g.Size <= 0 || g.Offset+g.Size < g.Offset {
		return ReadGrant{}, fmt.Errorf("read grant extent [%d, +%d): %w", g.Offset, g.Size, ErrProtocol)
	}
	return g, nil
}

// ReadReportSize is the encoded size of a ReadReport; an SDC of before report ids sends the
// first ReadReportSizeNoID bytes only.
const (
	ReadReportSize     = 24
	ReadReportSizeNoID = 16
)

// ReadReport is the payload of OpReadReport: reads an SDC did under this SDS's grants for a
// volume, which the SDS enters in the token ledger as if it had served them. ID names the
// report: an SDC that got no answer sends the same report again, over another connection if
// need be, and an SDS that has counted that id already answers without counting it again.
// 0: no id (never deduplicated).
type ReadReport struct {
	Ops   uint64
	Bytes uint64
	ID    uint64
}

// Encode returns the ReadReportSize-byte payload for r.
func (r ReadReport) Encode() []byte {
	b := make([]byte, ReadReportSize)
	binary.BigEndian.PutUint64(b[0:], r.Ops)
	binary.BigEndian.PutUint64(b[8:], r.Bytes)
	binary.BigEndian.PutUint64(b[16:], r.ID)
	return b
}

// DecodeReadReport parses a ReadReport payload, with or without its id.
func DecodeReadReport(b []byte) (ReadReport, error) {
	if len(b) != ReadReportSize && len(b) != ReadReportSizeNoID {
		return ReadReport{}, fmt.Errorf("read report of %d bytes, want %d: %w", len(b), ReadReportSize, ErrProtocol)
	}
	r := ReadReport{Ops: binary.BigEndian.Uint64(b[0:]), Bytes: binary.BigEndian.Uint64(b[8:])}
	if len(b) == ReadReportSize {
		r.ID = binary.BigEndian.Uint64(b[16:])
	}
	return r, nil
}
