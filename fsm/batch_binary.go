package fsm

import (
	"encoding"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// The binary form of a Batch entry. A JSON envelope starts with '{' right after the type byte;
// a binary batch starts with a format byte instead, so entries written before it still decode.
// Decoding three nested JSON documents was about a tenth of the apply cost of a label write,
// on every replica, and encoding it a share of the leader's.
//
//	TypeBatch, batchFormatBinary,
//	header (string rid, varint time), uvarint count,
//	count × (type byte, header, codec byte, uvarint length, payload)
//
// Strings are a uvarint length and the bytes. A payload is the command's binary form (codec
// codecBinary) when it implements binaryCommand, else its JSON (codecJSON).
const batchFormatBinary = 0x01

const (
	codecJSON   = 0
	codecBinary = 1
)

// binaryCommand is a hot command with a compact binary payload.
type binaryCommand interface {
	encoding.BinaryAppender
	encoding.BinaryUnmarshaler
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

func appendHeader(b []byte, h Header) []byte {
	return binary.AppendVarint(appendString(b, h.RequestID), h.Time)
}

// encodeBinaryBatch builds the log entry for a batch of proposals.
func encodeBinaryBatch(h Header, ps []Proposal) ([]byte, error) {
	b := make([]byte, 0, 64+48*len(ps))
	b = append(b, byte(TypeBatch), batchFormatBinary)
	b = appendHeader(b, h)
	b = binary.AppendUvarint(b, uint64(len(ps)))
	var payload []byte
	for _, p := range ps {
		b = append(b, byte(p.Command.Type()))
		b = appendHeader(b, p.Header)
		var err error
		if bc, ok := p.Command.(binaryCommand); ok {
			b = append(b, codecBinary)
			payload, err = bc.AppendBinary(payload[:0])
		} else {
			b = append(b, codecJSON)
			payload, err = json.Marshal(p.Command)
		}
		if err != nil {
			return nil, fmt.Errorf("fsm: encode %T: %w", p.Command, err)
		}
		b = appendBytes(b, payload)
	}
	return b, nil
}

// byteReader reads the binary batch format; the first error sticks.
type byteReader struct {
	b   []byte
	err error
}

func (r *byteReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("truncated or malformed %s", what)
	}
}

func (r *byteReader) byte(what string) byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail(what)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *byteReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *byteReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *byteReader) bytes(what string) []byte {
	n := r.uvarint(what)
	if r.err != nil || uint64(len(r.b)) < n {
		r.fail(what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *byteReader) string(what string) string { return string(r.bytes(what)) }

func (r *byteReader) header(what string) Header {
	return Header{RequestID: r.string(what + " request id"), Time: r.varint(what + " time")}
}

// decodeBinaryBatch decodes data (after the type and format bytes) into a Batch whose entries
// carry their decoded commands.
func decodeBinaryBatch(data []byte) (Header, *Batch, error) {
	r := &byteReader{b: data}
	h := r.header("batch header")
	n := r.uvarint("batch length")
	if r.err == nil && n > uint64(len(data)) { // every entry takes several bytes
		r.fail("batch length")
	}
	if r.err != nil {
		return Header{}, nil, fmt.Errorf("%w: binary batch: %v", ErrUndecodable, r.err)
	}
	b := &Batch{Entries: make([]BatchEntry, n)}
	for i := range b.Entries {
		e := &b.Entries[i]
		e.Type = CommandType(r.byte("entry type"))
		e.Header = r.header("entry header")
		codec := r.byte("entry codec")
		payload := r.bytes("entry payload")
		if r.err != nil {
			return Header{}, nil, fmt.Errorf("%w: binary batch entry %d: %v", ErrUndecodable, i, r.err)
		}
		hd, ok := registry[e.Type]
		if !ok || e.Type == TypeBatch {
			return Header{}, nil, fmt.Errorf("%w: batch holds command type %d", ErrUndecodable, e.Type)
		}
		c := hd.new()
		var err error
		switch bc, isBinary := c.(binaryCommand); {
		case codec == codecBinary && isBinary:
			err = bc.UnmarshalBinary(payload)
		case codec == codecJSON:
			err = json.Unmarshal(payload, c)
		default:
			err = fmt.Errorf("codec %d", codec)
		}
		if err != nil {
			return Header{}, nil, fmt.Errorf("%w: %s payload in binary batch: %v", ErrUndecodable, hd.name, err)
		}
		e.cmd = c
	}
	if len(r.b) != 0 {
		return Header{}, nil, fmt.Errorf("%w: binary batch: %d trailing bytes", ErrUndecodable, len(r.b))
	}
	return h, b, nil
}

// SetLabel's binary payload: varint volume id, key, value, then 1 and the expected value for a
// compare-and-set or 0.
func (c *SetLabel) AppendBinary(b []byte) ([]byte, error) {
	b = binary.AppendVarint(b, c.VolumeID)
	b = appendString(appendString(b, c.Key), c.Value)
	if c.Expect == nil {
		return append(b, 0), nil
	}
	return appendString(append(b, 1), *c.Expect), nil
}

func (c *SetLabel) UnmarshalBinary(data []byte) error {
	r := &byteReader{b: data}
	*c = SetLabel{VolumeID: r.varint("volume id"), Key: r.string("key"), Value: r.string("value")}
	switch r.byte("expect flag") {
	case 0:
	case 1:
		expect := r.string("expect")
		c.Expect = &expect
	default:
		r.fail("expect flag")
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("set_label payload (trailing bytes)")
	}
	return r.err
}
