package sdc

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"pflex/internal/layout"
	"pflex/internal/nowait"
	"pflex/internal/shm"
	"pflex/internal/wire"
)

// Local reads (DESIGN.md "Local reads"): an SDS on this host that mapped the region grants
// reads of the chunks it is primary for; the SDC then reads them from the SDS's device itself,
// checking the grant's entry before and after (a sequence lock the SDS holds odd while it
// writes the chunk, and revokes when anything the grant rests on changes). A read that cannot
// go that way, or whose entry changed under it, goes over the connection as before.

const (
	// grantRefused is how long a chunk whose grant was refused (not allocated yet, writes not
	// on every replica, not the primary any more) is not asked for again.
	grantRefused = time.Second
	// grantRenewBefore: a grant with less than this left is asked for again in the background
	// while it still serves reads. The SDS moves expiries on with its lease (2 s by default),
	// so this happens only when its lease is in trouble, or the token is about to expire.
	grantRenewBefore = 500 * time.Millisecond
	// grantAskTimeout bounds one grant request.
	grantAskTimeout = 2 * time.Second
	// reportDelay is how soon reads done under grants are reported to their SDS (ledger).
	reportDelay = 500 * time.Millisecond
	// reportRetry is how soon a report that got no answer is sent again; reportGiveUp is when
	// the SDC stops trying (the SDS has been unreachable that long) and the reads go uncounted.
	reportRetry  = time.Second
	reportGiveUp = 5 * time.Minute
)

// grantGens numbers the grants this process asks for: every request names a new generation,
// so an entry reused for another grant (of any SDS) never matches what an earlier reader saw.
var grantGens atomic.Uint32

func nextGrantGen() uint32 {
	for {
		if g := grantGens.Add(1); g != 0 {
			return g
		}
	}
}

// localReads is what one SDS connection lets this SDC read itself.
type localReads struct {
	region *shm.Region
	sc     *sdsConn
	log    wire.Logger
	// conns and addr reach the SDS again when sc breaks: the reads done under its grants are
	// reported over the next connection (nil conns: only over sc).
	conns *SDSConns
	addr  string

	mu      sync.Mutex
	grants  map[chunkRef]*chunkGrant
	files   map[devRef]*deviceFile
	off     bool // the SDS refused a grant request as such (local reads off there)
	closed  bool
	tallies map[int64]*readTally // per volume: reads not yet reported
	unsent  []readReport         // reports that got no answer, to be sent again as they are
	armed   bool                 // a report is scheduled
	reads   atomic.Int64         // reads served locally
	grantsN atomic.Int64         // grants in effect
}

type chunkRef struct{ vol, chunk int64 }
type devRef struct{ dev, ino uint64 }

// deviceFile is an SDS device opened through /proc for reading.
type deviceFile struct {
	f  *os.File
	rd *nowait.Op
}

// chunkGrant is the SDC's side of one grant: the entry it asked on and, once granted, what it
// may read. All fields are under localReads.mu.
type chunkGrant struct {
	entry    int
	e        *shm.GrantEntry
	entryOff uint64
	gen      uint32 // the grant in effect (0: none)
	epoch    int64
	dev      *deviceFile
	base     int64 // extent offset on the device
	size     int64
	askAfter int64 // shm.Now(): not asked again before
	asking   bool
}

type readTally struct{ ops, bytes uint64 }

// readReport is one report of a volume's local reads. It keeps its id when sent again, so
// that the SDS counts it once however often its answer is lost.
type readReport struct {
	vol   int64
	rep   wire.ReadReport
	tok   *issuedToken // registered on the connection when the report was made (nil: none)
	since time.Time    // when it was first sent
}

func newLocalReads(region *shm.Region, sc *sdsConn, log wire.Logger) *localReads {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &localReads{region: region, sc: sc, log: log, grants: map[chunkRef]*chunkGrant{}, files: map[devRef]*deviceFile{},
		tallies: map[int64]*readTally{}}
}

// read reads p at inChunk of chunk k from the device under its grant, if there is one for
// epoch and the read completed with the grant unchanged. false: read it over the connection.
func (lr *localReads) read(k chunkRef, epoch int64, p []byte, inChunk int64) bool {
	lr.mu.Lock()
	g := lr.grants[k]
	if g == nil || g.gen == 0 || g.epoch != epoch || inChunk < 0 || inChunk+int64(len(p)) > g.size {
		lr.mu.Unlock()
		return false
	}
	e, gen, dev, pos := g.e, g.gen, g.dev, g.base+inChunk
	lr.mu.Unlock()

	now := shm.Now()
	s := e.Load()
	if !e.Usable(s, gen, now) {
		if s>>32 != uint64(gen) || now >= e.Expires() {
			lr.ended(g, gen) // revoked or expired, not just written: ask again
		}
		return false
	}
	n := dev.rd.Do(p, pos)
	if n < len(p) {
		if _, err := dev.f.ReadAt(p[n:], pos+int64(n)); err != nil {
			return false
		}
	}
	if e.Load() != s { // written, revoked or replaced meanwhile: p may hold anything
		return false
	}
	if shm.Now() >= e.Expires() {
		// Expired during the read (this process was paused, say): the SDS's lease may have
		// ended before the data was read, and another copy taken writes since.
		return false
	}
	lr.reads.Add(1)
	lr.tally(k.vol, len(p))
	if e.Expires()-now < int64(grantRenewBefore) {
		lr.ask(k, epoch, 0)
	}
	return true
}

// ended notes that grant gen of g is no longer in effect.
func (lr *localReads) ended(g *chunkGrant, gen uint32) {
	lr.mu.Lock()
	if g.gen == gen {
		g.gen = 0
		lr.grantsN.Add(-1)
	}
	lr.mu.Unlock()
}

// tally counts a local read for the volume's next report, scheduling one.
func (lr *localReads) tally(vol int64, n int) {
	lr.mu.Lock()
	t := lr.tallies[vol]
	if t == nil {
		t = &readTally{}
		lr.tallies[vol] = t
	}
	t.ops++
	t.bytes += uint64(n)
	lr.armLocked(reportDelay)
	lr.mu.Unlock()
}

// armLocked schedules a report after d unless one is scheduled. Under mu.
func (lr *localReads) armLocked(d time.Duration) {
	if lr.armed {
		return
	}
	lr.armed = true
	time.AfterFunc(d, func() { lr.report(context.Background(), false) })
}

// report sends the tallies to the SDS, which enters them in the token ledger, and again the
// reports that got no answer before. One that fails again is kept for the next round, unless
// final (the SDC is stopping), refused as such, or the SDS has not taken it for reportGiveUp:
// then its reads are missing from the ledger, and the log says how many.
func (lr *localReads) report(ctx context.Context, final bool) {
	now := time.Now()
	lr.mu.Lock()
	reports := lr.unsent
	for vol, t := range lr.tallies {
		reports = append(reports, readReport{vol: vol, rep: wire.ReadReport{Ops: t.ops, Bytes: t.bytes, ID: newReportID()},
			tok: lr.sc.token(vol), since: now})
	}
	lr.tallies, lr.unsent, lr.armed = map[int64]*readTally{}, nil, false
	lr.mu.Unlock()
	if len(reports) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, grantAskTimeout)
	defer cancel()
	var unsent []readReport
	for _, r := range reports {
		err := lr.send(ctx, r)
		switch {
		case err == nil:
		case final || now.Sub(r.since) >= reportGiveUp || reportRefused(err):
			lr.log.Warn("reporting local reads to the SDS failed; they are missing from the token ledger",
				"volume_id", r.vol, "reads", r.rep.Ops, "bytes", r.rep.Bytes, "error", err)
		default:
			if r.since.Equal(now) {
				lr.log.Debug("reporting local reads to the SDS failed; trying again", "volume_id", r.vol, "error", err)
			}
			unsent = append(unsent, r)
		}
	}
	if len(unsent) > 0 {
		lr.mu.Lock()
		lr.unsent = append(lr.unsent, unsent...)
		lr.armLocked(reportRetry)
		lr.mu.Unlock()
	}
}

// send sends one report over the SDS's live connection: the grants' own while it lasts, then
// the pool's next one to the same SDS, where the report's token is registered first if that
// connection has none for the volume.
func (lr *localReads) send(ctx context.Context, r readReport) error {
	sc := lr.sc
	if sc.c.Err() != nil && lr.conns != nil {
		var err error
		if sc, err = lr.conns.get(ctx, lr.addr); err != nil {
			return err
		}
	}
	// On the grants' own connection the SDS holds the token the reads were done under, even
	// after an unmap made the SDC forget it.
	if sc != lr.sc && sc.token(r.vol) == nil && r.tok != nil {
		if err := sc.auth(ctx, r.vol, r.tok); err != nil {
			return err
		}
	}
	_, err := sc.c.Do(ctx, wire.Request{Op: wire.OpReadReport, VolumeID: r.vol, Data: r.rep.Encode()})
	return err
}

// reportRefused tells whether the SDS turned a report down as such (it would again).
func reportRefused(err error) bool {
	st, ok := wire.StatusOf(err)
	return ok && st == wire.StatusProto
}

// newReportID names a read report; 0 means none.
func newReportID() uint64 {
	for {
		if id := rand.Uint64(); id != 0 {
			return id
		}
	}
}

// ask requests a grant on chunk k (at offset off of the volume) for epoch in the background,
// unless one is being asked for, or was refused lately.
func (lr *localReads) ask(k chunkRef, epoch, off int64) {
	now := shm.Now()
	lr.mu.Lock()
	if lr.off || lr.closed {
		lr.mu.Unlock()
		return
	}
	g := lr.grants[k]
	if g == nil {
		i, ok := lr.region.AllocGrant()
		if !ok { // every entry is in use: this chunk is read over the connection
			lr.mu.Unlock()
			return
		}
		g = &chunkGrant{entry: i}
		g.e, g.entryOff = lr.region.GrantEntry(i)
		lr.grants[k] = g
	}
	if g.asking || now < g.askAfter || (g.gen != 0 && g.epoch == epoch && g.e.Expires()-now >= int64(grantRenewBefore)) {
		lr.mu.Unlock()
		return // being asked, refused lately, or in effect and not due for renewal
	}
	if off == 0 && g.size > 0 {
		off = k.chunk * g.size
	}
	g.asking = true
	lr.mu.Unlock()
	go lr.grant(k, g, epoch, off)
}

// grant asks the SDS for the grant and installs it.
func (lr *localReads) grant(k chunkRef, g *chunkGrant, epoch, off int64) {
	ctx, cancel := context.WithTimeout(context.Background(), grantAskTimeout)
	defer cancel()
	gen := nextGrantGen()
	req := wire.Request{Op: wire.OpReadGrant, VolumeID: k.vol, Offset: off, Epoch: epoch,
		Data: wire.GrantRequest{Entry: wire.ShmRef{Region: lr.region.Desc().ID, Offset: g.entryOff, Length: shm.GrantEntrySize}, Gen: gen}.Encode()}
	resp, err := lr.sc.c.Do(ctx, req)
	var rg wire.ReadGrant
	if err == nil {
		rg, err = wire.DecodeReadGrant(resp.Data)
	}
	var dev *deviceFile
	if err == nil {
		if dev, err = lr.device(rg); err != nil {
			// Not allowed to open its descriptors (another user), or not the same host after all.
			lr.log.Warn("cannot open the device an SDS granted reads of; reads go over the connection", "error", err)
			lr.mu.Lock()
			lr.off = true
			lr.mu.Unlock()
		}
	}
	lr.mu.Lock()
	defer lr.mu.Unlock()
	g.asking = false
	if lr.closed {
		delete(lr.grants, k)
		lr.region.FreeGrant(g.entry)
		return
	}
	if err != nil {
		g.askAfter = shm.Now() + int64(grantRefused)
		if st, ok := wire.StatusOf(err); ok && st == wire.StatusProto {
			lr.off = true // local reads are off on that SDS (or it cannot use our entries)
			lr.log.Debug("SDS refuses read grants; reads go over the connection", "error", err)
		}
		return
	}
	if g.gen == 0 {
		lr.grantsN.Add(1)
	}
	g.gen, g.epoch, g.dev, g.base, g.size = gen, epoch, dev, rg.Offset, rg.Size
}

// device opens (once per connection) the SDS device a grant names, through /proc, and checks
// it is the file the SDS named.
func (lr *localReads) device(rg wire.ReadGrant) (*deviceFile, error) {
	ref := devRef{rg.Dev, rg.Ino}
	lr.mu.Lock()
	d := lr.files[ref]
	lr.mu.Unlock()
	if d != nil {
		return d, nil
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/fd/%d", rg.PID, rg.FD))
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Dev != rg.Dev || st.Ino != rg.Ino {
		f.Close()
		return nil, fmt.Errorf("/proc/%d/fd/%d is not the device the SDS named (%v)", rg.PID, rg.FD, err)
	}
	var rc syscall.RawConn
	if c, err := f.SyscallConn(); err == nil {
		rc = c
	}
	d = &deviceFile{f: f, rd: nowait.New(unix.SYS_PREADV2, rc)}
	lr.mu.Lock()
	defer lr.mu.Unlock()
	if have := lr.files[ref]; have != nil {
		f.Close()
		return have, nil
	}
	if lr.closed {
		f.Close()
		return nil, fmt.Errorf("connection closed")
	}
	lr.files[ref] = d
	return d, nil
}

// forget drops the grants of volume vol (unmapped).
func (lr *localReads) forget(vol int64) {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	for k, g := range lr.grants {
		if k.vol == vol && !g.asking {
			lr.drop(k, g)
		}
	}
}

// drop ends the SDC's use of grant g. Under mu.
func (lr *localReads) drop(k chunkRef, g *chunkGrant) {
	if g.gen != 0 {
		lr.grantsN.Add(-1)
	}
	g.gen = 0
	delete(lr.grants, k)
	lr.region.FreeGrant(g.entry)
}

// close ends every grant (the connection is gone or being replaced) after reporting what is
// left, and closes the devices; reads in progress fail over to the connection.
func (lr *localReads) close() {
	lr.mu.Lock()
	if lr.closed {
		lr.mu.Unlock()
		return
	}
	lr.closed = true
	for k, g := range lr.grants {
		if !g.asking {
			lr.drop(k, g)
		} else {
			g.gen = 0 // its grant goroutine sees closed and leaves the entry alone
		}
	}
	files := lr.files
	lr.files = map[devRef]*deviceFile{}
	lr.mu.Unlock()
	for _, d := range files {
		d.f.Close()
	}
}

// readLocal serves a read from the SDS devices on this host when the read lies in one chunk
// whose primary granted it.
func (v *Volume) readLocal(p []byte, off int64) bool {
	l := v.lay.Load()
	if l == nil || len(p) == 0 || off < 0 || off+int64(len(p)) > l.SizeBytes {
		return false
	}
	chunk := off / l.ChunkSize
	if (off+int64(len(p))-1)/l.ChunkSize != chunk {
		return false
	}
	lr := v.conns.local(primaryAddr(l, chunk))
	if lr == nil {
		return false
	}
	if !lr.read(chunkRef{v.id, chunk}, l.ChunkEpoch(chunk), p, off-chunk*l.ChunkSize) {
		return false
	}
	v.stats.localReads.Add(1)
	return true
}

// primaryAddr is the data address of chunk's primary in l ("" when it has none).
func primaryAddr(l *layout.Layout, chunk int64) string {
	reps := l.Replicas(chunk)
	if len(reps) == 0 {
		return ""
	}
	m, _ := l.Member(reps[0])
	return m.Addr
}

// local returns the local reads of the live connection to addr, without dialing.
func (p *SDSConns) local(addr string) *localReads {
	if addr == "" {
		return nil
	}
	p.mu.Lock()
	ep := p.addrs[addr]
	p.mu.Unlock()
	if ep == nil {
		return nil
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.conn == nil || ep.conn.local == nil || ep.conn.c.Err() != nil {
		return nil
	}
	return ep.conn.local
}
