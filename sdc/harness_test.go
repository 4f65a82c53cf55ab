package sdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
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
	"pflex/internal/leader"
	"pflex/internal/shm"
	"pflex/internal/token"
	"pflex/internal/wire"
)

// The test cluster: a fake MDM (httptest) that issues real tokens and serves layouts and
// mappings, and fake SDSs (wire.Serve) that verify tokens with internal/token, check epochs and
// primaries against the cluster's true layout, and keep chunk data in memory.

const (
	testSDCID     = 7
	testChunkSize = 64 << 10
	testVolSize   = 1 << 20
)

type fakeVolume struct {
	id   int64
	name string
	size int64
	mode string // mapping's access mode; "" = not mapped
	gen  int64
	iops int64 // mapping's limits
	mbps int64
}

type fakeCluster struct {
	t      *testing.T
	keys   token.Keyring
	verify *token.Verifier
	key    []byte
	mdm    *httptest.Server
	sds    map[int64]*fakeSDS

	mu       sync.Mutex
	ttl      time.Duration
	vols     map[int64]*fakeVolume
	layouts  map[int64]*layout.Layout // the truth: SDSs check requests against it
	issues   map[int64]int            // tokens issued per volume
	layoutGs map[int64]int            // layout fetches per volume
	volPolls int
	mdmDown  bool
	// unreachable is what the SDC's last heartbeat named unreachable.
	unreachable []string
}

func newFakeCluster(t *testing.T, nSDS int) *fakeCluster {
	t.Helper()
	c := &fakeCluster{
		t: t, key: token.NewKey(), sds: map[int64]*fakeSDS{}, ttl: time.Minute,
		vols: map[int64]*fakeVolume{}, layouts: map[int64]*layout.Layout{},
		issues: map[int64]int{}, layoutGs: map[int64]int{},
	}
	c.keys.Add(1, c.key)
	c.verify = token.NewVerifier(&c.keys)
	for i := 1; i <= nSDS; i++ {
		c.sds[int64(i)] = startFakeSDS(t, c, int64(i))
	}
	c.mdm = httptest.NewServer(http.HandlerFunc(c.serveMDM))
	t.Cleanup(c.mdm.Close)
	return c
}

func (c *fakeCluster) mdmAddr() string { return strings.TrimPrefix(c.mdm.URL, "http://") }

// addVolume creates a volume mapped to the test SDC with a layout over every SDS.
func (c *fakeCluster) addVolume(id int64, name, mode string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.vols[id] = &fakeVolume{id: id, name: name, size: testVolSize, mode: mode, gen: 1}
	l := &layout.Layout{VolumeID: id, Epoch: 1, ChunkSize: testChunkSize, SizeBytes: testVolSize}
	for sid := int64(1); sid <= int64(len(c.sds)); sid++ {
		l.Members = append(l.Members, layout.Member{SDSID: sid, Weight: 10, Addr: c.sds[sid].addr})
	}
	c.layouts[id] = l
}

// setLimits changes the mapping's IOPS and bandwidth limits, as POST /vol/limits does.
func (c *fakeCluster) setLimits(id, iops, mbps int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.vols[id].iops, c.vols[id].mbps = iops, mbps
}

// trueLayout is a copy of the volume's current layout.
func (c *fakeCluster) trueLayout(id int64) layout.Layout {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := *c.layouts[id]
	if v := c.vols[id]; v != nil {
		l.SizeBytes = v.size
	}
	return l
}

// moveChunk makes sds the primary of chunk at a new epoch (as a rebuild would) and bumps the
// layout epoch.
func (c *fakeCluster) moveChunk(vol, chunk int64, replicas []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.layouts[vol]
	l := *old
	l.Epoch++
	l.Overrides = map[int64][]int64{}
	for k, r := range old.Overrides {
		l.Overrides[k] = r
	}
	l.ChunkEpochs = map[int64]int64{}
	for k, e := range old.ChunkEpochs {
		l.ChunkEpochs[k] = e
	}
	l.Overrides[chunk] = replicas
	l.ChunkEpochs[chunk] = l.Epoch
	c.layouts[vol] = &l
}

// unmap removes the mapping and bumps the generation (SDSs learn it at once).
func (c *fakeCluster) unmap(id int64) {
	c.mu.Lock()
	v := c.vols[id]
	v.mode = ""
	v.gen++
	gen := v.gen
	c.mu.Unlock()
	c.verify.SetGeneration(id, gen)
}

// revoke bumps the generation of a volume that stays mapped (an unmap+map of someone else).
func (c *fakeCluster) revoke(id int64) {
	c.mu.Lock()
	v := c.vols[id]
	v.gen++
	gen := v.gen
	c.mu.Unlock()
	c.verify.SetGeneration(id, gen)
}

func (c *fakeCluster) issueCount(id int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.issues[id]
}

func (c *fakeCluster) layoutCount(id int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.layoutGs[id]
}

func mdmError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(api.Error{Error: msg, Code: code})
}

func (c *fakeCluster) serveMDM(w http.ResponseWriter, r *http.Request) {
	self := c.mdmAddr()
	w.Header().Set(api.HeaderLeader, self)
	c.mu.Lock()
	down := c.mdmDown
	c.mu.Unlock()
	if down {
		mdmError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "no leader")
		return
	}
	if r.Header.Get("Authorization") != "Bearer k" {
		mdmError(w, http.StatusUnauthorized, api.CodeUnauthorized, "bad cluster key")
		return
	}
	enc := json.NewEncoder(w)
	path := r.URL.Path
	switch {
	case path == "/cluster/status":
		enc.Encode(map[string]any{"leader_id": "mdm-1", "leader_api": self, "state": "leader", "term": 1})
	case path == agent.PathRegister:
		enc.Encode(map[string]any{"sdc_id": testSDCID, "leader_id": "mdm-1", "leader_api": self})
	case path == agent.PathHeartbeat:
		var hb api.HeartbeatRequest
		json.NewDecoder(r.Body).Decode(&hb)
		c.mu.Lock()
		c.unreachable = hb.UnreachablePeers
		c.mu.Unlock()
		enc.Encode(map[string]any{"leader_id": "mdm-1", "leader_api": self, "term": 1, "state": "leader"})
	case path == "/token/issue" && r.Method == http.MethodPost:
		var req api.TokenRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			mdmError(w, 400, api.CodeBadRequest, err.Error())
			return
		}
		c.mu.Lock()
		v := c.vols[req.VolumeID]
		switch {
		case v == nil:
			c.mu.Unlock()
			mdmError(w, 404, "not_found", "no such volume")
			return
		case req.SDCID != testSDCID || v.mode == "":
			c.mu.Unlock()
			mdmError(w, 403, "forbidden", "volume not mapped to this SDC")
			return
		case req.AccessMode != fsm.ReadOnly && v.mode == fsm.ReadOnly:
			c.mu.Unlock()
			mdmError(w, 403, "forbidden", "mapped readOnly")
			return
		}
		c.issues[req.VolumeID]++
		mode := token.ReadWrite
		if req.AccessMode == fsm.ReadOnly {
			mode = token.ReadOnly
		}
		cl := token.Claims{TokenID: uint64(c.issues[req.VolumeID]), VolumeID: v.id, SDCID: req.SDCID, Mode: mode,
			MapGeneration: v.gen, ExpiresAt: time.Now().Add(c.ttl).UnixMilli(), KeyID: 1}
		c.mu.Unlock()
		t := token.Sign(cl, c.key)
		enc.Encode(api.TokenResponse{Token: t.String(), VolumeID: v.id, SDCID: req.SDCID, AccessMode: req.AccessMode,
			MapGeneration: cl.MapGeneration, ExpiresAt: cl.ExpiresAt, KeyID: 1})
	case strings.HasPrefix(path, "/vol/") && strings.HasSuffix(path, "/layout"):
		id, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(path, "/vol/"), "/layout"), 10, 64)
		c.mu.Lock()
		l := c.layouts[id]
		c.layoutGs[id]++
		var cp layout.Layout
		if l != nil {
			cp = *l
			if v := c.vols[id]; v != nil {
				cp.SizeBytes = v.size
			}
		}
		c.mu.Unlock()
		if l == nil {
			mdmError(w, 404, "not_found", "no such volume")
			return
		}
		enc.Encode(cp)
	case path == fmt.Sprintf("/sdc/%d/volumes", testSDCID):
		c.mu.Lock()
		c.volPolls++
		out := []api.MappedVolume{}
		for _, v := range c.vols {
			if v.mode != "" {
				out = append(out, api.MappedVolume{VolumeID: v.id, Name: v.name, SizeBytes: v.size, AccessMode: v.mode, MapGeneration: v.gen,
					IOPSLimit: v.iops, BandwidthLimitMBps: v.mbps})
			}
		}
		c.mu.Unlock()
		enc.Encode(out)
	default:
		mdmError(w, 404, "not_found", "no route "+path)
	}
}

// sdsOp is one request an SDS served (AUTH excluded).
type sdsOp struct {
	op     wire.Opcode
	flags  wire.Flags
	vol    int64
	offset int64
	length int64
	status wire.Status
}

type fakeSDS struct {
	id      int64
	c       *fakeCluster
	ln      net.Listener
	addr    string
	auths   atomic.Int64
	accepts atomic.Int64

	mu     sync.Mutex
	chunks map[[2]int64][]byte // (volume, chunk) -> data
	ops    []sdsOp
	conns  map[net.Conn]bool
	// inject, when set, may answer a request (IO and AUTH) with a status instead of serving it.
	inject func(req *wire.Request) (wire.Status, bool)
	// shm, when set, maps the shared regions clients attach (OpShmAttach); nil refuses them.
	shm *shm.Registry
	// dev, when set, is where read grants (OpReadGrant) point: the chunk's bytes are copied
	// there at the grant, and any write to the chunk revokes its grants. nil refuses grants.
	dev       *os.File
	devSlots  map[[2]int64]int64 // chunk -> its extent's offset in dev
	granted   map[[2]int64][]*shm.GrantEntry
	reported  wire.ReadReport // OpReadReport totals
	reportIDs []uint64        // the ids of the reports counted, in order
}

type sdsConnState struct {
	cache   *token.Cache
	regions map[uint64]*shm.Mapping
}

func startFakeSDS(t *testing.T, c *fakeCluster, id int64) *fakeSDS {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSDS{id: id, c: c, ln: ln, addr: ln.Addr().String(), chunks: map[[2]int64][]byte{}, conns: map[net.Conn]bool{},
		devSlots: map[[2]int64]int64{}, granted: map[[2]int64][]*shm.GrantEntry{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			s.mu.Lock()
			s.conns[nc] = true
			s.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				wire.Serve[*sdsConnState](nc, s, wire.ServerOptions{})
				s.mu.Lock()
				delete(s.conns, nc)
				s.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.dropConns()
		wg.Wait()
	})
	return s
}

// dropConns closes every connection to this SDS (a crash the SDC must reconnect after).
func (s *fakeSDS) dropConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for nc := range s.conns {
		nc.Close()
	}
}

func (s *fakeSDS) setInject(f func(req *wire.Request) (wire.Status, bool)) {
	s.mu.Lock()
	s.inject = f
	s.mu.Unlock()
}

func (s *fakeSDS) opsOf(op wire.Opcode) []sdsOp {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sdsOp
	for _, o := range s.ops {
		if o.op == op {
			out = append(out, o)
		}
	}
	return out
}

func (s *fakeSDS) chunk(vol, c int64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.chunks[[2]int64{vol, c}]...)
}

func (s *fakeSDS) Open(net.Conn) *sdsConnState {
	return &sdsConnState{cache: token.NewCache(s.c.verify), regions: map[uint64]*shm.Mapping{}}
}

func (s *fakeSDS) Close(st *sdsConnState) {
	for _, m := range st.regions {
		s.shm.Release(m)
	}
}

// attachShm maps a client's region for the connection (as the SDS does, without its limits).
func (s *fakeSDS) attachShm(st *sdsConnState, req *wire.Request) wire.Response {
	var d shm.Desc
	if s.shm == nil || d.UnmarshalBinary(req.Data) != nil {
		return wire.Response{Status: wire.StatusProto}
	}
	m, err := s.shm.Attach(d)
	if err != nil {
		return wire.Response{Status: wire.StatusProto}
	}
	st.regions[d.ID] = m
	return wire.Response{}
}

// fromShm resolves an OpShmWrite or OpShmRead into the OpWrite or OpRead it stands for and the
// region's bytes it refers to.
func fromShm(st *sdsConnState, req *wire.Request) (wire.Request, []byte, bool) {
	ref, err := wire.DecodeShmRef(req.Data)
	if err != nil || st.regions[ref.Region] == nil {
		return wire.Request{}, nil, false
	}
	data, err := st.regions[ref.Region].Slice(ref.Offset, ref.Length)
	if err != nil {
		return wire.Request{}, nil, false
	}
	r := wire.Request{Op: wire.OpWrite, Flags: req.Flags, VolumeID: req.VolumeID, Offset: req.Offset,
		Length: ref.Length, Epoch: req.Epoch, Tag: req.Tag, Data: data}
	if req.Op == wire.OpShmRead {
		r.Op, r.Data = wire.OpRead, nil
	}
	return r, data, true
}

// grant grants a read of the chunk at req.Offset on the entry the request names, after copying
// the chunk's bytes to dev (as the SDS does, without its lease, lock and layout checks).
func (s *fakeSDS) grant(st *sdsConnState, req *wire.Request) wire.Response {
	gr, err := wire.DecodeGrantRequest(req.Data)
	m := st.regions[gr.Entry.Region]
	if err != nil || s.dev == nil || m == nil {
		return wire.Response{Status: wire.StatusProto}
	}
	e, err := m.GrantEntry(gr.Entry.Offset)
	if err != nil {
		return wire.Response{Status: wire.StatusProto}
	}
	l := s.c.trueLayout(req.VolumeID)
	chunk := req.Offset / l.ChunkSize
	if l.Replicas(chunk)[0] != s.id {
		return wire.Response{Status: wire.StatusNotPrimary}
	}
	key := [2]int64{req.VolumeID, chunk}
	s.mu.Lock()
	defer s.mu.Unlock()
	data := s.chunks[key]
	if data == nil {
		return wire.Response{Status: wire.StatusRetry}
	}
	off, ok := s.devSlots[key]
	if !ok {
		off = int64(len(s.devSlots)) * l.ChunkSize
		s.devSlots[key] = off
	}
	if _, err := s.dev.WriteAt(data, off); err != nil {
		return wire.Response{Status: wire.StatusIO}
	}
	var fst syscall.Stat_t
	syscall.Fstat(int(s.dev.Fd()), &fst)
	s.granted[key] = append(s.granted[key], e)
	e.Grant(gr.Gen, shm.Now()+int64(time.Minute))
	return wire.Response{Data: wire.ReadGrant{PID: uint32(os.Getpid()), FD: uint32(s.dev.Fd()), Dev: fst.Dev, Ino: fst.Ino,
		Offset: off, Size: l.ChunkSize}.Encode()}
}

func tokenStatus(err error) wire.Status {
	switch {
	case errors.Is(err, token.ErrExpired):
		return wire.StatusExpired
	case errors.Is(err, token.ErrRevoked):
		return wire.StatusRevoked
	case errors.Is(err, token.ErrReadOnly):
		return wire.StatusReadOnly
	}
	return wire.StatusAuth
}

func (s *fakeSDS) Handle(_ context.Context, st *sdsConnState, req *wire.Request) wire.Response {
	s.mu.Lock()
	inject := s.inject
	s.mu.Unlock()
	if inject != nil {
		if status, ok := inject(req); ok {
			s.record(req, status)
			return wire.Response{Status: status}
		}
	}
	switch req.Op {
	case wire.OpShmAttach:
		return s.attachShm(st, req)
	case wire.OpReadGrant:
		return s.grant(st, req)
	case wire.OpReadReport:
		rep, err := wire.DecodeReadReport(req.Data)
		if err != nil {
			return wire.Response{Status: wire.StatusProto}
		}
		if _, err := st.cache.Authorize(req.VolumeID, false, time.Now()); err != nil { // as an SDS: the connection's token
			return wire.Response{Status: tokenStatus(err)}
		}
		s.mu.Lock()
		s.reported.Ops += rep.Ops
		s.reported.Bytes += rep.Bytes
		s.reportIDs = append(s.reportIDs, rep.ID)
		s.mu.Unlock()
		return wire.Response{}
	case wire.OpShmWrite, wire.OpShmRead:
		r, data, ok := fromShm(st, req)
		if !ok {
			return wire.Response{Status: wire.StatusProto}
		}
		resp := s.serve(st, &r)
		if r.Op == wire.OpRead {
			copy(data, resp.Data)
			resp.Data = nil
		}
		r.Op = req.Op
		s.record(&r, resp.Status)
		return resp
	}
	if req.Op == wire.OpAuth {
		s.auths.Add(1)
		t, err := token.Parse(req.Data)
		if err == nil {
			err = st.cache.Register(t, time.Now())
		}
		if err != nil {
			return wire.Response{Status: tokenStatus(err)}
		}
		return wire.Response{}
	}
	if req.Flags&wire.FlagRelay != 0 {
		resp := s.relay(st, req)
		s.record(req, resp.Status)
		return resp
	}
	resp := s.serve(st, req)
	s.record(req, resp.Status)
	return resp
}

// relay serves a FlagRelay request as an SDS does: passed on to the chunk's primary (for a
// FLUSH, the SDS in Offset), which serves it past its own inject, as if over a peer link.
func (s *fakeSDS) relay(st *sdsConnState, req *wire.Request) wire.Response {
	r := *req
	r.Flags &^= wire.FlagRelay
	target := r.Offset
	if r.Op == wire.OpFlush {
		r.Offset = 0
	} else {
		l := s.c.trueLayout(r.VolumeID)
		target = l.Replicas(r.Offset / l.ChunkSize)[0]
	}
	to, ok := s.c.sds[target]
	if !ok {
		return wire.Response{Status: wire.StatusStaleEpoch}
	}
	resp := to.serve(st, &r)
	to.record(&r, resp.Status)
	return resp
}

func (s *fakeSDS) record(req *wire.Request, status wire.Status) {
	if req.Op == wire.OpAuth {
		return
	}
	s.mu.Lock()
	s.ops = append(s.ops, sdsOp{op: req.Op, flags: req.Flags, vol: req.VolumeID, offset: req.Offset, length: int64(req.Length), status: status})
	s.mu.Unlock()
}

func (s *fakeSDS) serve(st *sdsConnState, req *wire.Request) wire.Response {
	write := req.Op != wire.OpRead && req.Op != wire.OpFlush
	if _, err := st.cache.Authorize(req.VolumeID, write, time.Now()); err != nil {
		return wire.Response{Status: tokenStatus(err)}
	}
	l := s.c.trueLayout(req.VolumeID)
	if req.Op == wire.OpFlush {
		if req.Epoch < l.Epoch {
			return wire.Response{Status: wire.StatusStaleEpoch, Epoch: l.Epoch}
		}
		return wire.Response{}
	}
	chunk := req.Offset / l.ChunkSize
	if (req.Offset+int64(req.Length)-1)/l.ChunkSize != chunk || req.Offset+int64(req.Length) > l.SizeBytes {
		return wire.Response{Status: wire.StatusRange}
	}
	if req.Epoch < l.ChunkEpoch(chunk) {
		return wire.Response{Status: wire.StatusStaleEpoch, Epoch: l.ChunkEpoch(chunk)}
	}
	if l.Replicas(chunk)[0] != s.id {
		return wire.Response{Status: wire.StatusNotPrimary, Epoch: l.ChunkEpoch(chunk)}
	}
	in := req.Offset - chunk*l.ChunkSize
	s.mu.Lock()
	defer s.mu.Unlock()
	key := [2]int64{req.VolumeID, chunk}
	if req.Op != wire.OpRead {
		for _, e := range s.granted[key] { // the copy in dev is stale from now on
			e.Revoke()
		}
		delete(s.granted, key)
	}
	data := s.chunks[key]
	if data == nil {
		data = make([]byte, l.ChunkSize)
		s.chunks[key] = data
	}
	switch req.Op {
	case wire.OpRead:
		buf := req.ReplyBuffer(int(req.Length))
		copy(buf, data[in:])
		return wire.Response{Data: buf}
	case wire.OpWrite:
		copy(data[in:], req.Data)
	case wire.OpTrim, wire.OpWriteZeroes:
		clear(data[in : in+int64(req.Length)])
	}
	return wire.Response{}
}

// staticLeader is a leaderSource that always names one MDM.
type staticLeader string

func (s staticLeader) Wait(context.Context) (leader.Leader, error) {
	return leader.Leader{API: string(s)}, nil
}
func (staticLeader) Report(string, string) {}
func (staticLeader) Failed(string)         {}

// newTestExporter builds an Exporter over the cluster (not started: tests call Poll).
func newTestExporter(t *testing.T, c *fakeCluster, ioTimeout time.Duration) *Exporter {
	t.Helper()
	return newTestExporterShm(t, c, ioTimeout, nil)
}

// newTestExporterShm is newTestExporter with write payloads offered in region (nil: none).
func newTestExporterShm(t *testing.T, c *fakeCluster, ioTimeout time.Duration, region *shm.Region) *Exporter {
	t.Helper()
	conns := NewSDSConns(wire.ClientOptions{}, region)
	cache, err := OpenLayoutCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewExporter(ExporterConfig{
		MDM:       newMDMClient(staticLeader(c.mdmAddr()), "k"),
		Conns:     conns,
		Cache:     cache,
		SDCID:     func() int64 { return testSDCID },
		IOTimeout: ioTimeout,
		Poll:      50 * time.Millisecond,
		Logger:    testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		conns.Close()
		cache.Close()
	})
	return e
}

// exportedVolume polls once and returns the volume exported under name.
func exportedVolume(t *testing.T, e *Exporter, name string) *Volume {
	t.Helper()
	if err := e.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	v, ok := e.VolumeByName(name)
	if !ok {
		t.Fatalf("volume %s not exported; exports: %+v", name, e.Exports().List())
	}
	return v
}

func testLogger(t *testing.T) hclog.Logger {
	if testing.Verbose() {
		return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Debug})
	}
	return hclog.NewNullLogger()
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
