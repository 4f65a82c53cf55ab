package fsm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

func newRaftFSM(t *testing.T, s *Store) (*RaftFSM, string) {
	t.Helper()
	staging := StagingDir(t.TempDir())
	f, err := NewRaftFSM(s, staging)
	if err != nil {
		t.Fatal(err)
	}
	return f, staging
}

func commandLog(e Entry) *raft.Log {
	return &raft.Log{Index: e.Index, Term: e.Term, Type: raft.LogCommand, Data: e.Data}
}

// TestRaftFSMNonCommandEntries: raft hands the FSM noop and configuration entries too; they get
// a nil response, are never decoded, and do not move the applied index on their own.
func TestRaftFSMNonCommandEntries(t *testing.T) {
	a := newApplier(t)
	f, _ := newRaftFSM(t, a.s)

	e1 := a.entry("", &CreatePD{Name: "pd1"})
	a.index += 2 // 2: noop, 3: configuration
	e4 := a.entry("", &CreatePD{Name: "pd1"})
	conf := raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "m1", Address: "h:1"},
	}})
	out := f.ApplyBatch([]*raft.Log{
		commandLog(e1),
		{Index: 2, Term: testTerm, Type: raft.LogNoop},
		{Index: 3, Term: testTerm, Type: raft.LogConfiguration, Data: conf},
		commandLog(e4),
	})
	if len(out) != 4 || out[1] != nil || out[2] != nil {
		t.Fatalf("responses %#v", out)
	}
	if r, ok := out[0].(Result); !ok || r.Err != nil || r.Value.(ProtectionDomain).Name != "pd1" {
		t.Fatalf("response to entry 1: %#v", out[0])
	}
	if r, ok := out[3].(Result); !ok {
		t.Fatalf("response to entry 4: %#v", out[3])
	} else if e, ok := AsError(r.Err); !ok || e.Kind != KindConflict {
		t.Fatalf("entry 4: %v", r.Err)
	}
	if got := a.digestAt(); got.Index != 4 || a.s.AppliedIndex() != 4 {
		t.Fatalf("applied index %d / %d, want 4", got.Index, a.s.AppliedIndex())
	}

	// A batch of non-commands only answers nil and leaves everything as it was.
	before := a.digestAt()
	out = f.ApplyBatch([]*raft.Log{
		{Index: 5, Term: testTerm, Type: raft.LogNoop},
		{Index: 6, Term: testTerm, Type: raft.LogConfiguration, Data: conf},
		{Index: 7, Term: testTerm, Type: raft.LogBarrier},
	})
	if len(out) != 3 || out[0] != nil || out[1] != nil || out[2] != nil {
		t.Fatalf("responses %#v", out)
	}
	if got := f.Apply(&raft.Log{Index: 8, Term: testTerm, Type: raft.LogNoop}); got != nil {
		t.Fatalf("single noop answered %#v", got)
	}
	if got := a.digestAt(); got != before || a.s.AppliedIndex() != before.Index {
		t.Fatalf("non-command entries changed the store: %+v, want %+v", got, before)
	}
	if out := f.ApplyBatch(nil); len(out) != 0 {
		t.Fatalf("empty batch answered %#v", out)
	}

	// Single Apply of a command, then of one already applied.
	a.index = 8
	e9 := a.entry("", &CreatePD{Name: "pd9"})
	if r, ok := f.Apply(commandLog(e9)).(Result); !ok || r.Err != nil || r.Skipped {
		t.Fatalf("entry 9: %#v", r)
	}
	if a.s.AppliedIndex() != 9 {
		t.Fatalf("applied index %d", a.s.AppliedIndex())
	}
	if r := f.Apply(commandLog(e1)).(Result); !r.Skipped {
		t.Fatalf("re-applied entry 1: %#v", r)
	}
}

// bufferSink is a raft.SnapshotSink that keeps the snapshot in memory. The buffer is not
// embedded, so io.Copy cannot bypass Write through bytes.Buffer.ReadFrom.
type bufferSink struct {
	buf               bytes.Buffer
	failWrites        bool
	closed, cancelled bool
}

func (s *bufferSink) ID() string { return "buffer" }

func (s *bufferSink) Write(p []byte) (int, error) {
	if s.failWrites {
		return 0, errors.New("disk full")
	}
	return s.buf.Write(p)
}

func (s *bufferSink) Close() error  { s.closed = true; return nil }
func (s *bufferSink) Cancel() error { s.cancelled = true; return nil }

// trackedReader records whether Restore closed it.
type trackedReader struct {
	io.Reader
	closed bool
}

func (r *trackedReader) Close() error { r.closed = true; return nil }

func TestRaftFSMSnapshotPersistRestore(t *testing.T) {
	entries := randomEntries(t, 20, 1, 250)
	a := openStore(t, filepath.Join(t.TempDir(), "a.db"))
	fa, staging := newRaftFSM(t, a)
	for _, e := range entries[:150] {
		fa.ApplyBatch([]*raft.Log{commandLog(e)})
	}
	want := storeDigest(t, a)

	snap, err := fa.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Apply goes on while Persist streams the copy; the snapshot keeps the state it was taken at.
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, e := range entries[150:] {
			fa.ApplyBatch([]*raft.Log{commandLog(e)})
		}
	})
	sink := &bufferSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	snap.Release()
	if left, _ := os.ReadDir(staging); len(left) != 0 {
		t.Fatalf("Release left %d staging files", len(left))
	}

	b := openStore(t, filepath.Join(t.TempDir(), "b.db"))
	b.Apply(randomEntries(t, 21, 1, 40))
	fb, _ := newRaftFSM(t, b)
	rc := &trackedReader{Reader: bytes.NewReader(sink.buf.Bytes())}
	if err := fb.Restore(rc); err != nil {
		t.Fatal(err)
	}
	if !rc.closed {
		t.Fatal("Restore did not close the snapshot reader")
	}
	if got := storeDigest(t, b); got != want {
		t.Fatalf("restored %+v, want %+v", got, want)
	}
	// The restored replica catches up from the log to the same state.
	for _, e := range entries {
		fb.ApplyBatch([]*raft.Log{commandLog(e)})
	}
	if storeDigest(t, a) != storeDigest(t, b) {
		t.Fatal("replicas differ after catching up")
	}

	// A snapshot that will not restore leaves the replica as it was.
	before := storeDigest(t, b)
	rc = &trackedReader{Reader: bytes.NewReader([]byte("definitely not sqlite"))}
	if err := fb.Restore(rc); !errors.Is(err, ErrNotPflexDB) || !rc.closed {
		t.Fatalf("garbage restore: err %v, closed %v", err, rc.closed)
	}
	if storeDigest(t, b) != before {
		t.Fatal("failed restore changed the replica")
	}

	// A sink that fails is cancelled.
	snap, err = fa.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	bad := &bufferSink{failWrites: true}
	if err := snap.Persist(bad); err == nil || !bad.cancelled || bad.closed {
		t.Fatalf("failing sink: err %v cancelled %v closed %v", err, bad.cancelled, bad.closed)
	}
}
