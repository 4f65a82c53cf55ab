package sds

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"testing"
	"time"

	"pflex/internal/token"
	"pflex/internal/wire"
)

// FuzzDataServer sends a client's sequence of arbitrary requests (any opcode, flags, range,
// epoch and payload, to a chunk's primary or its secondary) to a two-SDS cluster, and checks
// what the data protocol promises for bad input: the SDSs keep serving the connection, the
// volume reads back exactly the acknowledged writes, and the two copies of every chunk are
// identical. Each input gets a volume of its own, trimmed afterwards.
//
// Eight bytes make a request: opcode, flags, target (bit 0: the secondary), offset (2 bytes,
// ×17 from one chunk before the volume), length (2 bytes, up to two chunks), epoch offset.
func FuzzDataServer(f *testing.F) {
	c := newCluster(f, 2, nil)
	var vols atomic.Int64
	vols.Store(1000)
	req := func(op wire.Opcode, flags wire.Flags, secondary bool, off, n uint16, epoch int8) []byte {
		b := []byte{byte(op - 1), byte(flags), 0, 0, 0, 0, 0, byte(epoch)}
		if secondary {
			b[2] = 1
		}
		binary.BigEndian.PutUint16(b[3:], off)
		binary.BigEndian.PutUint16(b[5:], n)
		return b
	}
	chunkOff := func(ch int) uint16 { return uint16((ch*testChunk + testChunk + 16) / 17) } // up to 16 bytes into chunk ch
	f.Add(bytes.Join([][]byte{
		req(wire.OpWrite, 0, false, chunkOff(0), 4096, 0),
		req(wire.OpRead, 0, false, chunkOff(0), 4096, 0),
		req(wire.OpWrite, wire.FlagFUA, false, chunkOff(3), 100, 0),
		req(wire.OpTrim, 0, false, chunkOff(3), 50, 0),
		req(wire.OpWriteZeroes, 0, false, chunkOff(0), 10, 0),
	}, nil))
	f.Add(bytes.Join([][]byte{
		req(wire.OpWrite, 0, false, chunkOff(1), 512, 0),
		req(wire.OpReplWrite, 0, true, chunkOff(1), 512, 0),
		req(wire.OpWrite, wire.FlagReplica, true, chunkOff(1), 512, 0),
		req(wire.OpTrim, wire.FlagReplica, true, chunkOff(1), 512, 0),
		req(wire.OpChunkWrite, 0, true, chunkOff(1), 512, 0),
		req(wire.OpPeerAuth, 0, true, 0, 78, 0),
	}, nil))
	f.Add(bytes.Join([][]byte{
		req(wire.OpWrite, 0, false, 0, 100, 0),              // before the volume
		req(wire.OpWrite, 0, false, chunkOff(1), 65535, 0),  // across chunks
		req(wire.OpWrite, 0, false, chunkOff(15), 65535, 0), // across the end
		req(wire.OpWrite, 0, false, chunkOff(2), 10, -1),    // stale epoch
		req(wire.OpWrite, 0, false, chunkOff(2), 10, 2),     // epoch from the future
		req(wire.OpAuth, 0, false, 0, 30, 0),                // a malformed token
		req(wire.OpShmWrite, 0, false, chunkOff(2), 20, 0),  // no region attached
		req(wire.OpReadGrant, 0, false, chunkOff(2), 24, 0), // no region attached
		req(wire.OpReadReport, 0, false, 0, 16, 0),          // a report of pattern bytes, without an id
		req(wire.OpReadReport, 0, false, 0, 24, 0),          // with an id
		req(wire.OpReadReport, 0, false, 0, 20, 0),          // neither
		req(wire.OpShmAttach, 0, false, 0, 56, 0),           // a garbage descriptor
		req(wire.OpChunkRead, 0, false, chunkOff(2), 10, 0), // reserved
		req(wire.OpWrite, 0, false, chunkOff(2), 10, 0),     // still served
		req(wire.OpFlush, 0, false, 0, 0, 0),
	}, nil))
	zeros := crc32.Checksum(make([]byte, testChunk), crc32.MakeTable(crc32.Castagnoli))

	f.Fuzz(func(t *testing.T, in []byte) {
		vol := vols.Add(1)
		l := c.mdm.layout(vol)
		tok := c.token(vol, token.ReadWrite, time.Minute)
		conns := map[int64]*wire.Conn{}
		for id := range c.sdss {
			conns[id] = c.dial(t, id, &tok)
		}
		model := make([]byte, testSize)
		for i := 0; len(in) >= 8 && i < 64; i++ {
			r := wire.Request{Op: wire.Opcode(1 + in[0]%byte(wire.OpPeerAuth)), Flags: wire.Flags(in[1] & 7),
				VolumeID: vol, Offset: int64(binary.BigEndian.Uint16(in[3:]))*17 - testChunk,
				Epoch: l.Epoch + int64(int8(in[7]))%3, Tag: uint64(i + 1)}
			n := int(binary.BigEndian.Uint16(in[5:])) % (2 * testChunk)
			ids := l.Replicas(max(r.Offset, 0) / testChunk % l.Chunks())
			target := ids[0]
			if in[2]&1 == 1 {
				target = ids[len(ids)-1]
			}
			in = in[8:]
			switch {
			case r.Op.HasPayload():
				r.Data = pattern(n, byte(i))
				if r.Op == wire.OpAuth && n%3 == 0 {
					r.Data = tok.Bytes()
				}
			default:
				r.Length = uint32(n)
			}
			_, st := do(conns[target], r)
			if st == 999 {
				// Not a status: the client refused it (too large) or the connection is gone, which
				// a well-formed frame must never cause.
				if err := conns[target].Err(); err != nil {
					t.Fatalf("request %d (%v flags %d [%d,+%d) epoch %d) lost the connection: %v", i, r.Op, r.Flags, r.Offset, n, r.Epoch, err)
				}
				continue
			}
			if st == wire.StatusOK && replicaWrite(r) {
				t.Fatalf("request %d: %v (flags %d) from a client taken", i, r.Op, r.Flags)
			}
			if st != wire.StatusOK || target != ids[0] {
				continue
			}
			switch r.Op {
			case wire.OpWrite:
				copy(model[r.Offset:], r.Data)
			case wire.OpTrim, wire.OpWriteZeroes:
				clear(model[r.Offset : r.Offset+int64(n)])
			}
		}

		// Every chunk reads back as the model; both copies are the same.
		for ch := range l.Chunks() {
			p := l.Replicas(ch)[0]
			resp, st := do(conns[p], wire.Request{Op: wire.OpRead, VolumeID: vol, Offset: ch * testChunk, Length: testChunk, Epoch: l.Epoch})
			if st != wire.StatusOK {
				t.Fatalf("read of chunk %d: %v", ch, st)
			}
			if want := model[ch*testChunk : (ch+1)*testChunk]; !bytes.Equal(resp.Data, want) {
				t.Fatalf("chunk %d differs from the acknowledged writes", ch)
			}
		}
		crcs := map[int64]map[int64]string{}
		for id := range c.sdss {
			crcs[id] = map[int64]string{}
			for ch, cr := range c.chunks(t, id, vol) {
				crcs[id][ch] = cr.CRC32C
			}
		}
		for ch := range l.Chunks() {
			var got []string
			for id := range c.sdss {
				s, ok := crcs[id][ch]
				if !ok {
					s = fmt.Sprintf("%08x", zeros) // not allocated: reads as zeros
				}
				got = append(got, s)
			}
			if got[0] != got[1] {
				t.Fatalf("chunk %d: copies differ (CRC-32C %v)", ch, got)
			}
		}
		for ch := range l.Chunks() {
			if _, st := do(conns[l.Replicas(ch)[0]], wire.Request{Op: wire.OpTrim, VolumeID: vol, Offset: ch * testChunk, Length: testChunk, Epoch: l.Epoch}); st != wire.StatusOK {
				t.Fatalf("trim of chunk %d: %v", ch, st)
			}
		}
	})
}

// replicaWrite reports whether r is a write only SDS peers may send.
func replicaWrite(r wire.Request) bool {
	switch r.Op {
	case wire.OpReplWrite, wire.OpShmReplWrite, wire.OpChunkWrite:
		return true
	case wire.OpWrite, wire.OpShmWrite, wire.OpTrim, wire.OpWriteZeroes:
		return r.Flags&wire.FlagReplica != 0
	}
	return false
}

// pattern is n bytes that differ with seed and position.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed*31 + byte(i) ^ byte(i>>8)
	}
	return b
}
