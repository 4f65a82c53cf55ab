package nbd

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestExportNameWithAndWithoutNoZeroes(t *testing.T) {
	ts := startServer(t, nil)
	ts.exports.Add("disk", "", NewMemExport(1<<20))
	for _, noZeroes := range []bool{true, false} {
		c := dial(t, ts.addr)
		flags := clientFlagFixedNewstyle
		if noZeroes {
			flags |= clientFlagNoZeroes
		}
		if hf := c.hello(flags); hf != flagFixedNewstyle|flagNoZeroes {
			t.Fatalf("handshake flags %#x", hf)
		}
		c.sendOpt(optExportName, []byte("disk"))
		b := c.read(10)
		if size := binary.BigEndian.Uint64(b); size != 1<<20 {
			t.Fatalf("size %d", size)
		}
		tf := binary.BigEndian.Uint16(b[8:])
		want := tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes | tflagCanMultiConn
		if tf != want {
			t.Fatalf("transmission flags %#x, want %#x", tf, want)
		}
		if !noZeroes {
			if z := c.read(exportNameZeroes); !bytes.Equal(z, make([]byte, exportNameZeroes)) {
				t.Fatal("padding is not zero")
			}
		}
		// The next bytes must be the reply to our first request.
		if errno, data := c.do(cmdRead, 0, 0, 8, nil); errno != 0 || !bytes.Equal(data, make([]byte, 8)) {
			t.Fatalf("read after EXPORT_NAME: errno %d data %x", errno, data)
		}
	}
}

func TestExportNameUnknownCloses(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)
	c.sendOpt(optExportName, []byte("nope"))
	c.expectEOF()
}

func TestInfoAndGo(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MinBlock, c.PrefBlock, c.MaxPayload = 1, 4096, 1<<20 })
	ts.exports.Add("vol1", "the first volume", NewMemExport(5<<20))
	c := dial(t, ts.addr)
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)

	c.sendOpt(optInfo, infoGoData("missing"))
	if r := c.readOptReply(); r.typ != repErrUnknown || r.opt != optInfo {
		t.Fatalf("INFO unknown export: %+v", r)
	}

	c.sendOpt(optInfo, infoGoData("vol1", infoName, infoDescription, infoBlockSize))
	got := map[uint16][]byte{}
	replies := c.readOptReplies()
	if last := replies[len(replies)-1]; last.typ != repAck {
		t.Fatalf("INFO ended with %#x", last.typ)
	}
	for _, r := range replies[:len(replies)-1] {
		if r.typ != repInfo || r.opt != optInfo {
			t.Fatalf("unexpected reply %+v", r)
		}
		got[binary.BigEndian.Uint16(r.data)] = r.data[2:]
	}
	if e := got[infoExport]; len(e) != 10 || binary.BigEndian.Uint64(e) != 5<<20 {
		t.Fatalf("NBD_INFO_EXPORT %x", e)
	}
	if string(got[infoName]) != "vol1" || string(got[infoDescription]) != "the first volume" {
		t.Fatalf("name %q description %q", got[infoName], got[infoDescription])
	}
	bs := got[infoBlockSize]
	if len(bs) != 12 || binary.BigEndian.Uint32(bs) != 1 || binary.BigEndian.Uint32(bs[4:]) != 4096 ||
		binary.BigEndian.Uint32(bs[8:]) != 1<<20 {
		t.Fatalf("NBD_INFO_BLOCK_SIZE %x", bs)
	}

	c.sendOpt(optGo, infoGoData("missing"))
	if r := c.readOptReply(); r.typ != repErrUnknown || r.opt != optGo {
		t.Fatalf("GO unknown export: %+v", r)
	}
	c.sendOpt(optGo, []byte{0, 0, 0, 9, 'x'}) // name longer than the data
	if r := c.readOptReply(); r.typ != repErrInvalid {
		t.Fatalf("GO malformed: %+v", r)
	}
	c.sendOpt(optGo, infoGoData("vol1"))
	if last := c.readOptReplies(); last[len(last)-1].typ != repAck {
		t.Fatalf("GO: %+v", last)
	}
	payload := []byte("hello")
	if errno, _ := c.do(cmdWrite, 0, 100, 5, payload); errno != 0 {
		t.Fatalf("write errno %d", errno)
	}
	if errno, data := c.do(cmdRead, 0, 100, 5, nil); errno != 0 || !bytes.Equal(data, payload) {
		t.Fatalf("read errno %d %q", errno, data)
	}
}

func TestDefaultExport(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.DefaultExport = "main" })
	ts.exports.Add("main", "", NewMemExport(4096))
	_, size, _ := connect(t, ts.addr, "")
	if size != 4096 {
		t.Fatalf("size %d", size)
	}
}

func TestList(t *testing.T) {
	ts := startServer(t, nil)
	ts.exports.Add("b", "second", NewMemExport(4096))
	ts.exports.Add("a", "", NewMemExport(4096))
	c := dial(t, ts.addr)
	c.hello(clientFlagFixedNewstyle)
	c.sendOpt(optList, nil)
	replies := c.readOptReplies()
	if len(replies) != 3 || replies[2].typ != repAck {
		t.Fatalf("LIST replies %+v", replies)
	}
	for i, want := range []struct{ name, desc string }{{"a", ""}, {"b", "second"}} {
		d := replies[i].data
		n := binary.BigEndian.Uint32(d)
		if replies[i].typ != repServer || string(d[4:4+n]) != want.name || string(d[4+n:]) != want.desc {
			t.Fatalf("entry %d: %+v", i, replies[i])
		}
	}
	c.sendOpt(optList, []byte("x"))
	if r := c.readOptReply(); r.typ != repErrInvalid {
		t.Fatalf("LIST with data: %+v", r)
	}
}

func TestAbort(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.hello(clientFlagFixedNewstyle)
	c.sendOpt(optAbort, nil)
	if r := c.readOptReply(); r.typ != repAck || r.opt != optAbort {
		t.Fatalf("ABORT: %+v", r)
	}
	c.expectEOF()
}

func TestUnsupportedOptionsThenGo(t *testing.T) {
	ts := startServer(t, nil)
	ts.exports.Add("d", "", NewMemExport(4096))
	c := dial(t, ts.addr)
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)
	for _, opt := range []uint32{optStructuredReply, optStartTLS, optListMetaContext, optSetMetaContext,
		optExtendedHeaders, optPeekExport, 9999} {
		c.sendOpt(opt, []byte{0, 0, 0, 0})
		if r := c.readOptReply(); r.typ != repErrUnsup || r.opt != opt {
			t.Fatalf("option %d: %+v", opt, r)
		}
	}
	c.sendOpt(optGo, infoGoData("d"))
	if r := c.readOptReplies(); r[len(r)-1].typ != repAck {
		t.Fatalf("GO after unsupported options: %+v", r)
	}
	if errno, _ := c.do(cmdFlush, 0, 0, 0, nil); errno != 0 {
		t.Fatalf("flush errno %d", errno)
	}
}

func TestOversizedOption(t *testing.T) {
	ts := startServer(t, nil)
	ts.exports.Add("d", "", NewMemExport(4096))

	// Over the cap but discardable: TOO_BIG, and negotiation goes on.
	c := dial(t, ts.addr)
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)
	c.sendOpt(optInfo, make([]byte, maxOptionLen+1))
	if r := c.readOptReply(); r.typ != repErrTooBig {
		t.Fatalf("oversized option: %+v", r)
	}
	c.sendOpt(optGo, infoGoData("d"))
	if r := c.readOptReplies(); r[len(r)-1].typ != repAck {
		t.Fatalf("GO after oversized option: %+v", r)
	}

	// A claim of 4 GiB is never read: the server hangs up.
	c = dial(t, ts.addr)
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, optGo)
	b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	c.write(b)
	c.expectEOF()
}

func TestRefusedClients(t *testing.T) {
	ts := startServer(t, nil)
	for name, flags := range map[string]uint32{
		"no fixed newstyle": 0,
		"only no zeroes":    clientFlagNoZeroes,
		"unknown flag":      clientFlagFixedNewstyle | 1<<7,
	} {
		t.Run(name, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.hello(flags)
			c.expectEOF()
		})
	}
	c := dial(t, ts.addr)
	c.hello(clientFlagFixedNewstyle)
	c.write(make([]byte, 16)) // bad option magic
	c.expectEOF()
}
