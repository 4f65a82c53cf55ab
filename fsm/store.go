package fsm

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Store is the materialized state of one replica: a SQLite database that also records the
// index of the last log entry applied to it. It is the testable processor behind the raft.FSM
// adapter; tests drive it directly with log entries.
type Store struct {
	path string

	// mu is held for reading by every user of the handles below and for writing only while
	// Restore swaps the database file underneath them.
	mu sync.RWMutex
	w  *sql.DB   // the writer pool: wc, and a second connection for snapshots and schema work
	wc *sql.Conn // the writer connection Apply holds (see cachedConn)
	r  *sql.DB   // readers (WAL lets them run beside the writer)
	ws *stmtCache
	rs *stmtCache

	applied atomic.Uint64
}

// Entry is one committed log entry handed to the store.
type Entry struct {
	Index uint64
	Term  uint64
	Data  []byte
}

// Result is what applying one entry produced: a value for the proposer or a typed rejection.
type Result struct {
	Value   any
	Err     error
	Skipped bool // at or below the stored applied index: applied before a restart
}

// Open opens (creating if needed) the state database at path.
func Open(path string) (*Store, error) {
	s := &Store{path: path}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	// NORMAL is enough: the raft log is the durable record, and the applied index commits in
	// the same transaction as the state, so a lost tail is simply applied again.
	q.Add("_pragma", "synchronous(NORMAL)")
	if readOnly {
		q.Add("_pragma", "query_only(true)")
	} else {
		q.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + q.Encode()
}

func (s *Store) open() error {
	w, err := sql.Open("sqlite", dsn(s.path, false))
	if err != nil {
		return fmt.Errorf("fsm: open %s: %w", s.path, err)
	}
	// Apply is the only writer, on a connection it holds (holdWriter); the second connection
	// serves snapshots.
	w.SetMaxOpenConns(2)
	if _, err := w.Exec(schema); err != nil {
		w.Close()
		return fmt.Errorf("fsm: create schema in %s: %w", s.path, err)
	}
	version, err := metaValue(w, "schema_version")
	if err != nil {
		w.Close()
		return err
	}
	switch {
	case version == 0:
		if _, err := w.Exec(`INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)`, SchemaVersion); err != nil {
			w.Close()
			return fmt.Errorf("fsm: write schema version: %w", err)
		}
	case version > SchemaVersion:
		w.Close()
		return fmt.Errorf("%w: %s has version %d, this binary knows %d", ErrSchemaTooNew, s.path, version, SchemaVersion)
	case version < SchemaVersion:
		if err := migrate(w, version); err != nil {
			w.Close()
			return fmt.Errorf("fsm: migrate %s from schema %d: %w", s.path, version, err)
		}
	}
	applied, err := metaValue(w, "applied_index")
	if err != nil {
		w.Close()
		return err
	}
	r, err := sql.Open("sqlite", dsn(s.path, true))
	if err != nil {
		w.Close()
		return fmt.Errorf("fsm: open readers on %s: %w", s.path, err)
	}
	r.SetMaxOpenConns(8)
	s.w, s.r = w, r
	if err := s.holdWriter(); err != nil {
		r.Close()
		w.Close()
		return err
	}
	s.rs = newStmtCache(r)
	s.applied.Store(uint64(applied))
	return nil
}

type queryer interface {
	Query(query string, args ...any) (*sql.Rows, error)
	QueryRow(query string, args ...any) *sql.Row
}

func metaValue(q queryer, key string) (int64, error) {
	var v int64
	err := q.QueryRow(`SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("fsm: read meta %s: %w", key, err)
	}
	return v, nil
}

// AppliedIndex is the index of the last entry whose effects are in the database.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// Path is the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeHandles()
}

func (s *Store) closeHandles() error {
	return errors.Join(s.ws.close(), s.wc.Close(), s.rs.close(), s.r.Close(), s.w.Close())
}

// holdWriter takes the connection Apply runs on out of the writer pool, with its statement cache.
func (s *Store) holdWriter() error {
	wc, err := s.w.Conn(context.Background())
	if err != nil {
		return fmt.Errorf("fsm: writer connection to %s: %w", s.path, err)
	}
	s.wc, s.ws = wc, newConnStmtCache(wc)
	return nil
}

// Apply applies a batch of committed entries in one SQLite transaction, which also records the
// new applied index. Entries at or below the stored applied index were applied before a restart
// and are skipped. A storage failure or an entry that does not decode panics: a replica that
// cannot apply the log must stop rather than diverge.
func (s *Store) Apply(entries []Entry) []Result {
	s.mu.RLock()
	defer s.mu.RUnlock()
	results := make([]Result, len(entries))
	last := s.applied.Load()
	var lastTerm uint64
	appliedAny := false
	tx := cachedConn{conn: s.wc, cache: s.ws}
	if _, err := tx.Exec(`BEGIN IMMEDIATE`); err != nil {
		panic(fmt.Sprintf("fsm: begin apply transaction: %v", err))
	}
	committed := false
	defer func() {
		if !committed { // a panic below: leave nothing of the batch behind
			s.wc.ExecContext(context.Background(), `ROLLBACK`)
		}
	}()
	for i, e := range entries {
		if e.Index <= last {
			results[i] = Result{Skipped: true}
			continue
		}
		h, c, err := Decode(e.Data)
		if err != nil {
			panic(fmt.Sprintf("fsm: entry %d: %v", e.Index, err))
		}
		t := &applyTx{tx: tx, index: e.Index}
		if b, ok := c.(*Batch); ok {
			results[i] = applyBatch(t, b)
		} else {
			reqs := t.loadRequests([]string{h.RequestID})
			results[i] = applyOne(t, reqs, h, c)
			reqs.flush(t)
		}
		// Forget old request ids whenever the index enters a new block of 1024: it depends only
		// on the sequence of command indexes, so every replica prunes at the same entry.
		if last/requestPruneEvery != e.Index/requestPruneEvery {
			t.mustExec(`DELETE FROM requests WHERE ts < ?`, h.Time-requestTTL)
		}
		last, lastTerm, appliedAny = e.Index, e.Term, true
	}
	if appliedAny {
		if _, err := tx.Exec(`INSERT OR REPLACE INTO meta(key, value) VALUES ('applied_index', ?), ('applied_term', ?)`,
			int64(last), int64(lastTerm)); err != nil {
			panic(fmt.Sprintf("fsm: record applied index %d: %v", last, err))
		}
	}
	if _, err := tx.Exec(`COMMIT`); err != nil {
		panic(fmt.Sprintf("fsm: commit entries up to %d: %v", last, err))
	}
	committed = true
	s.applied.Store(last)
	return results
}

// requestTTL bounds how long a request id is remembered for deduplication (milliseconds of
// leader-stamped time). Clients retry for far less than this.
const requestTTL = 15 * 60 * 1000

// requestPruneEvery is how many log indexes pass between prunes of the request table.
const requestPruneEvery = 1024

// applyOne applies one command inside a savepoint so that a rejected command leaves no trace,
// and remembers the outcome under the request id so a retry returns the same answer. A command
// registered with rejectsBeforeWriting needs no savepoint: a rejection leaves nothing to undo.
func applyOne(tx *applyTx, reqs *requestLog, h Header, c Command) Result {
	if h.RequestID != "" {
		if r, ok := reqs.lookup(h.RequestID); ok {
			return r
		}
	}
	hd := registry[c.Type()]
	if !hd.noSavepoint {
		tx.mustExec(`SAVEPOINT cmd`)
	}
	value, err := hd.apply(tx, h, c)
	if err != nil {
		if _, ok := AsError(err); !ok {
			panic(fmt.Sprintf("fsm: entry %d (%s): %v", tx.index, hd.name, err))
		}
		if !hd.noSavepoint {
			tx.mustExec(`ROLLBACK TO cmd`)
		}
	}
	if !hd.noSavepoint {
		tx.mustExec(`RELEASE cmd`)
	}
	if h.RequestID != "" {
		reqs.remember(tx, h, value, err)
	}
	return Result{Value: value, Err: err}
}

// applyTx is the transaction an entry is applied in.
type applyTx struct {
	tx    stmtRunner
	index uint64
}

func (t *applyTx) reader() *Reader { return &Reader{q: t.tx} }

func (t *applyTx) exec(query string, args ...any) (sql.Result, error) {
	res, err := t.tx.Exec(query, args...)
	if err != nil {
		return nil, fmt.Errorf("fsm: entry %d: %w", t.index, err)
	}
	return res, nil
}

func (t *applyTx) mustExec(query string, args ...any) {
	if _, err := t.tx.Exec(query, args...); err != nil {
		panic(fmt.Sprintf("fsm: entry %d: %s: %v", t.index, query, err))
	}
}

// insert runs an INSERT and returns the new row id.
func (t *applyTx) insert(query string, args ...any) (int64, error) {
	res, err := t.exec(query, args...)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// Read runs fn in one read transaction: it sees one consistent state.
func (s *Store) Read(fn func(r *Reader) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	tx, err := s.r.Begin()
	if err != nil {
		return fmt.Errorf("fsm: begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(&Reader{q: cachedTx{tx: tx, cache: s.rs}})
}

// SnapshotTo writes a consistent copy of the database to path (which must not exist). It runs
// on the writer connection (readers are query_only), so it briefly holds up Apply: fine for a
// metadata-sized database, and inside raft's Snapshot the FSM is paused anyway.
func (s *Store) SnapshotTo(path string) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if _, err := s.w.Exec(`VACUUM INTO ?`, path); err != nil {
		return fmt.Errorf("fsm: snapshot to %s: %w", path, err)
	}
	return nil
}

// Restore replaces the whole state with the database read from r: it is written to a temporary
// file, checked, and swapped in atomically.
func (s *Store) Restore(r io.Reader) error {
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".restore-*.db")
	if err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath)
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("fsm: restore: copy: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsm: restore: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if err := CheckDatabase(tmpPath); err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.closeHandles(); err != nil {
		return fmt.Errorf("fsm: restore: close current database: %w", err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(s.path + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("fsm: restore: %w", err)
		}
	}
	if err := os.Rename(tmpPath, s.path); err != nil {
		return fmt.Errorf("fsm: restore: swap in: %w", err)
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return s.open()
}

// CheckDatabase reports whether the file at path is a pflex state database this binary can use.
func CheckDatabase(path string) error {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotPflexDB, err)
	}
	defer db.Close()
	version, err := metaValue(db, "schema_version")
	if err != nil || version == 0 {
		return fmt.Errorf("%w: %s has no pflex schema version", ErrNotPflexDB, filepath.Base(path))
	}
	if version > SchemaVersion {
		return fmt.Errorf("%w: version %d, this binary knows %d", ErrSchemaTooNew, version, SchemaVersion)
	}
	var ok string
	if err := db.QueryRow(`PRAGMA quick_check`).Scan(&ok); err != nil || ok != "ok" {
		return fmt.Errorf("%w: integrity check failed: %v %s", ErrNotPflexDB, err, ok)
	}
	return nil
}

// DatabaseIndex reads the applied index recorded in a state database file (a backup, say).
func DatabaseIndex(path string) (uint64, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	v, err := metaValue(db, "applied_index")
	return uint64(v), err
}
