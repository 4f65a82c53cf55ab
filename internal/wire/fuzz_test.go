package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
)

// FuzzReadRequest feeds arbitrary bytes to the server's frame decoder: it never panics, returns
// only complete valid requests, and never allocates more than about MaxPayload for one request whatever length it claims.
func FuzzReadRequest(f *testing.F) {
	const maxPayload = 4096
	f.Add(rawFrame(OpPing, 0, nil))
	f.Add(rawFrame(OpWrite, 5, []byte("hello")))
	f.Add(append(rawFrame(OpAuth, 3, []byte("abc")), rawFrame(OpRead, 4096, nil)...))
	f.Add(rawFrame(OpWrite, 1<<31, []byte("x")))
	f.Add(rawFrame(OpWrite, 4096, make([]byte, 10)))
	f.Add([]byte("PFLX"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(b), 64)
		var hdr [RequestHeaderSize]byte
		var ms runtime.MemStats
		for {
			var r Request
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			err := readRequest(br, &hdr, &r, maxPayload)
			runtime.ReadMemStats(&ms)
			// TotalAlloc is process-wide: allow slack for error strings and the fuzzing engine,
			// far below the lengths (up to 4 GiB) a header can claim.
			if d := ms.TotalAlloc - before; d > maxPayload+16<<10 {
				t.Fatalf("decoding one request allocated %d bytes", d)
			}
			if err != nil {
				if r.payload != nil || (err != io.EOF && !errors.Is(err, ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF)) {
					t.Fatalf("error %v (payload kept: %v)", err, r.payload != nil)
				}
				return
			}
			if !r.Op.Valid() {
				t.Fatalf("invalid op %v accepted", r.Op)
			}
			if r.Op.HasPayload() && len(r.Data) != int(r.Length) || len(r.Data) > maxPayload {
				t.Fatalf("%v: Length %d, payload %d", r.Op, r.Length, len(r.Data))
			}
			if r.payload != nil {
				buffers.put(r.payload)
			}
		}
	})
}

// FuzzReplyHeader: the client's reply decoder never panics and bounds the length.
func FuzzReplyHeader(f *testing.F) {
	var h [ReplyHeaderSize]byte
	putReplyHeader(&h, OpRead, 7, &Response{Data: make([]byte, 10)})
	f.Add(h[:])
	f.Fuzz(func(t *testing.T, b []byte) {
		var h [ReplyHeaderSize]byte
		copy(h[:], b)
		r, err := decodeReplyHeader(&h, 4096)
		if err == nil && r.length > 4096 {
			t.Fatalf("length %d accepted", r.length)
		}
	})
}
