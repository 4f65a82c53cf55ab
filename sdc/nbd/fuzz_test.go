package nbd

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// FuzzServerInput feeds arbitrary bytes to a connection that has completed
// the handshake. The server must neither panic nor hang: once the client
// side closes, the handler has to return promptly.
func FuzzServerInput(f *testing.F) {
	req := func(cmd, flags uint16, off uint64, length uint32, payload ...byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, magicRequest)
		b = binary.BigEndian.AppendUint16(b, flags)
		b = binary.BigEndian.AppendUint16(b, cmd)
		b = binary.BigEndian.AppendUint64(b, 1)
		b = binary.BigEndian.AppendUint64(b, off)
		b = binary.BigEndian.AppendUint32(b, length)
		return append(b, payload...)
	}
	f.Add([]byte{})
	f.Add(req(cmdRead, 0, 0, 512))
	f.Add(req(cmdWrite, cmdFlagFUA, 10, 4, 1, 2, 3, 4))
	f.Add(req(cmdWrite, 0, 0, 1<<31))
	f.Add(req(cmdWrite, 0, 1<<40, 100))
	f.Add(append(req(cmdTrim, 0, 0, 4096), req(cmdWriteZeroes, cmdFlagNoHole, 0, 4096)...))
	f.Add(append(req(cmdFlush, 0, 0, 0), req(cmdDisc, 0, 0, 0)...))
	f.Add(req(99, 0xffff, 1<<63, 0xffffffff))
	f.Add([]byte("garbage that is not a request header at all"))

	exports := NewExportMap()
	exports.Add("d", "", NewMemExport(1<<20))
	srv := NewServer(Config{
		Exports: exports, MaxPayload: 64 << 10, MaxInflight: 4,
		Logger: hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Off}),
	})
	f.Cleanup(func() { srv.Close() })

	f.Fuzz(func(t *testing.T, input []byte) {
		client, server := net.Pipe()
		c := newConn(srv, server)
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.serve()
		}()
		client.SetDeadline(time.Now().Add(10 * time.Second))
		// Drain everything the server sends, concurrently with our writes.
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, client)
		}()
		hs := binary.BigEndian.AppendUint32(nil, clientFlagFixedNewstyle|clientFlagNoZeroes)
		hs = binary.BigEndian.AppendUint64(hs, magicOpt)
		hs = binary.BigEndian.AppendUint32(hs, optGo)
		hs = binary.BigEndian.AppendUint32(hs, uint32(len(infoGoData("d"))))
		hs = append(hs, infoGoData("d")...)
		client.Write(hs)
		client.Write(input)
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("handler still running 10 s after the client closed (input %x)", input)
		}
		<-drained
	})
}
