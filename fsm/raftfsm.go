package fsm

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// RaftFSM adapts a Store to raft.BatchingFSM. Its methods only delegate.
type RaftFSM struct {
	store   *Store
	tempDir string // where snapshot copies are staged before raft persists them
}

var _ raft.BatchingFSM = (*RaftFSM)(nil)

// NewRaftFSM wraps store; snapshot copies are staged in tempDir.
func NewRaftFSM(store *Store, tempDir string) (*RaftFSM, error) {
	if err := os.MkdirAll(tempDir, 0o700); err != nil {
		return nil, fmt.Errorf("fsm: snapshot staging dir: %w", err)
	}
	return &RaftFSM{store: store, tempDir: tempDir}, nil
}

func (f *RaftFSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies the command entries of a batch in one transaction. Raft also hands the FSM
// entries of other types (noop, configuration); they get a nil response.
func (f *RaftFSM) ApplyBatch(logs []*raft.Log) []any {
	entries := make([]Entry, 0, len(logs))
	pos := make([]int, 0, len(logs))
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			entries = append(entries, Entry{Index: l.Index, Term: l.Term, Data: l.Data})
			pos = append(pos, i)
		}
	}
	out := make([]any, len(logs))
	for i, r := range f.store.Apply(entries) {
		out[pos[i]] = r
	}
	return out
}

// Snapshot copies the database while the FSM goroutine is paused on it; Persist then streams the
// copy while new entries are applied to the live database.
func (f *RaftFSM) Snapshot() (raft.FSMSnapshot, error) {
	tmp, err := os.CreateTemp(f.tempDir, "snap-*.db")
	if err != nil {
		return nil, fmt.Errorf("fsm: snapshot: %w", err)
	}
	path := tmp.Name()
	tmp.Close()
	os.Remove(path) // VACUUM INTO wants to create the file itself
	if err := f.store.SnapshotTo(path); err != nil {
		return nil, err
	}
	return &fileSnapshot{path: path}, nil
}

func (f *RaftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return f.store.Restore(rc)
}

type fileSnapshot struct{ path string }

func (s *fileSnapshot) Persist(sink raft.SnapshotSink) error {
	file, err := os.Open(s.path)
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	defer file.Close()
	if _, err := io.Copy(sink, file); err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fileSnapshot) Release() { os.Remove(s.path) }

// StagingDir is the conventional snapshot staging directory under a data dir.
func StagingDir(dataDir string) string { return filepath.Join(dataDir, "snapshot-staging") }
