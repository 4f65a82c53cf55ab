package sds

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"pflex/fsm"
	"pflex/internal/agent"
	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/internal/token"
	"pflex/internal/wire"
)

const (
	testChunk = 64 << 10
	testSize  = 16 * testChunk
)

// fakeMDM is a one-MDM API: registration (SDS ids in order), heartbeats carrying the IO state,
// volume layouts over the registered SDSs, and the token ACK ledger.
type fakeMDM struct {
	t   testing.TB
	srv *httptest.Server
	key []byte

	mu        sync.Mutex
	ids       map[string]int64 // node id -> SDS id
	addrs     map[int64]string // SDS id -> data addr
	ioVersion int64
	gen       int64 // map generation of every volume
	epoch     int64
	thick     map[int64]bool
	layoutGet int
	acks      []api.AckRequest
	ackIDs    map[string]bool
	leaseMs   int64           // granted to every SDS in registration and heartbeat answers
	noLease   map[string]bool // node ids granted no lease
	excluded  []layout.Exclusion
	rebuilds  []layout.Rebuild
	reports   []api.RebuildReport
	joined    map[int64]int64 // SDS id -> epoch it joined the layouts (-1: not a member)
	// expect SDSs make the cluster: layout epochs are announced (and so layouts fetched by the
	// SDSs' rebuild executors) only once they all registered, since the fake's layouts list
	// every registered SDS and a layout fetched earlier would miss some at the same epoch.
	expect      int
	epochsKnown map[string]bool // node ids that were sent layout epochs
}

func newFakeMDM(t testing.TB) *fakeMDM {
	f := &fakeMDM{t: t, key: token.NewKey(), ids: map[string]int64{}, addrs: map[int64]string{},
		ioVersion: 1, gen: 1, epoch: 1, thick: map[int64]bool{}, joined: map[int64]int64{}, epochsKnown: map[string]bool{}, ackIDs: map[string]bool{}, leaseMs: 5000, noLease: map[string]bool{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeMDM) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeMDM) ioStateLocked(node string) *api.IOState {
	st := &api.IOState{Version: f.ioVersion, Keys: []api.TokenKey{{ID: 1, Key: f.key}},
		Generations: map[string]int64{"1": f.gen, "2": f.gen}}
	if len(f.ids) >= f.expect {
		st.LayoutEpochs = map[string]int64{"1": f.epoch, "2": f.epoch}
		f.epochsKnown[node] = true
	}
	return st
}

func (f *fakeMDM) lease(node string) int64 {
	if f.noLease[node] {
		return 0
	}
	return f.leaseMs
}

// exclude takes SDS id out of every layout (as the MDM does when it commits it down).
func (f *fakeMDM) exclude(id int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch++
	f.ioVersion++
	f.excluded = append(f.excluded, layout.Exclusion{SDSID: id, Epoch: f.epoch})
}

func (f *fakeMDM) layoutLocked(vol int64) layout.Layout {
	l := layout.Layout{VolumeID: vol, Epoch: f.epoch, ChunkSize: testChunk, SizeBytes: testSize, Thick: f.thick[vol],
		Excluded: append([]layout.Exclusion(nil), f.excluded...), Rebuilds: append([]layout.Rebuild(nil), f.rebuilds...)}
	for id := int64(1); id <= int64(len(f.addrs)); id++ {
		if f.joined[id] >= 0 {
			l.Members = append(l.Members, layout.Member{SDSID: id, Weight: 100, Addr: f.addrs[id], Joined: f.joined[id]})
		}
	}
	return l
}

// layout is the layout the SDSs are served (as the SDC would fetch it).
func (f *fakeMDM) layout(vol int64) layout.Layout {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.layoutLocked(vol)
}

func (f *fakeMDM) serve(w http.ResponseWriter, r *http.Request) {
	self := f.addr()
	w.Header().Set(api.HeaderLeader, self)
	if r.Header.Get("Authorization") != "Bearer k" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(v any) { json.NewEncoder(w).Encode(v) }
	switch {
	case r.URL.Path == "/cluster/status":
		reply(map[string]any{"leader_id": "mdm-1", "leader_api": self})
	case r.URL.Path == agent.PathRegister:
		var req fsm.RegisterNode
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		id, ok := f.ids[req.ID]
		if !ok {
			id = int64(len(f.ids) + 1)
			f.ids[req.ID] = id
		}
		f.addrs[id] = req.DataAddr
		reply(api.RegisterResponse{Registration: fsm.Registration{SDSID: id}, LeaderID: "mdm-1", LeaderAPI: self, IO: f.ioStateLocked(req.ID), LeaseMs: f.lease(req.ID)})
	case r.URL.Path == agent.PathHeartbeat:
		var req api.HeartbeatRequest
		json.NewDecoder(r.Body).Decode(&req)
		resp := api.HeartbeatResponse{LeaderID: "mdm-1", LeaderAPI: self, Term: 1, State: "up", LeaseMs: f.lease(req.ID)}
		if req.IOVersion != f.ioVersion || (!f.epochsKnown[req.ID] && len(f.ids) >= f.expect) {
			resp.IO = f.ioStateLocked(req.ID)
		}
		reply(resp)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/vol/") && strings.HasSuffix(r.URL.Path, "/layout"):
		vol, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/vol/"), "/layout"), 10, 64)
		f.layoutGet++
		reply(f.layoutLocked(vol))
	case r.Method == http.MethodPost && r.URL.Path == "/rebuild/report":
		var rep api.RebuildReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.reports = append(f.reports, rep)
		reply(map[string]any{})
	case r.Method == http.MethodPost && r.URL.Path == "/token/ack":
		var req api.AckRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		rid := r.Header.Get(api.HeaderRequestID)
		if rid == "" {
			f.t.Errorf("ACK batch without a request id")
		}
		if !f.ackIDs[rid] {
			f.ackIDs[rid] = true
			f.acks = append(f.acks, req)
		}
		reply(map[string]any{})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// ledger sums the ACKs per SDS id.
func (f *fakeMDM) ledger() map[int64]fsm.TokenAck {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int64]fsm.TokenAck{}
	for _, b := range f.acks {
		for _, e := range b.Entries {
			s := out[b.SDSID]
			s.ReadOps += e.ReadOps
			s.ReadBytes += e.ReadBytes
			s.WriteOps += e.WriteOps
			s.WriteBytes += e.WriteBytes
			s.TokenID = e.TokenID
			s.SDCID = e.SDCID
			s.VolumeID = e.VolumeID
			out[b.SDSID] = s
		}
	}
	return out
}

// bump moves every volume's map generation (an unmap) and the IO state version.
func (f *fakeMDM) bump() {
	f.mu.Lock()
	f.gen++
	f.ioVersion++
	f.mu.Unlock()
}

type cluster struct {
	mdm  *fakeMDM
	sdss map[int64]*Service // by SDS id
}

func startCluster(t *testing.T, n int) *cluster { t.Helper(); return newCluster(t, n, nil) }

// newCluster is startCluster with the fake MDM set up by setup first, and each SDS's
// configuration changed by opts.
func newCluster(t testing.TB, n int, setup func(*fakeMDM), opts ...func(*Config)) *cluster {
	t.Helper()
	c := &cluster{mdm: newFakeMDM(t), sdss: map[int64]*Service{}}
	c.mdm.expect = n
	if setup != nil {
		setup(c.mdm)
	}
	for i := 1; i <= n; i++ {
		dir := t.TempDir()
		cfg := validConfig()
		cfg.ID = fmt.Sprintf("sds-%d", i)
		cfg.DataDir = dir
		cfg.Devices = []string{filepath.Join(dir, "dev0.img"), filepath.Join(dir, "dev1.img")}
		cfg.TotalCapacityGB = 1
		cfg.APIAddr, cfg.MgmtAddr, cfg.DataAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.HeartbeatInterval = "20ms"
		cfg.MDM = []string{c.mdm.addr()}
		cfg.Gossip.BindAddr, cfg.Gossip.Join = "127.0.0.1:0", nil
		for _, o := range opts {
			o(cfg)
		}
		s, err := Start(cfg, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		waitFor(t, "registration of "+cfg.ID, func() bool { return s.agent.SDSID() != 0 && s.Status().IOVersion == 1 })
		c.sdss[s.agent.SDSID()] = s
	}
	return c
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *cluster) token(vol int64, mode token.Mode, ttl time.Duration) token.Token {
	c.mdm.mu.Lock()
	gen := c.mdm.gen
	c.mdm.mu.Unlock()
	return token.Sign(token.Claims{TokenID: uint64(time.Now().UnixNano()), VolumeID: vol, SDCID: 5, Mode: mode,
		MapGeneration: gen, ExpiresAt: time.Now().Add(ttl).UnixMilli(), KeyID: 1}, c.mdm.key)
}

// dial opens a data connection to the SDS with id and registers tok on it (if tok is not nil).
func (c *cluster) dial(t testing.TB, id int64, tok *token.Token) *wire.Conn {
	t.Helper()
	conn, err := wire.Dial(context.Background(), c.sdss[id].DataAddr(), wire.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if tok != nil {
		if _, err := conn.Do(context.Background(), wire.Request{Op: wire.OpAuth, VolumeID: tok.Claims.VolumeID, Data: tok.Bytes()}); err != nil {
			t.Fatalf("auth on SDS %d: %v", id, err)
		}
	}
	return conn
}

// dialPeer is dial on a connection that presented a Peer token first, as SDSs do.
func (c *cluster) dialPeer(t *testing.T, id int64, tok *token.Token) *wire.Conn {
	t.Helper()
	conn := c.dial(t, id, nil)
	if _, st := do(conn, wire.Request{Op: wire.OpPeerAuth, Data: c.peerToken().Bytes()}); st != wire.StatusOK {
		t.Fatalf("peer auth on SDS %d: %v", id, st)
	}
	if tok != nil {
		if _, st := do(conn, wire.Request{Op: wire.OpAuth, VolumeID: tok.Claims.VolumeID, Data: tok.Bytes()}); st != wire.StatusOK {
			t.Fatalf("auth on SDS %d: %v", id, st)
		}
	}
	return conn
}

func (c *cluster) peerToken() token.Token {
	return token.Sign(token.Claims{TokenID: 77, Mode: token.Peer, ExpiresAt: time.Now().Add(time.Minute).UnixMilli(), KeyID: 1}, c.mdm.key)
}

func do(conn *wire.Conn, req wire.Request) (wire.Response, wire.Status) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := conn.Do(ctx, req)
	st, ok := wire.StatusOf(err)
	if !ok {
		return resp, wire.Status(999)
	}
	return resp, st
}

func fill(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed ^ byte(i*13+i>>8)
	}
	return b
}

// chunks fetches GET /volumes/{vol}/chunks?checksum=1 of the SDS with id.
func (c *cluster) chunks(t testing.TB, id, vol int64) map[int64]ChunkReplica {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/volumes/%d/chunks?checksum=1", c.sdss[id].APIAddr(), vol))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l ChunkList
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil || l.SDSID != id {
		t.Fatalf("chunk list of SDS %d: %+v %v", id, l, err)
	}
	out := map[int64]ChunkReplica{}
	for _, cr := range l.Chunks {
		out[cr.Chunk] = cr
	}
	return out
}

func TestWriteReplicatesReadsAndLedger(t *testing.T) {
	c := startCluster(t, 3)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	conns := map[int64]*wire.Conn{}
	for id := range c.sdss {
		conns[id] = c.dial(t, id, &tok)
	}
	want := make([]byte, testSize)
	type counts struct{ wops, wbytes, rops, rbytes int64 }
	expect := map[int64]*counts{1: {}, 2: {}, 3: {}}
	// Writes of several sizes into every chunk (the last in each with FUA), sent concurrently
	// to the chunks' primaries.
	var wg sync.WaitGroup
	var mu sync.Mutex
	for ch := range l.Chunks() {
		reps := l.Replicas(ch)
		wg.Go(func() {
			for i, w := range []struct{ off, n int64 }{{0, 4096}, {8192, 512}, {testChunk - 1000, 1000}, {100, 30000}} {
				off := ch*testChunk + w.off
				data := fill(int(w.n), byte(ch*4+int64(i)))
				req := wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: off, Epoch: l.ChunkEpoch(ch), Data: data}
				if i == 3 {
					req.Flags = wire.FlagFUA
				}
				if _, st := do(conns[reps[0]], req); st != wire.StatusOK {
					t.Errorf("write chunk %d: %v", ch, st)
					return
				}
				mu.Lock()
				copy(want[off:], data)
				for _, id := range reps {
					expect[id].wops++
					expect[id].wbytes += w.n
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Trim one whole chunk (freed on both replicas) and zero part of another.
	for _, z := range []struct {
		op      wire.Opcode
		ch, off int64
		n       uint32
	}{{wire.OpTrim, 3, 0, testChunk}, {wire.OpWriteZeroes, 5, 4096, 8192}} {
		reps := l.Replicas(z.ch)
		off := z.ch*testChunk + z.off
		if _, st := do(conns[reps[0]], wire.Request{Op: z.op, VolumeID: 1, Offset: off, Length: z.n, Epoch: 1}); st != wire.StatusOK {
			t.Fatalf("%v: %v", z.op, st)
		}
		clear(want[off : off+int64(z.n)])
		for _, id := range reps {
			expect[id].wops++
		}
	}
	if _, st := do(conns[1], wire.Request{Op: wire.OpFlush, VolumeID: 1}); st != wire.StatusOK {
		t.Fatalf("flush: %v", st)
	}
	// Read everything back from the primaries, in 16 KiB pieces.
	for off := int64(0); off < testSize; off += 16 << 10 {
		ch := off / testChunk
		p := l.Replicas(ch)[0]
		resp, st := do(conns[p], wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: off, Length: 16 << 10, Epoch: 1})
		if st != wire.StatusOK || !bytes.Equal(resp.Data, want[off:off+16<<10]) {
			t.Fatalf("read at %d from SDS %d: %v, data equal %v", off, p, st, bytes.Equal(resp.Data, want[off:off+16<<10]))
		}
		expect[p].rops++
		expect[p].rbytes += 16 << 10
	}
	// Each chunk is on exactly its two replicas, byte-identical; the trimmed one on neither.
	lists := map[int64]map[int64]ChunkReplica{}
	for id := range c.sdss {
		lists[id] = c.chunks(t, id, 1)
	}
	for ch := range l.Chunks() {
		reps := l.Replicas(ch)
		for id := range c.sdss {
			_, has := lists[id][ch]
			if in := id == reps[0] || id == reps[1]; has != (in && ch != 3) {
				t.Fatalf("chunk %d on SDS %d: has=%v, replicas %v", ch, id, has, reps)
			}
		}
		if ch == 3 {
			continue
		}
		a, b := lists[reps[0]][ch], lists[reps[1]][ch]
		if a.CRC32C == "" || a.CRC32C != b.CRC32C || a.Role != "primary" || b.Role != "secondary" {
			t.Fatalf("chunk %d: primary %+v secondary %+v", ch, a, b)
		}
	}
	// The ledger the SDSs posted matches: client IO at the primary, replicated writes at the
	// secondary, all under the one token.
	waitFor(t, "token ACKs", func() bool {
		got := c.mdm.ledger()
		for id, e := range expect {
			g := got[id]
			if g.WriteOps != e.wops || g.WriteBytes != e.wbytes || g.ReadOps != e.rops || g.ReadBytes != e.rbytes {
				return false
			}
		}
		return true
	})
	for id, g := range c.mdm.ledger() {
		if g.TokenID != fmt.Sprintf("%016x", tok.Claims.TokenID) || g.SDCID != 5 || g.VolumeID != 1 {
			t.Fatalf("SDS %d ledger entry %+v", id, g)
		}
	}
}

func TestRefusals(t *testing.T) {
	c := startCluster(t, 2)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	p, s := l.Replicas(0)[0], l.Replicas(0)[1]
	primary := c.dial(t, p, &tok)
	write := func(conn *wire.Conn, off, epoch int64) (wire.Response, wire.Status) {
		return do(conn, wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: off, Epoch: epoch, Data: []byte("hello")})
	}
	if _, st := write(primary, 0, 1); st != wire.StatusOK {
		t.Fatalf("write: %v", st)
	}
	// Not the primary.
	if _, st := write(c.dial(t, s, &tok), 0, 1); st != wire.StatusNotPrimary {
		t.Fatalf("write to the secondary: %v", st)
	}
	// Stale epoch: the reply names the SDS's epoch.
	if resp, st := write(primary, 0, 0); st != wire.StatusStaleEpoch || resp.Epoch != 1 {
		t.Fatalf("stale epoch: %v %d", st, resp.Epoch)
	}
	// A newer epoch makes the SDS fetch the layout again; then the old one is stale.
	c.mdm.mu.Lock()
	c.mdm.epoch = 2
	c.mdm.mu.Unlock()
	if _, st := write(primary, 0, 2); st != wire.StatusOK {
		t.Fatalf("write at the new epoch: %v", st)
	}
	if resp, st := write(primary, 0, 1); st != wire.StatusStaleEpoch || resp.Epoch != 2 {
		t.Fatalf("old epoch after refresh: %v %d", st, resp.Epoch)
	}
	// Range: across a chunk boundary, beyond the volume.
	if _, st := write(primary, testChunk-2, 2); st != wire.StatusRange {
		t.Fatalf("across chunks: %v", st)
	}
	if _, st := do(primary, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: testSize, Length: 1, Epoch: 2}); st != wire.StatusRange {
		t.Fatalf("beyond the volume: %v", st)
	}

	// Tokens.
	auth := func(conn *wire.Conn, vol int64, b []byte) wire.Status {
		_, st := do(conn, wire.Request{Op: wire.OpAuth, VolumeID: vol, Data: b})
		return st
	}
	bare := c.dial(t, p, nil)
	if _, st := write(bare, 0, 2); st != wire.StatusAuth {
		t.Fatalf("no token: %v", st)
	}
	forged := tok
	forged.MAC[0] ^= 1
	otherKey := token.Sign(tok.Claims, token.NewKey())
	other := c.token(2, token.ReadWrite, time.Minute)
	for name, tc := range map[string]struct {
		vol  int64
		b    []byte
		want wire.Status
	}{
		"forged":       {1, forged.Bytes(), wire.StatusAuth},
		"wrong key":    {1, otherKey.Bytes(), wire.StatusAuth},
		"malformed":    {1, []byte("not a token"), wire.StatusAuth},
		"wrong volume": {1, other.Bytes(), wire.StatusAuth},
		"expired":      {1, c.token(1, token.ReadWrite, -time.Second).Bytes(), wire.StatusExpired},
	} {
		if st := auth(bare, tc.vol, tc.b); st != tc.want {
			t.Errorf("%s token: %v, want %v", name, st, tc.want)
		}
	}
	if _, st := write(bare, 0, 2); st != wire.StatusAuth {
		t.Fatalf("write after refused tokens: %v", st)
	}
	// Read-only token: reads yes, writes no.
	ro := c.token(1, token.ReadOnly, time.Minute)
	roConn := c.dial(t, p, &ro)
	if _, st := write(roConn, 0, 2); st != wire.StatusReadOnly {
		t.Fatalf("write with a read-only token: %v", st)
	}
	if resp, st := do(roConn, wire.Request{Op: wire.OpRead, VolumeID: 1, Offset: 0, Length: 5, Epoch: 2}); st != wire.StatusOK || string(resp.Data) != "hello" {
		t.Fatalf("read with a read-only token: %v %q", st, resp.Data)
	}
	// A token that expires while registered.
	short := c.token(1, token.ReadWrite, 300*time.Millisecond)
	shortConn := c.dial(t, p, &short)
	time.Sleep(350 * time.Millisecond)
	if _, st := write(shortConn, 0, 2); st != wire.StatusExpired {
		t.Fatalf("write after expiry: %v", st)
	}
	// Revocation: the MDM bumps the generation; once the heartbeat delivers it, the registered
	// token is refused, and so is registering it again.
	c.mdm.bump()
	waitFor(t, "IO state v2", func() bool { return c.sdss[p].Status().IOVersion == 2 })
	if _, st := write(primary, 0, 2); st != wire.StatusRevoked {
		t.Fatalf("write after unmap: %v", st)
	}
	if st := auth(primary, 1, tok.Bytes()); st != wire.StatusRevoked {
		t.Fatalf("re-auth of a revoked token: %v", st)
	}
	fresh := c.token(1, token.ReadWrite, time.Minute)
	if st := auth(primary, 1, fresh.Bytes()); st != wire.StatusOK {
		t.Fatalf("fresh token: %v", st)
	}
	if _, st := write(primary, 0, 2); st != wire.StatusOK {
		t.Fatalf("write with the fresh token: %v", st)
	}
}

// Replica and rebuild writes are taken only from SDS peers: a client that sent one to a
// secondary would leave the two copies different.
func TestReplicaWritesOnlyFromPeers(t *testing.T) {
	c := startCluster(t, 2)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	p, s := l.Replicas(0)[0], l.Replicas(0)[1]
	if _, st := do(c.dial(t, p, &tok), wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: 0, Epoch: 1, Data: []byte("hello")}); st != wire.StatusOK {
		t.Fatalf("write: %v", st)
	}
	client := c.dial(t, s, &tok)
	for _, req := range []wire.Request{
		{Op: wire.OpReplWrite, VolumeID: 1, Offset: 0, Epoch: 1, Tag: 91, Data: []byte("EVIL!")},
		{Op: wire.OpWrite, Flags: wire.FlagReplica, VolumeID: 1, Offset: 0, Epoch: 1, Tag: 92, Data: []byte("EVIL!")},
		{Op: wire.OpTrim, Flags: wire.FlagReplica, VolumeID: 1, Offset: 0, Length: testChunk, Epoch: 1, Tag: 93},
		{Op: wire.OpWriteZeroes, Flags: wire.FlagReplica, VolumeID: 1, Offset: 0, Length: 5, Epoch: 1, Tag: 94},
		{Op: wire.OpChunkWrite, VolumeID: 1, Offset: 0, Epoch: 1, Data: []byte("EVIL!")},
	} {
		if _, st := do(client, req); st != wire.StatusAuth {
			t.Fatalf("%v (flags %d) from a client: %v", req.Op, req.Flags, st)
		}
	}
	if a, b := c.chunks(t, p, 1)[0], c.chunks(t, s, 1)[0]; a.CRC32C != b.CRC32C || a.CRC32C == "" {
		t.Fatalf("replicas differ after refused writes: %+v %+v", a, b)
	}
	// A Peer token is no volume token, and a volume token is no Peer token; forged ones fail.
	if _, st := do(client, wire.Request{Op: wire.OpAuth, VolumeID: 1, Data: c.peerToken().Bytes()}); st != wire.StatusAuth {
		t.Fatalf("peer token registered for volume IO: %v", st)
	}
	forged := c.peerToken()
	forged.MAC[0] ^= 1
	for _, b := range [][]byte{tok.Bytes(), forged.Bytes(), []byte("not a token")} {
		if _, st := do(client, wire.Request{Op: wire.OpPeerAuth, Data: b}); st != wire.StatusAuth {
			t.Fatalf("peer auth with %x: %v", b[:8], st)
		}
	}
	if _, st := do(client, wire.Request{Op: wire.OpReplWrite, VolumeID: 1, Offset: 0, Epoch: 1, Tag: 95, Data: []byte("EVIL!")}); st != wire.StatusAuth {
		t.Fatalf("replica write after refused peer auths: %v", st)
	}
	// An SDS peer's replica write is taken (the gate is the peer, not the op).
	if _, st := do(c.dialPeer(t, s, &tok), wire.Request{Op: wire.OpReplWrite, VolumeID: 1, Offset: 0, Epoch: 1, Tag: 96, Data: []byte("hello")}); st != wire.StatusOK {
		t.Fatalf("replica write from a peer: %v", st)
	}
}

func TestOversizedFrameClosesConnection(t *testing.T) {
	c := startCluster(t, 2)
	tok := c.token(1, token.ReadWrite, time.Minute)
	l := c.mdm.layout(1)
	p := l.Replicas(0)[0]
	nc, err := net.Dial("tcp", c.sdss[p].DataAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	header := func(op wire.Opcode, id uint64, length uint32) []byte {
		b := make([]byte, wire.RequestHeaderSize)
		copy(b, wire.Magic)
		b[4] = wire.Version
		b[5] = byte(op)
		binary.BigEndian.PutUint64(b[8:], id)
		binary.BigEndian.PutUint64(b[16:], 1)
		binary.BigEndian.PutUint32(b[32:], length)
		binary.BigEndian.PutUint64(b[36:], 1)
		return b
	}
	// A valid AUTH (answered), then a WRITE claiming 64 MiB of payload, followed by some of it.
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(append(header(wire.OpAuth, 1, uint32(token.Size)), tok.Bytes()...)); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, wire.ReplyHeaderSize)
	if _, err := io.ReadFull(nc, reply); err != nil || binary.BigEndian.Uint32(reply[16:]) != uint32(wire.StatusOK) {
		t.Fatalf("auth reply %x: %v", reply, err)
	}
	nc.Write(append(header(wire.OpWrite, 2, 64<<20), bytes.Repeat([]byte{0xab}, 64<<10)...))
	// The server closes the connection (EOF, or a reset since it did not read what was sent).
	if n, err := io.ReadFull(nc, reply); n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("connection not closed: read %d bytes, %v", n, err)
	}
	for id, s := range c.sdss {
		if n := s.Store().Stats().Chunks; n != 0 {
			t.Fatalf("SDS %d holds %d chunks after a bad frame", id, n)
		}
	}
}

func TestDeadSecondaryIsNotAcknowledged(t *testing.T) {
	c := startCluster(t, 2)
	l := c.mdm.layout(1)
	tok := c.token(1, token.ReadWrite, time.Minute)
	p, s := l.Replicas(0)[0], l.Replicas(0)[1]
	primary := c.dial(t, p, &tok)
	req := wire.Request{Op: wire.OpWrite, VolumeID: 1, Offset: 0, Epoch: 1, Data: []byte("both")}
	if _, st := do(primary, req); st != wire.StatusOK {
		t.Fatalf("write: %v", st)
	}
	c.sdss[s].Close()
	req.Data = []byte("one!")
	if _, st := do(primary, req); st != wire.StatusRetry {
		t.Fatalf("write with the secondary down: %v, want %v", st, wire.StatusRetry)
	}
	for _, op := range []wire.Opcode{wire.OpTrim, wire.OpWriteZeroes} {
		if _, st := do(primary, wire.Request{Op: op, VolumeID: 1, Offset: 0, Length: 4096, Epoch: 1}); st != wire.StatusRetry {
			t.Fatalf("%v with the secondary down: %v", op, st)
		}
	}
	if _, st := do(primary, wire.Request{Op: wire.OpPing}); st != wire.StatusOK {
		t.Fatalf("ping: %v", st)
	}
}

func TestThickVolumeAllocatesOnLayout(t *testing.T) {
	c := startCluster(t, 3)
	c.mdm.mu.Lock()
	c.mdm.thick[2] = true
	c.mdm.mu.Unlock()
	l := c.mdm.layout(2)
	tok := c.token(2, token.ReadWrite, time.Minute)
	p := l.Replicas(0)[0]
	conn := c.dial(t, p, &tok)
	resp, st := do(conn, wire.Request{Op: wire.OpRead, VolumeID: 2, Offset: 0, Length: 4096, Epoch: 1})
	if st != wire.StatusOK || !bytes.Equal(resp.Data, make([]byte, 4096)) {
		t.Fatalf("read: %v", st)
	}
	var mine int
	for ch := range l.Chunks() {
		if r := l.Replicas(ch); r[0] == p || r[1] == p {
			mine++
		}
	}
	if got := len(c.sdss[p].Store().Chunks(2)); got != mine || mine == 0 {
		t.Fatalf("thick volume: %d chunks allocated, want %d", got, mine)
	}
}

func TestAckBatcherRetriesWithTheSameRequestID(t *testing.T) {
	var mu sync.Mutex
	var ids []string
	var taken []api.AckRequest
	fails := 2
	b := newAckBatcher(func(ctx context.Context, id string, req api.AckRequest) error {
		mu.Lock()
		defer mu.Unlock()
		ids = append(ids, id)
		if fails > 0 {
			fails--
			return errors.New("leader away")
		}
		taken = append(taken, req)
		return nil
	}, func() int64 { return 9 }, hclog.NewNullLogger())
	b.interval = 5 * time.Millisecond
	b.batch = 2
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.run(ctx); close(done) }()
	for i := range 5 {
		b.record(token.Claims{TokenID: uint64(i), VolumeID: 1, SDCID: 2}, 0, 100, true)
	}
	b.record(token.Claims{TokenID: 0, VolumeID: 1, SDCID: 2}, 10, 0, false)
	waitFor(t, "all entries taken", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range taken {
			n += len(r.Entries)
		}
		return n >= 5
	})
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("retries changed the request id: %v", ids)
	}
	var w, r int64
	for _, req := range taken {
		if req.SDSID != 9 || len(req.Entries) > 2 {
			t.Fatalf("batch %+v", req)
		}
		for _, e := range req.Entries {
			w += e.WriteOps
			r += e.ReadOps
		}
	}
	if w != 5 || r != 1 {
		t.Fatalf("counted %d writes, %d reads", w, r)
	}
}

// A batch the leader refuses as malformed (400) is dropped, not retried forever: later batches
// are taken.
func TestAckBatcherDropsARefusedBatch(t *testing.T) {
	var mu sync.Mutex
	var attempts int
	var taken []api.AckRequest
	b := newAckBatcher(func(ctx context.Context, id string, req api.AckRequest) error {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts == 1 {
			return fmt.Errorf("post: %w", &api.APIError{Status: http.StatusBadRequest, Code: "invalid", Message: "ACK entry is malformed"})
		}
		taken = append(taken, req)
		return nil
	}, func() int64 { return 9 }, hclog.NewNullLogger())
	b.interval = 5 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	b.record(token.Claims{TokenID: 1, VolumeID: 1, SDCID: 2}, 0, 100, true)
	waitFor(t, "the first batch refused", func() bool { return b.refused.Load() == 1 })
	b.record(token.Claims{TokenID: 2, VolumeID: 1, SDCID: 2}, 0, 200, true)
	waitFor(t, "the next batch taken", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(taken) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if e := taken[0].Entries; len(e) != 1 || e[0].TokenID != fmt.Sprintf("%016x", 2) || attempts != 2 {
		t.Fatalf("taken %+v after %d attempts", taken, attempts)
	}
}

// fakeSecondary answers SDS -> SDS connections for TestPeerAuthDial: every request is taken,
// except PEER_AUTH when refuseToken, and replica writes on a connection without PEER_AUTH when
// requirePeer. With closeFirst the first connection is closed on its first request (an older
// SDS that does not know PEER_AUTH, or a connection that failed just then).
type fakeSecondary struct {
	closeFirst, requirePeer, refuseToken bool
	accepted                             atomic.Int64

	mu     sync.Mutex
	hellos []wire.PeerHello // of the OpPeerAuths taken
	ids    []uint64         // of the replica writes taken, in order
}

type fakeSecondaryConn struct{ peer atomic.Bool }

func (f *fakeSecondary) Open(net.Conn) *fakeSecondaryConn { return &fakeSecondaryConn{} }
func (f *fakeSecondary) Close(*fakeSecondaryConn)         {}
func (f *fakeSecondary) Handle(_ context.Context, s *fakeSecondaryConn, req *wire.Request) wire.Response {
	switch {
	case req.Op == wire.OpPeerAuth && f.refuseToken:
		return wire.Response{Status: wire.StatusAuth, Data: []byte("unknown key")}
	case req.Op == wire.OpPeerAuth:
		s.peer.Store(true)
		if h, ok := wire.PeerHelloOf(req); ok {
			f.mu.Lock()
			f.hellos = append(f.hellos, h)
			f.mu.Unlock()
		}
	case req.Op == wire.OpReplWrite && f.requirePeer && !s.peer.Load():
		return wire.Response{Status: wire.StatusAuth, Data: []byte("replica writes only from peers")}
	case req.Op == wire.OpReplWrite:
		f.mu.Lock()
		f.ids = append(f.ids, req.ID)
		f.mu.Unlock()
	}
	return wire.Response{}
}

func (f *fakeSecondary) serve(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if f.accepted.Add(1) == 1 && f.closeFirst {
				go func() {
					io.ReadFull(nc, make([]byte, wire.RequestHeaderSize))
					nc.Close()
				}()
				continue
			}
			go wire.Serve(nc, f, wire.ServerOptions{})
		}
	}()
	return ln.Addr().String()
}

// A primary presents PEER_AUTH on its replica connections. An SDS of a version without it
// closes the connection: the primary dials again without it and replicates. A current SDS that
// refuses a connection without it gets it on the next one. An SDS refusing the token is not used.
func TestPeerAuthDial(t *testing.T) {
	peer := func(time.Duration) (token.Token, error) {
		return token.Sign(token.Claims{TokenID: 1, Mode: token.Peer, ExpiresAt: time.Now().Add(time.Minute).UnixMilli(), KeyID: 1}, token.NewKey()), nil
	}
	tok := token.Sign(token.Claims{TokenID: 2, VolumeID: 1, SDCID: 5, Mode: token.ReadWrite, ExpiresAt: time.Now().Add(time.Minute).UnixMilli(), KeyID: 1}, token.NewKey())
	repl := wire.Request{Op: wire.OpReplWrite, VolumeID: 1, Data: []byte("hello")}
	ctx := context.Background()
	p := newReplicaPool(wire.ClientOptions{}, time.Second, peer, func() int64 { return 3 })
	defer p.close()

	old := &fakeSecondary{closeFirst: true}
	addr := old.serve(t)
	if _, err := p.forwardFrom(ctx, addr, tok, repl, nil); err != nil || old.accepted.Load() != 2 {
		t.Fatalf("forward to an SDS without PEER_AUTH: %v after %d connections", err, old.accepted.Load())
	}

	current := &fakeSecondary{closeFirst: true, requirePeer: true}
	addr = current.serve(t)
	if _, err := p.forwardFrom(ctx, addr, tok, repl, nil); err == nil {
		t.Fatal("a replica write without PEER_AUTH was taken by an SDS that wants it")
	}
	if _, err := p.forwardFrom(ctx, addr, tok, repl, nil); err != nil || current.accepted.Load() != 3 {
		t.Fatalf("forward after the refusal: %v after %d connections", err, current.accepted.Load())
	}

	refusing := &fakeSecondary{refuseToken: true}
	addr = refusing.serve(t)
	if _, err := p.forwardFrom(ctx, addr, tok, repl, nil); err == nil || !strings.Contains(err.Error(), "peer authentication") {
		t.Fatalf("forward to an SDS refusing the peer token: %v", err)
	}
}

// A primary names itself on its replica connections, and the ids of its replica writes increase
// across them (connections per SDC), so its secondary can order a chunk's writes.
func TestReplicaPoolOrdersIDs(t *testing.T) {
	peer := func(time.Duration) (token.Token, error) {
		return token.Sign(token.Claims{TokenID: 1, Mode: token.Peer, ExpiresAt: time.Now().Add(time.Minute).UnixMilli(), KeyID: 1}, token.NewKey()), nil
	}
	p := newReplicaPool(wire.ClientOptions{}, time.Second, peer, func() int64 { return 3 })
	defer p.close()
	sec := &fakeSecondary{}
	addr := sec.serve(t)
	for i := range 6 {
		sdc := int64(1 + i%3) // a connection per SDC
		tok := token.Sign(token.Claims{TokenID: uint64(sdc), VolumeID: 1, SDCID: sdc, Mode: token.ReadWrite, ExpiresAt: time.Now().Add(time.Minute).UnixMilli(), KeyID: 1}, token.NewKey())
		if _, err := p.forward(context.Background(), addr, tok, wire.Request{Op: wire.OpReplWrite, VolumeID: 1, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	sec.mu.Lock()
	defer sec.mu.Unlock()
	if len(sec.hellos) != 3 {
		t.Fatalf("%d connections named their SDS, want 3", len(sec.hellos))
	}
	for _, h := range sec.hellos {
		if h != (wire.PeerHello{SDSID: 3, Run: p.run}) {
			t.Fatalf("PEER_AUTH named %+v, want SDS 3 run %d", h, p.run)
		}
	}
	if len(sec.ids) != 6 {
		t.Fatalf("%d replica writes taken, want 6", len(sec.ids))
	}
	for i, id := range sec.ids {
		if i > 0 && id <= sec.ids[i-1] {
			t.Fatalf("replica write ids %v: want 6, increasing across connections", sec.ids)
		}
	}
}
