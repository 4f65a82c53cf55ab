package sdc

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pflex/fsm"
	"pflex/gossip"
	"pflex/internal/reach"
	"pflex/internal/wire"
)

// An SDS this SDC cannot reach, while its peer can: IO of the chunks it is primary of goes
// through their secondary, the IO already waiting on it is retried that way once the probes
// lose it, a FLUSH reaches it through another SDS, and once it answers probes again IO goes to it
// directly. io_timeout is 10 s and the cut lasts the whole test, so each IO below succeeds only
// by the detour.
func TestIOOfAnUnreachablePrimaryIsRelayed(t *testing.T) {
	c := newFakeCluster(t, 2)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 10*time.Second)
	var cut atomic.Bool
	cutSDS := c.sds[1]
	pr := reach.New(e.cfg.Conns.probeTargets)
	pr.Interval = 10 * time.Millisecond
	pr.Dial = func(_ context.Context, addr string) error {
		if cut.Load() && addr == cutSDS.addr {
			return errors.New("probe timed out")
		}
		return nil
	}
	e.cfg.Conns.startProbes(pr)
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()

	// A chunk sds-1 is primary of; a first write reaches it directly.
	l := c.trueLayout(1)
	var chunk int64 = -1
	for ch := range l.Chunks() {
		if l.Replicas(ch)[0] == 1 {
			chunk = ch
			break
		}
	}
	if chunk < 0 {
		t.Fatal("sds-1 is primary of no chunk")
	}
	off := chunk * testChunkSize
	if err := v.WriteAt(ctx, pattern(4096, 1), off, false); err != nil {
		t.Fatal(err)
	}

	// The cut: sds-1 stops answering this SDC (requests hang) and its probes fail.
	release := make(chan struct{})
	var releaseOnce sync.Once
	unhang := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unhang)
	cutSDS.setInject(func(req *wire.Request) (wire.Status, bool) {
		<-release
		return wire.StatusRetry, true
	})
	written := make(chan error, 1)
	go func() { written <- v.WriteAt(ctx, pattern(4096, 2), off, true) }()
	waitFor(t, "the write to wait on sds-1", 5*time.Second, func() bool { return v.Status().Writes == 2 })
	cut.Store(true)
	if err := <-written; err != nil {
		t.Fatalf("a write waiting on the cut primary: %v", err)
	}
	if st := e.Status(); !pr.IsUnreachable(cutSDS.addr) || len(st.UnreachableSDS) != 1 || st.UnreachableSDS[0] != cutSDS.addr {
		t.Fatalf("the probes did not lose sds-1: status lists %v", st.UnreachableSDS)
	}
	if err := v.WriteAt(ctx, pattern(8192, 3), off+4096, false); err != nil {
		t.Fatalf("a write after the cut: %v", err)
	}
	got := make([]byte, 12288)
	if err := v.ReadAt(ctx, got, off); err != nil {
		t.Fatalf("a read after the cut: %v", err)
	}
	if want := append(pattern(4096, 2), pattern(8192, 3)...); !bytes.Equal(got, want) {
		t.Fatal("read back through the relay differs from what was written")
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatalf("a flush with sds-1 cut: %v", err)
	}
	if n := v.Status().Relayed; n < 4 {
		t.Fatalf("%d attempts relayed, want at least 4 (write, write, read, flush)", n)
	}
	relayedAt2 := 0
	for _, op := range c.sds[2].opsOf(wire.OpWrite) {
		if op.flags&wire.FlagRelay != 0 && op.status == wire.StatusOK {
			relayedAt2++
		}
	}
	if relayedAt2 < 2 {
		t.Fatalf("sds-2 relayed %d writes", relayedAt2)
	}
	if !bytes.Equal(cutSDS.chunk(1, chunk)[:12288], got) {
		t.Fatal("sds-1, the primary, does not hold the relayed writes")
	}

	// Healed: once sds-1 answers probes again, IO goes to it directly.
	cut.Store(false)
	cutSDS.setInject(nil)
	unhang()
	waitFor(t, "the probes to reach sds-1 again", 5*time.Second, func() bool { return !pr.IsUnreachable(cutSDS.addr) })
	relayed := v.Status().Relayed
	if err := v.WriteAt(ctx, pattern(4096, 4), off, false); err != nil {
		t.Fatal(err)
	}
	if v.Status().Relayed != relayed {
		t.Fatal("IO still relayed after the heal")
	}
}

// The heartbeats name lost SDSs gossip lists alive by name, leave out those it lists dead, and
// give the others' addresses.
func TestUnreachableSDSNames(t *testing.T) {
	p := NewSDSConns(wire.ClientOptions{}, nil)
	for _, addr := range []string{"a:1", "b:1", "c:1", "d:1"} {
		p.addrs[addr] = &sdsEndpoint{addr: addr}
	}
	pr := reach.New(p.probeTargets)
	pr.Dial = func(_ context.Context, addr string) error {
		if addr == "c:1" {
			return nil
		}
		return errors.New("refused")
	}
	p.reach = pr
	pr.Round(context.Background())
	pr.Round(context.Background())
	members := []gossip.Member{
		{Name: "sds-1", State: gossip.StateAlive, Meta: gossip.Meta{Caps: []string{gossip.CapSDS}, Data: "a:1"}},
		{Name: "sds-2", State: gossip.StateDead, Meta: gossip.Meta{Caps: []string{gossip.CapSDS}, Data: "b:1"}},
		{Name: "sds-3", State: gossip.StateAlive, Meta: gossip.Meta{Caps: []string{gossip.CapSDS}, Data: "c:1"}},
	}
	if got := p.unreachableSDS(func() []gossip.Member { return members }); !slices.Equal(got, []string{"d:1", "sds-1"}) {
		t.Fatalf("named %v, want [d:1 sds-1]", got)
	}
	if got := p.unreachableSDS(nil); !slices.Equal(got, []string{"a:1", "b:1", "d:1"}) {
		t.Fatalf("without gossip: %v", got)
	}
}

// A chunk whose primary and secondary are both out of this SDC's reach is relayed through a
// third SDS of the layout, and so is a FLUSH.
func TestIORelayedThroughAThirdSDS(t *testing.T) {
	c := newFakeCluster(t, 3)
	c.addVolume(1, "vol1", fsm.ReadWrite)
	e := newTestExporter(t, c, 10*time.Second)
	l := c.trueLayout(1)
	const chunk = 0
	reps := l.Replicas(chunk)
	cut := map[string]bool{c.sds[reps[0]].addr: true, c.sds[reps[1]].addr: true}
	var third int64
	for id := range c.sds {
		if id != reps[0] && id != reps[1] {
			third = id
		}
	}
	pr := reach.New(e.cfg.Conns.probeTargets)
	pr.Interval = 10 * time.Millisecond
	pr.Dial = func(_ context.Context, addr string) error {
		if cut[addr] {
			return errors.New("probe timed out")
		}
		return nil
	}
	e.cfg.Conns.startProbes(pr)
	v := exportedVolume(t, e, "vol1")
	ctx := context.Background()
	// The pool learns the addresses it probes by connecting: one read through every SDS.
	for ch := range l.Chunks() {
		if err := v.ReadAt(ctx, make([]byte, 512), ch*testChunkSize); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the probes to lose both copies' SDSs", 5*time.Second, func() bool {
		return pr.IsUnreachable(c.sds[reps[0]].addr) && pr.IsUnreachable(c.sds[reps[1]].addr)
	})
	if err := v.WriteAt(ctx, pattern(8192, 5), 0, true); err != nil {
		t.Fatalf("a write with both copies out of reach: %v", err)
	}
	got := make([]byte, 8192)
	if err := v.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, pattern(8192, 5)) {
		t.Fatalf("read back through the third SDS: %v, equal %v", err, bytes.Equal(got, pattern(8192, 5)))
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatalf("a flush with two SDSs out of reach: %v", err)
	}
	relayed := map[wire.Opcode]int{}
	for _, o := range []wire.Opcode{wire.OpWrite, wire.OpRead, wire.OpFlush} {
		for _, op := range c.sds[third].opsOf(o) {
			if op.flags&wire.FlagRelay != 0 && op.status == wire.StatusOK {
				relayed[o]++
			}
		}
	}
	if relayed[wire.OpWrite] == 0 || relayed[wire.OpRead] == 0 || relayed[wire.OpFlush] < 2 {
		t.Fatalf("relayed through sds-%d: %v", third, relayed)
	}
	if !bytes.Equal(c.sds[reps[0]].chunk(1, chunk)[:8192], got) {
		t.Fatal("the primary does not hold the relayed write")
	}
}
