package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestRangeAndAlignment(t *testing.T) {
	const size = 1 << 20
	ts := startServer(t, func(c *Config) { c.MaxPayload = 64 << 10 })
	ts.exports.Add("d", "", NewMemExport(size))
	c, _, _ := connect(t, ts.addr, "d")

	// Unaligned IO works: MinBlock is 1.
	if errno, _ := c.do(cmdWrite, 0, 4093, 7, []byte("unalign")); errno != 0 {
		t.Fatalf("unaligned write errno %d", errno)
	}
	if errno, data := c.do(cmdRead, 0, 4092, 9, nil); errno != 0 || string(data) != "\x00unalign\x00" {
		t.Fatalf("unaligned read errno %d %q", errno, data)
	}
	// The last byte is reachable; one past it is not.
	if errno, _ := c.do(cmdWrite, cmdFlagFUA, size-1, 1, []byte{9}); errno != 0 {
		t.Fatalf("write last byte errno %d", errno)
	}
	for _, tc := range []struct {
		name   string
		cmd    uint16
		flags  uint16
		off    uint64
		length uint32
		want   uint32
	}{
		{"read past end", cmdRead, 0, size - 1, 2, errnoInval},
		{"read offset overflow", cmdRead, 0, 1<<64 - 1, 2, errnoInval},
		{"read beyond MaxPayload", cmdRead, 0, 0, 64<<10 + 1, errnoInval},
		{"read zero length", cmdRead, 0, size, 0, 0},
		{"write past end", cmdWrite, 0, size, 1, errnoNoSpc},
		{"write beyond MaxPayload", cmdWrite, 0, 0, 64<<10 + 1, errnoInval},
		{"write zero length", cmdWrite, cmdFlagFUA, 0, 0, 0},
		{"trim past end", cmdTrim, 0, size - 4096, 8192, errnoInval},
		{"zeroes past end", cmdWriteZeroes, 0, size - 4096, 8192, errnoNoSpc},
		{"unknown command", 42, 0, 0, 0, errnoInval},
		{"block status without negotiation", cmdBlockStatus, 0, 0, 4096, errnoInval},
		{"read with DF unnegotiated", cmdRead, cmdFlagDF, 0, 1, errnoInval},
		{"write with NO_HOLE", cmdWrite, cmdFlagNoHole, 0, 1, errnoInval},
		{"unknown flag", cmdFlush, 1 << 9, 0, 0, errnoInval},
	} {
		var payload []byte
		if tc.cmd == cmdWrite {
			payload = bytes.Repeat([]byte{0xee}, int(tc.length))
		}
		if errno, _ := c.do(tc.cmd, tc.flags, tc.off, tc.length, payload); errno != tc.want {
			t.Errorf("%s: errno %d, want %d", tc.name, errno, tc.want)
		}
	}
	// Refused WRITE payloads were consumed: the stream is still in step and
	// nothing was written.
	if errno, data := c.do(cmdRead, 0, 0, 4, nil); errno != 0 || !bytes.Equal(data, make([]byte, 4)) {
		t.Fatalf("read after refused writes: errno %d %x", errno, data)
	}
	if errno, data := c.do(cmdRead, 0, size-1, 1, nil); errno != 0 || data[0] != 9 {
		t.Fatalf("read last byte: errno %d %x", errno, data)
	}
}

func TestTrimZeroesFlush(t *testing.T) {
	ts := startServer(t, nil)
	mem := NewMemExport(64 << 10)
	ts.exports.Add("d", "", mem)
	c, _, _ := connect(t, ts.addr, "d")
	ones := bytes.Repeat([]byte{1}, 32<<10)
	if errno, _ := c.do(cmdWrite, 0, 0, uint32(len(ones)), ones); errno != 0 {
		t.Fatal(errno)
	}
	if errno, _ := c.do(cmdTrim, cmdFlagFUA, 4096, 8192, nil); errno != 0 {
		t.Fatal(errno)
	}
	if errno, _ := c.do(cmdWriteZeroes, cmdFlagNoHole, 20000, 100, nil); errno != 0 {
		t.Fatal(errno)
	}
	if errno, _ := c.do(cmdFlush, 0, 0, 0, nil); errno != 0 {
		t.Fatal(errno)
	}
	_, data := c.do(cmdRead, 0, 0, uint32(len(ones)), nil)
	want := bytes.Clone(ones)
	clear(want[4096 : 4096+8192])
	clear(want[20000:20100])
	if !bytes.Equal(data, want) {
		t.Fatal("contents after trim and write zeroes differ")
	}
	if got := mem.AllocatedPages(); got != 6 {
		t.Fatalf("allocated pages %d, want 6 (two trimmed)", got)
	}
	st := ts.srv.Stats()
	if st.Writes != 1 || st.Trims != 1 || st.WriteZeroes != 1 || st.Flushes != 1 || st.Reads != 1 ||
		st.WriteBytes != 32<<10 || st.TrimBytes != 8192 || st.ZeroBytes != 100 {
		t.Fatalf("stats %+v", st)
	}
}

func TestReadOnlyExport(t *testing.T) {
	ts := startServer(t, nil)
	mem := NewMemExport(1 << 20)
	mem.WriteAt(t.Context(), []byte("data"), 0, false)
	ts.exports.Add("ro", "", NewReadOnlyExport(mem))
	c, _, flags := connect(t, ts.addr, "ro")
	if flags&tflagReadOnly == 0 || flags&(tflagSendTrim|tflagSendWriteZeroes) != 0 {
		t.Fatalf("transmission flags %#x", flags)
	}
	for _, cmd := range []uint16{cmdWrite, cmdTrim, cmdWriteZeroes} {
		var payload []byte
		if cmd == cmdWrite {
			payload = []byte("xxxx")
		}
		if errno, _ := c.do(cmd, 0, 0, 4, payload); errno != errnoPerm {
			t.Errorf("%s on read-only export: errno %d, want EPERM", cmdName(cmd), errno)
		}
	}
	if errno, data := c.do(cmdRead, 0, 0, 4, nil); errno != 0 || string(data) != "data" {
		t.Fatalf("read: errno %d %q", errno, data)
	}
	if errno, _ := c.do(cmdFlush, 0, 0, 0, nil); errno != 0 {
		t.Fatalf("flush: errno %d", errno)
	}
}

func TestBadRequestMagicCloses(t *testing.T) {
	ts := startServer(t, nil)
	ts.exports.Add("d", "", NewMemExport(4096))
	c, _, _ := connect(t, ts.addr, "d")
	c.write(make([]byte, requestHeaderSize))
	c.expectEOF()
	if st := ts.srv.Stats(); st.ProtocolErrors != 1 {
		t.Fatalf("protocol errors %d", st.ProtocolErrors)
	}
}

func TestOutOfOrderReplies(t *testing.T) {
	ts := startServer(t, nil)
	slow := delayExport{MemExport: NewMemExport(1 << 20), delayOff: 0, delay: 300 * time.Millisecond}
	ts.exports.Add("d", "", slow)
	c, _, _ := connect(t, ts.addr, "d")
	readLen := map[uint64]int{}
	c.send(cmdRead, 0, 100, 0, 512, nil) // slow
	readLen[100] = 512
	for h := uint64(1); h <= 20; h++ {
		c.send(cmdRead, 0, h, h*4096, 4096, nil)
		readLen[h] = 4096
	}
	var order []uint64
	for range 21 {
		h, errno, _ := c.readReply(readLen)
		if errno != 0 {
			t.Fatalf("handle %d errno %d", h, errno)
		}
		order = append(order, h)
	}
	if order[len(order)-1] != 100 {
		t.Fatalf("slow read was not answered last: %v", order)
	}
}

// TestManyInFlight pipelines hundreds of mixed requests (more than
// MaxInflight) and checks every reply against a model.
func TestManyInFlight(t *testing.T) {
	const size, blk = 4 << 20, 4096
	ts := startServer(t, func(c *Config) { c.MaxInflight, c.MaxInflightBytes, c.MaxPayload = 8, 64<<10, 32<<10 })
	ts.exports.Add("d", "", NewMemExport(size))
	c, _, _ := connect(t, ts.addr, "d")
	rng := rand.New(rand.NewPCG(1, 2))
	model := make([]byte, size)
	// Phase 1: writes to distinct blocks, all in flight at once.
	const n = 300
	go func() {
		for h := range uint64(n) {
			p := make([]byte, blk)
			for i := range p {
				p[i] = byte(h) ^ byte(i)
			}
			c.send(cmdWrite, 0, h, h*blk, blk, p)
		}
	}()
	for h := range uint64(n) {
		for i := range blk {
			model[h*blk+uint64(i)] = byte(h) ^ byte(i)
		}
	}
	seen := map[uint64]bool{}
	for range n {
		h, errno, _ := c.readReply(nil)
		if errno != 0 || seen[h] {
			t.Fatalf("write handle %d errno %d dup %v", h, errno, seen[h])
		}
		seen[h] = true
	}
	// Phase 2: random reads, all in flight.
	type rd struct{ off, n int }
	reads := map[uint64]rd{}
	readLen := map[uint64]int{}
	for h := range uint64(n) {
		r := rd{off: rng.IntN(size - 20000), n: 1 + rng.IntN(20000)}
		reads[h], readLen[h] = r, r.n
	}
	go func() {
		for h := range uint64(n) {
			c.send(cmdRead, 0, h, uint64(reads[h].off), uint32(reads[h].n), nil)
		}
	}()
	for range n {
		h, errno, data := c.readReply(readLen)
		r := reads[h]
		if errno != 0 || !bytes.Equal(data, model[r.off:r.off+r.n]) {
			t.Fatalf("read handle %d errno %d: data differs", h, errno)
		}
	}
}

func TestDiscFinishesInFlight(t *testing.T) {
	ts := startServer(t, nil)
	ts.exports.Add("d", "", delayExport{MemExport: NewMemExport(1 << 20), delay: 200 * time.Millisecond})
	c, _, _ := connect(t, ts.addr, "d")
	c.send(cmdRead, 0, 5, 0, 4096, nil)
	c.send(cmdDisc, 0, 6, 0, 0, nil)
	if h, errno, data := c.readReply(map[uint64]int{5: 4096}); h != 5 || errno != 0 || len(data) != 4096 {
		t.Fatalf("reply handle %d errno %d", h, errno)
	}
	c.expectEOF()
}

// stuckWrites holds every WRITE until its context ends and reports why it ended.
type stuckWrites struct {
	*MemExport
	ended chan error
}

func (s stuckWrites) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	<-ctx.Done()
	s.ended <- ctx.Err()
	return ctx.Err()
}

// A client that closes its connection with a WRITE in flight, without DISC, has given up on it:
// the export's context for it ends, so an SDC stops retrying it rather than landing it later.
func TestHardDisconnectCancelsInFlight(t *testing.T) {
	ts := startServer(t, nil)
	stuck := stuckWrites{MemExport: NewMemExport(1 << 20), ended: make(chan error, 1)}
	ts.exports.Add("d", "", stuck)
	c, _, _ := connect(t, ts.addr, "d")
	c.send(cmdWrite, 0, 1, 0, 4096, make([]byte, 4096))
	c.send(cmdRead, 0, 2, 0, 4096, nil) // the payload was read: the WRITE is in the export
	if h, errno, _ := c.readReply(map[uint64]int{2: 4096}); h != 2 || errno != 0 {
		t.Fatalf("read: handle %d errno %d", h, errno)
	}
	c.nc.Close()
	select {
	case err := <-stuck.ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the write ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write's context did not end after the client went away")
	}
}

func TestExportRemoved(t *testing.T) {
	ts := startServer(t, nil)
	ts.exports.Add("gone", "", delayExport{MemExport: NewMemExport(1 << 20), delay: 200 * time.Millisecond})
	ts.exports.Add("stays", "", NewMemExport(1<<20))
	c, _, _ := connect(t, ts.addr, "gone")
	other, _, _ := connect(t, ts.addr, "stays")
	c.send(cmdRead, 0, 5, 0, 4096, nil)
	time.Sleep(20 * time.Millisecond) // let the read start
	ts.exports.Remove("gone")
	ts.srv.ExportRemoved("gone")
	if h, errno, _ := c.readReply(map[uint64]int{5: 4096}); h != 5 || errno != 0 {
		t.Fatalf("in-flight read: handle %d errno %d", h, errno)
	}
	c.expectEOF()
	if errno, _ := other.do(cmdFlush, 0, 0, 0, nil); errno != 0 {
		t.Fatalf("other export's client: errno %d", errno)
	}
	d := dial(t, ts.addr)
	d.hello(clientFlagFixedNewstyle)
	d.sendOpt(optGo, infoGoData("gone"))
	if r := d.readOptReply(); r.typ != repErrUnknown {
		t.Fatalf("GO removed export: %+v", r)
	}
}

func TestCloseDropsClients(t *testing.T) {
	ts := startServer(t, nil)
	ts.exports.Add("d", "", NewMemExport(4096))
	c, _, _ := connect(t, ts.addr, "d")
	h := dial(t, ts.addr) // still in the handshake
	h.hello(clientFlagFixedNewstyle)
	start := time.Now()
	if err := ts.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("Close took %v", time.Since(start))
	}
	c.expectEOF()
	h.expectEOF()
	if st := ts.srv.Stats(); st.ActiveConnections != 0 || st.Connections != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCloseCancelsStuckRequests(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.ShutdownGrace = 100 * time.Millisecond })
	ts.exports.Add("d", "", delayExport{MemExport: NewMemExport(4096), delay: time.Hour})
	c, _, _ := connect(t, ts.addr, "d")
	c.send(cmdRead, 0, 1, 0, 16, nil)
	time.Sleep(20 * time.Millisecond)
	go ts.srv.Close()
	h, errno, _ := c.readReply(nil)
	if h != 1 || errno != errnoShutdown {
		t.Fatalf("stuck read: handle %d errno %d, want ESHUTDOWN", h, errno)
	}
	c.expectEOF()
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Exports: NewExportMap()}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tune := range map[string]func(*Config){
		"no exports":      func(c *Config) { c.Exports = nil },
		"min block":       func(c *Config) { c.MinBlock = 3 },
		"pref block":      func(c *Config) { c.PrefBlock = 256 },
		"max payload":     func(c *Config) { c.MaxPayload = 100 },
		"inflight":        func(c *Config) { c.MaxInflight = -1 },
		"inflight bytes":  func(c *Config) { c.MaxInflightBytes = 1 },
		"payload vs pref": func(c *Config) { c.PrefBlock = 1 << 20; c.MaxPayload = 64 << 10 },
	} {
		c := ok
		tune(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
	if err := NewServer(Config{}).Serve(nil); err == nil {
		t.Fatal("Serve accepted a config without Exports")
	}
}

var _ = binary.BigEndian

// ownBuffers is a MemExport that supplies WRITE buffers of its own (as the SDC's shared memory
// does) and checks that every WriteAt gets one of them and every one comes back.
type ownBuffers struct {
	*MemExport
	mu                 sync.Mutex
	out                map[*byte]bool
	given, back, wrote int
	foreign            bool
}

func (o *ownBuffers) WriteBuffer(n int) []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.given == 2 {
		return nil // "none free": the server uses its own pool
	}
	b := make([]byte, n)
	o.out[&b[0]] = true
	o.given++
	return b
}

func (o *ownBuffers) ReleaseWriteBuffer(b []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(b) == 0 || !o.out[&b[0]] {
		return false
	}
	delete(o.out, &b[0])
	o.back++
	return true
}

func (o *ownBuffers) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	o.mu.Lock()
	if !o.out[&p[0]] {
		o.foreign = true
	}
	o.wrote++
	o.mu.Unlock()
	return o.MemExport.WriteAt(ctx, p, off, fua)
}

func TestWritePayloadsLandInTheExportsBuffers(t *testing.T) {
	ts := startServer(t, nil)
	e := &ownBuffers{MemExport: NewMemExport(1 << 20), out: map[*byte]bool{}}
	ts.exports.Add("d", "", e)
	c, _, _ := connect(t, ts.addr, "d")
	for i := range 3 {
		if errno, _ := c.do(cmdWrite, 0, uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i + 1)}, 4096)); errno != 0 {
			t.Fatalf("write %d: errno %d", i, errno)
		}
	}
	if errno, data := c.do(cmdRead, 0, 4096, 4096, nil); errno != 0 || !bytes.Equal(data, bytes.Repeat([]byte{2}, 4096)) {
		t.Fatalf("read back: errno %d", errno)
	}
	// Buffers come back after the reply is sent, so possibly after the client has it.
	released(t, &e.mu, func() bool { return len(e.out) == 0 })
	e.mu.Lock()
	defer e.mu.Unlock()
	// Two writes in the export's buffers, the third (none given) in the server's; all returned.
	if e.given != 2 || e.back != 2 || len(e.out) != 0 || e.wrote != 3 || !e.foreign {
		t.Fatalf("given %d, back %d, outstanding %d, writes %d, one in the server's buffer %v", e.given, e.back, len(e.out), e.wrote, e.foreign)
	}
}

// ownReads is a MemExport that serves reads of 8 KiB or more from buffers of its own.
type ownReads struct {
	*MemExport
	mu         sync.Mutex
	out        map[*byte]bool
	own, plain int
}

func (o *ownReads) ReadBuffered(ctx context.Context, n int, off int64) ([]byte, error) {
	if n < 8192 {
		return nil, nil
	}
	b := make([]byte, n)
	if err := o.MemExport.ReadAt(ctx, b, off); err != nil {
		return nil, err
	}
	o.mu.Lock()
	o.out[&b[0]] = true
	o.own++
	o.mu.Unlock()
	return b, nil
}

func (o *ownReads) ReleaseReadBuffer(b []byte) {
	o.mu.Lock()
	delete(o.out, &b[0])
	o.mu.Unlock()
}

func (o *ownReads) ReadAt(ctx context.Context, p []byte, off int64) error {
	o.mu.Lock()
	o.plain++
	o.mu.Unlock()
	return o.MemExport.ReadAt(ctx, p, off)
}

func TestReadsServedFromTheExportsBuffers(t *testing.T) {
	ts := startServer(t, nil)
	e := &ownReads{MemExport: NewMemExport(1 << 20), out: map[*byte]bool{}}
	ts.exports.Add("d", "", e)
	c, _, _ := connect(t, ts.addr, "d")
	// The read-only view of the same export keeps its read buffers.
	if _, ok := NewReadOnlyExport(e).(ReadBuffers); !ok {
		t.Fatal("a read-only export hides the export's read buffers")
	}
	if _, ok := NewReadOnlyExport(&ownBuffers{MemExport: NewMemExport(4096)}).(WriteBuffers); ok {
		t.Fatal("a read-only export offers write buffers")
	}
	data := bytes.Repeat([]byte{5, 6, 7}, 10000)
	if errno, _ := c.do(cmdWrite, 0, 100, uint32(len(data)), data); errno != 0 {
		t.Fatalf("write: errno %d", errno)
	}
	for _, n := range []int{4096, len(data)} {
		if errno, got := c.do(cmdRead, 0, 100, uint32(n), nil); errno != 0 || !bytes.Equal(got, data[:n]) {
			t.Fatalf("read of %d: errno %d", n, errno)
		}
	}
	released(t, &e.mu, func() bool { return len(e.out) == 0 })
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.own != 1 || e.plain != 1 || len(e.out) != 0 {
		t.Fatalf("own %d, plain %d, not released %d", e.own, e.plain, len(e.out))
	}
}

// released waits (up to 5 s) until done, called under mu, reports true.
func released(t *testing.T, mu *sync.Mutex, done func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		mu.Lock()
		ok := done()
		mu.Unlock()
		if ok {
			return
		}
	}
}
