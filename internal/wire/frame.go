// Package wire is the binary framed protocol of the pflex data path (SDC <-> SDS, SDS <-> SDS):
// fixed headers, pipelined requests, replies matched by request id and returned out of order.
package wire

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Frame layout. All integers are big-endian (network order).
//
// Request header, RequestHeaderSize bytes, followed by Length payload bytes when the opcode
// carries data (Opcode.HasPayload):
//
//	off len field
//	  0   4 magic "PFLX"
//	  4   1 version (Version)
//	  5   1 opcode
//	  6   2 flags
//	  8   8 request id
//	 16   8 volume id
//	 24   8 offset
//	 32   4 length
//	 36   8 epoch (the client's layout epoch)
//	 44   8 tag (the write's id, the same on every attempt of it; 0: none)
//
// Reply header, ReplyHeaderSize bytes, followed by length payload bytes:
//
//	off len field
//	  0   4 magic "PFLX"
//	  4   1 version
//	  5   1 opcode (echoed)
//	  6   2 flags
//	  8   8 request id (echoed)
//	 16   4 status
//	 20   4 length
//	 24   8 epoch (the server's current epoch; meaningful with StatusStaleEpoch)
const (
	Magic             = "PFLX"
	Version           = 2
	RequestHeaderSize = 52
	ReplyHeaderSize   = 32
	// DefaultMaxPayload bounds a request or reply payload (and the length of a READ).
	DefaultMaxPayload = 8 << 20
)

// Opcode names a request type. Numbers are never reused.
type Opcode uint8

// Opcodes.
const (
	OpAuth        Opcode = 1  // payload: token bytes; registers the token on the connection
	OpRead        Opcode = 2  // read Length bytes at Offset; reply payload is the data
	OpWrite       Opcode = 3  // payload: data to write at Offset
	OpFlush       Opcode = 4  // make acknowledged writes durable
	OpTrim        Opcode = 5  // discard Length bytes at Offset
	OpWriteZeroes Opcode = 6  // zero Length bytes at Offset
	OpReplWrite   Opcode = 7  // primary -> secondary: payload as OpWrite
	OpReplFlush   Opcode = 8  // primary -> secondary: as OpFlush
	OpPing        Opcode = 9  // no-op round trip
	OpChunkRead   Opcode = 10 // reserved: reply payload is chunk data
	OpChunkWrite  Opcode = 11 // rebuild source -> target: payload is chunk data at Offset
	// Same-host shared memory (internal/shm, DESIGN.md "Shared memory"): the payload of the
	// writes and the read is a ShmRef to bytes in a region the connection has attached.
	OpShmAttach    Opcode = 12 // payload: an shm.Desc; the server maps the region for this connection
	OpShmWrite     Opcode = 13 // as OpWrite, the data in an attached region
	OpShmReplWrite Opcode = 14 // as OpReplWrite, the data in an attached region
	OpShmRead      Opcode = 15 // as OpRead of the ShmRef's length; the data goes into the region
	// Local reads (grant.go, DESIGN.md "Local reads"): an SDC on the SDS's host reads a chunk
	// from the SDS's device itself, under a grant the SDS keeps in the SDC's region.
	OpReadGrant  Opcode = 16 // payload: a GrantRequest; reply payload: a ReadGrant
	OpReadReport Opcode = 17 // payload: a ReadReport of the reads done under grants of VolumeID
	// SDS -> SDS: the first request of a peer connection. Replica and rebuild writes (OpReplWrite,
	// OpShmReplWrite, FlagReplica, OpChunkWrite) are taken only after it, so that a client
	// cannot write one replica behind its primary's back.
	OpPeerAuth Opcode = 18 // payload: a token of mode Peer, signed by the SDS with the cluster's key
	opMax             = OpPeerAuth
)

var opNames = [...]string{
	OpAuth: "AUTH", OpRead: "READ", OpWrite: "WRITE", OpFlush: "FLUSH", OpTrim: "TRIM",
	OpWriteZeroes: "WRITE_ZEROES", OpReplWrite: "REPL_WRITE", OpReplFlush: "REPL_FLUSH",
	OpPing: "PING", OpChunkRead: "CHUNK_READ", OpChunkWrite: "CHUNK_WRITE",
	OpShmAttach: "SHM_ATTACH", OpShmWrite: "SHM_WRITE", OpShmReplWrite: "SHM_REPL_WRITE", OpShmRead: "SHM_READ",
	OpReadGrant: "READ_GRANT", OpReadReport: "READ_REPORT", OpPeerAuth: "PEER_AUTH",
}

func (op Opcode) String() string {
	if op.Valid() {
		return opNames[op]
	}
	return fmt.Sprintf("op(%d)", uint8(op))
}

// Valid reports whether op is a known opcode.
func (op Opcode) Valid() bool { return op >= OpAuth && op <= opMax }

// HasPayload reports whether requests with op carry Length bytes of payload after the header.
func (op Opcode) HasPayload() bool {
	switch op {
	case OpAuth, OpWrite, OpReplWrite, OpChunkWrite, OpShmAttach, OpShmWrite, OpShmReplWrite, OpShmRead,
		OpReadGrant, OpReadReport, OpPeerAuth:
		return true
	}
	return false
}

// readsData reports whether op's Length is the size of the reply payload it asks for, and so is
// bounded by MaxPayload like a request payload.
func (op Opcode) readsData() bool { return op == OpRead || op == OpChunkRead }

// Flags modify a request. Unknown bits are passed to the handler unchanged.
type Flags uint16

// Flags.
const (
	FlagFUA Flags = 1 << 0 // force unit access: the write is durable on every replica before the reply
	// FlagReplica marks an OpTrim or OpWriteZeroes that a chunk's primary forwards to its
	// secondary (the TRIM / WRITE_ZEROES counterpart of OpReplWrite), and an OpShmAttach by
	// which a primary passes on its client's region.
	FlagReplica Flags = 1 << 1
	// FlagChunkAbsent marks an OpChunkWrite without payload: the rebuild source holds no copy
	// of the chunk (never written, or trimmed), so the target drops whatever it holds.
	FlagChunkAbsent Flags = 1 << 2
	// FlagOrdered marks an OpPeerAuth whose sender draws the request ids of all its peer
	// connections from one increasing sequence (ClientOptions.IDs) and names itself (PeerHello):
	// the receiver then applies a chunk's replica writes only in the order of their ids.
	FlagOrdered Flags = 1 << 3
	// FlagRelay marks a client's READ, WRITE, TRIM or WRITE_ZEROES sent to a chunk's secondary
	// because the client cannot reach the primary: the secondary passes it on to the primary
	// under the client's token and relays the answer. On an OpFlush it asks the receiver to
	// flush the SDS whose id is in Offset (sdc/DESIGN.md "Relayed IO").
	FlagRelay Flags = 1 << 4
	// FlagResync marks an OpReplWrite by which a primary brings its secondary's copy up to its
	// own bytes (writes it applied that the secondary may lack): not a client's IO, so the
	// secondary does not count it in the token ledger. Only a peer connection carries it.
	FlagResync Flags = 1 << 5
)

// Request is one request. On the client, fill it and pass it to Conn.Do; ID is assigned by Do.
// On the server, the handler receives it; Data is valid only until the handler returns.
type Request struct {
	Op       Opcode
	Flags    Flags
	ID       uint64
	VolumeID int64
	Offset   int64
	// Length is the payload length for opcodes that carry data (set from len(Data) by Do), and the
	// byte count of the range for the others (READ, TRIM, WRITE_ZEROES, ...).
	Length uint32
	Epoch  int64
	// Tag identifies a write (WRITE, TRIM, WRITE_ZEROES and their replica forms) across the
	// attempts of it: an SDC sends every attempt with the same tag, so that an SDS that has
	// already applied the write does not apply it a second time after newer writes (0: none).
	Tag  uint64
	Data []byte // payload, for opcodes that carry data

	// ReadInto (client only) receives the reply payload when it is large enough: Response.Data
	// is then ReadInto[:n] and nothing is allocated. For OpRead with Length 0, Do sets Length to
	// len(ReadInto).
	ReadInto []byte

	payload, reply *[]byte // server only: pooled buffers returned after the reply is written
}

// ReplyBuffer (server only) returns an n-byte buffer for the reply payload, taken from a pool and
// returned to it once the reply is written. A handler serving OpRead reads into it and returns
// it as Response.Data; it must not keep it after returning.
func (r *Request) ReplyBuffer(n int) []byte {
	if r.reply != nil {
		buffers.put(r.reply)
	}
	r.reply = buffers.get(n, n)
	return *r.reply
}

// Response is a reply. Data is the reply payload: READ data, or optionally a short human-readable
// detail with an error status.
type Response struct {
	Status Status
	Flags  Flags
	Epoch  int64
	Data   []byte
}

func putRequestHeader(b *[RequestHeaderSize]byte, r *Request) {
	copy(b[0:4], Magic)
	b[4] = Version
	b[5] = byte(r.Op)
	binary.BigEndian.PutUint16(b[6:], uint16(r.Flags))
	binary.BigEndian.PutUint64(b[8:], r.ID)
	binary.BigEndian.PutUint64(b[16:], uint64(r.VolumeID))
	binary.BigEndian.PutUint64(b[24:], uint64(r.Offset))
	binary.BigEndian.PutUint32(b[32:], r.Length)
	binary.BigEndian.PutUint64(b[36:], uint64(r.Epoch))
	binary.BigEndian.PutUint64(b[44:], r.Tag)
}

func putReplyHeader(b *[ReplyHeaderSize]byte, op Opcode, id uint64, resp *Response) {
	copy(b[0:4], Magic)
	b[4] = Version
	b[5] = byte(op)
	binary.BigEndian.PutUint16(b[6:], uint16(resp.Flags))
	binary.BigEndian.PutUint64(b[8:], id)
	binary.BigEndian.PutUint32(b[16:], uint32(resp.Status))
	binary.BigEndian.PutUint32(b[20:], uint32(len(resp.Data)))
	binary.BigEndian.PutUint64(b[24:], uint64(resp.Epoch))
}

// checkPreamble validates magic and version, common to both headers.
func checkPreamble(b []byte) error {
	if string(b[0:4]) != Magic {
		return fmt.Errorf("bad magic %q: %w", b[0:4], ErrProtocol)
	}
	if b[4] != Version {
		return fmt.Errorf("version %d, want %d: %w", b[4], Version, ErrProtocol)
	}
	return nil
}

// decodeRequestHeader parses and validates a request header; it does not touch the payload.
func decodeRequestHeader(b *[RequestHeaderSize]byte, r *Request, maxPayload int) error {
	if err := checkPreamble(b[:]); err != nil {
		return err
	}
	*r = Request{
		Op:       Opcode(b[5]),
		Flags:    Flags(binary.BigEndian.Uint16(b[6:])),
		ID:       binary.BigEndian.Uint64(b[8:]),
		VolumeID: int64(binary.BigEndian.Uint64(b[16:])),
		Offset:   int64(binary.BigEndian.Uint64(b[24:])),
		Length:   binary.BigEndian.Uint32(b[32:]),
		Epoch:    int64(binary.BigEndian.Uint64(b[36:])),
		Tag:      binary.BigEndian.Uint64(b[44:]),
	}
	if !r.Op.Valid() {
		return fmt.Errorf("request %d: unknown opcode %d: %w", r.ID, b[5], ErrProtocol)
	}
	if (r.Op.HasPayload() || r.Op.readsData()) && uint64(r.Length) > uint64(maxPayload) {
		return fmt.Errorf("request %d: %v length %d exceeds max payload %d: %w",
			r.ID, r.Op, r.Length, maxPayload, ErrProtocol)
	}
	return nil
}

// readRequest reads one whole request (header and payload) from br. The payload buffer comes
// from the pool, is never larger than maxPayload, and is only allocated once the header has been
// validated. A request is returned only when complete.
func readRequest(br *bufio.Reader, hdr *[RequestHeaderSize]byte, r *Request, maxPayload int) error {
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return err
	}
	if err := decodeRequestHeader(hdr, r, maxPayload); err != nil {
		return err
	}
	if !r.Op.HasPayload() || r.Length == 0 {
		return nil
	}
	r.payload = buffers.get(int(r.Length), maxPayload)
	if _, err := io.ReadFull(br, *r.payload); err != nil {
		buffers.put(r.payload)
		r.payload = nil
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("request %d: %v payload of %d bytes: %w", r.ID, r.Op, r.Length, err)
	}
	r.Data = *r.payload
	return nil
}

// replyHeader is a decoded reply header.
type replyHeader struct {
	op     Opcode
	flags  Flags
	id     uint64
	status Status
	length uint32
	epoch  int64
}

func decodeReplyHeader(b *[ReplyHeaderSize]byte, maxPayload int) (replyHeader, error) {
	if err := checkPreamble(b[:]); err != nil {
		return replyHeader{}, err
	}
	h := replyHeader{
		op:     Opcode(b[5]),
		flags:  Flags(binary.BigEndian.Uint16(b[6:])),
		id:     binary.BigEndian.Uint64(b[8:]),
		status: Status(binary.BigEndian.Uint32(b[16:])),
		length: binary.BigEndian.Uint32(b[20:]),
		epoch:  int64(binary.BigEndian.Uint64(b[24:])),
	}
	if uint64(h.length) > uint64(maxPayload) {
		return h, fmt.Errorf("reply %d: length %d exceeds max payload %d: %w", h.id, h.length, maxPayload, ErrProtocol)
	}
	return h, nil
}
