package fsm

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestRequestIDDeduplicates(t *testing.T) {
	a := newApplier(t)

	// A success applied twice answers the same and changes the state once.
	first := a.applyRID("r1", &CreatePD{Name: "pd1"})
	if first.Err != nil {
		t.Fatal(first.Err)
	}
	d1 := a.digest()
	again := a.applyRID("r1", &CreatePD{Name: "pd1"})
	if _, raw := again.Value.(json.RawMessage); !raw {
		t.Fatalf("a deduplicated result is %T, want the recorded JSON", again.Value)
	}
	if resultKey(t, again) != resultKey(t, first) {
		t.Fatalf("retry answered %s, first answer was %s", resultKey(t, again), resultKey(t, first))
	}
	if a.digest() != d1 || a.counts().ProtectionDomains != 1 {
		t.Fatal("a retried create changed the state")
	}
	// The request id identifies the request: a retry is answered from the record even if
	// its body differs.
	if r := a.applyRID("r1", &CreatePD{Name: "other"}); resultKey(t, r) != resultKey(t, first) {
		t.Fatalf("retry with another body answered %s", resultKey(t, r))
	}

	// A rejection applied twice answers the same rejection.
	rej := a.applyRID("r2", &CreatePD{Name: "pd1"})
	if e, ok := AsError(rej.Err); !ok || e.Kind != KindConflict {
		t.Fatalf("duplicate name: %v", rej.Err)
	}
	d2 := a.digest()
	if d2 == d1 {
		t.Fatal("a rejected command with a request id must remember its outcome (requests is part of the digest)")
	}
	rej2 := a.applyRID("r2", &CreatePD{Name: "pd1"})
	if resultKey(t, rej2) != resultKey(t, rej) || a.digest() != d2 {
		t.Fatalf("retried rejection answered %s, first %s", resultKey(t, rej2), resultKey(t, rej))
	}
	// The recorded rejection stands even once the command could succeed.
	a.ok(&DeletePD{ID: 1})
	if r := a.applyRID("r2", &CreatePD{Name: "pd1"}); resultKey(t, r) != resultKey(t, rej) {
		t.Fatalf("retry after the state changed answered %s", resultKey(t, r))
	}
	if a.counts().ProtectionDomains != 0 {
		t.Fatal("a deduplicated create was applied")
	}

	// Two entries with the same request id in one batch: the second is answered from the first.
	e1, e2 := a.entry("r3", &CreatePD{Name: "pd3"}), a.entry("r3", &CreatePD{Name: "pd3"})
	res := a.s.Apply([]Entry{e1, e2})
	if res[0].Err != nil || resultKey(t, res[0]) != resultKey(t, res[1]) {
		t.Fatalf("same-batch retry: %s vs %s", resultKey(t, res[0]), resultKey(t, res[1]))
	}
	if a.counts().ProtectionDomains != 1 {
		t.Fatal("same-batch retry applied twice")
	}

	// What is stored is exactly the outcome.
	a.read(func(r *Reader) error {
		var kind, msg sql.NullString
		var result sql.NullString
		if err := r.q.QueryRow(`SELECT result, err_kind, err_msg FROM requests WHERE rid = 'r2'`).Scan(&result, &kind, &msg); err != nil {
			return err
		}
		if result.Valid || kind.String != string(KindConflict) || !strings.Contains(msg.String, "pd1") {
			t.Fatalf("stored r2 outcome: %v %v %v", result, kind, msg)
		}
		return nil
	})
}

// TestRequestIDsExpire: request ids older than requestTTL (leader time) are forgotten when the
// applied index enters a new block of 1024, identically on every replica.
func TestRequestIDsExpire(t *testing.T) {
	a := newApplier(t)
	a.applyRID("old", &CreatePD{Name: "a"})
	a.index = 1021
	a.now += requestTTL
	a.applyRID("recent", &CreatePD{Name: "b"}) // index 1022
	a.applyRID("old", &CreatePD{Name: "a"})    // 1023: still remembered
	if a.counts().ProtectionDomains != 2 {
		t.Fatal("old request forgotten too early")
	}
	a.applyRID("purger", &CreatePD{Name: "c"}) // 1024: purges what is older than the TTL
	if a.index != 1024 {
		t.Fatalf("index %d", a.index)
	}
	r := a.applyRID("old", &CreatePD{Name: "a"}) // forgotten: applied anew, and rejected
	if e, ok := AsError(r.Err); !ok || e.Kind != KindConflict {
		t.Fatalf("expired request id: %v", r.Err)
	}
	if r := a.applyRID("recent", &CreatePD{Name: "b"}); r.Err != nil {
		t.Fatalf("recent request id was forgotten: %v", r.Err)
	}
}

// randomEntries builds n mixed log entries from a seeded generator: valid and invalid commands
// on a small name and id space (so duplicates, missing references and conflicts are common),
// some with request ids and some retrying an earlier request id.
func randomEntries(t testing.TB, seed uint64, firstIndex uint64, n int) []Entry {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	gen := &applier{t: t, index: firstIndex - 1, now: 1_700_000_000_000}
	name := func(prefix string) string {
		switch rng.IntN(30) {
		case 0:
			return ""
		case 1:
			return "42"
		case 2:
			return "bad name"
		}
		return fmt.Sprintf("%s%d", prefix, rng.IntN(20))
	}
	// Ids are mostly small (objects that likely exist), sometimes certainly missing.
	id := func() int64 {
		if rng.IntN(10) == 0 {
			return []int64{0, 99}[rng.IntN(2)]
		}
		return 1 + rng.Int64N(5)
	}
	size := func() int64 { return rng.Int64N(60) - 2 }
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	// mostly returns good, and bad one time in eight.
	mostly := func(good, bad string) string {
		if rng.IntN(8) == 0 {
			return bad
		}
		return good
	}
	var rids []string
	entries := make([]Entry, 0, n)
	for range n {
		var c Command
		switch rng.IntN(26) {
		case 0, 1:
			c = &CreatePD{Name: name("pd")}
		case 2:
			c = &DeletePD{ID: id()}
		case 3:
			c = &CreateFaultSet{Name: name("fs"), PDID: id()}
		case 4:
			c = &DeleteFaultSet{ID: id()}
		case 5, 6:
			c = &CreatePool{Name: name("pool"), PDID: id(), TotalCapacityGB: size() * 3,
				ProtectionPolicy: mostly(pick("", TwoCopies), "raid5"), ChunkSizeMB: []int64{0, 1, 64, 1024, 3, 2048}[rng.IntN(6)]}
		case 7:
			c = &DeletePool{ID: id()}
		case 8, 22, 23:
			var fs *int64
			if rng.IntN(3) == 0 {
				fs = ptr(id())
			}
			c = &AddSDS{Name: name("sds"), ProtectionDomainID: id(), FaultSetID: fs, TotalCapacityGB: size(),
				Devices: Devices{mostly(pick("blk0", "blk1"), "")}, Address: mostly(pick("", "10.0.0.1:7072"), "nope")}
		case 9:
			c = &SetSDSState{ID: id(), State: pick(SDSUp, SDSDown, SDSFailed, "gone")}
		case 10:
			c = &RemoveSDS{ID: id()}
		case 11, 24:
			c = &AddSDC{Name: name("sdc"), Address: mostly(pick("", "10.0.0.9:1"), "x")}
		case 12:
			c = &RemoveSDC{ID: id()}
		case 13, 14:
			c = &CreateVolume{Name: name("vol"), PoolID: id(), SizeGB: size(), Provisioning: mostly(pick("", Thin, Thick), "fat")}
		case 15:
			c = &DeleteVolume{ID: id()}
		case 16, 17, 25:
			c = &MapVolume{VolumeID: id(), SDCID: id(), AccessMode: mostly(pick("", ReadWrite, ReadOnly), "rw"), IOPSLimit: rng.Int64N(100) - 2}
		case 18:
			c = &UnmapVolume{VolumeID: id(), SDCID: id()}
		case 19:
			c = &ExtendVolume{VolumeID: id(), SizeGB: size() * 2}
		case 20:
			var expect *string
			if rng.IntN(3) == 0 {
				expect = ptr(pick("", "v0", "v1"))
			}
			c = &SetLabel{VolumeID: id(), Key: mostly(pick("k0", "k1"), ""), Value: pick("v0", "v1", "v2"), Expect: expect}
		case 21:
			if rng.IntN(2) == 0 {
				c = &UpsertMDM{ID: pick("m1", "m2", ""), RaftAddr: "h:1", APIAddr: pick("h:2", "bad")}
			} else {
				c = &RemoveMDM{ID: pick("m1", "m2")}
			}
		}
		rid := ""
		switch x := rng.IntN(10); {
		case x < 3:
			rid = fmt.Sprintf("rid-%d", len(rids))
			rids = append(rids, rid)
		case x == 3 && len(rids) > 0:
			rid = rids[rng.IntN(len(rids))] // a retry
		}
		entries = append(entries, gen.entry(rid, c))
	}
	return entries
}

// applyInBatches applies entries in batches of random size (1 to maxBatch).
func applyInBatches(s *Store, entries []Entry, seed uint64, maxBatch int) []Result {
	rng := rand.New(rand.NewPCG(seed, 7))
	var out []Result
	for len(entries) > 0 {
		n := min(1+rng.IntN(maxBatch), len(entries))
		out = append(out, s.Apply(entries[:n])...)
		entries = entries[n:]
	}
	return out
}

func storeDigest(t testing.TB, s *Store) Digest {
	t.Helper()
	d, err := s.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d.Index != s.AppliedIndex() {
		t.Fatalf("digest index %d, AppliedIndex %d", d.Index, s.AppliedIndex())
	}
	return d
}

func TestDeterministicApply(t *testing.T) {
	entries := randomEntries(t, 1, 1, 400)

	one := openStore(t, filepath.Join(t.TempDir(), "one.db"))
	oneRes := one.Apply(entries)

	many := openStore(t, filepath.Join(t.TempDir(), "many.db"))
	manyRes := applyInBatches(many, entries, 2, 9)

	var ok, rejected, deduped int
	for i := range entries {
		k1, k2 := resultKey(t, oneRes[i]), resultKey(t, manyRes[i])
		if k1 != k2 {
			t.Fatalf("entry %d: one batch answered %s, small batches %s", entries[i].Index, k1, k2)
		}
		if oneRes[i].Skipped {
			t.Fatalf("entry %d skipped", entries[i].Index)
		}
		switch {
		case oneRes[i].Err != nil:
			rejected++
		default:
			ok++
		}
		if _, raw := oneRes[i].Value.(json.RawMessage); raw {
			deduped++
		}
	}
	t.Logf("%d entries: %d applied, %d rejected, %d answered from the request record", len(entries), ok, rejected, deduped)
	if ok < len(entries)/5 || rejected < len(entries)/5 || deduped == 0 {
		t.Fatalf("the generated history is too one-sided to prove much: %d ok, %d rejected, %d deduplicated", ok, rejected, deduped)
	}
	c := countsOf(t, one)
	if c.Volumes == 0 || c.Mappings == 0 || c.SDS == 0 || c.Pools == 0 {
		t.Fatalf("the generated history built too little: %+v", c)
	}

	d1, d2 := storeDigest(t, one), storeDigest(t, many)
	if d1 != d2 || d1.Index != entries[len(entries)-1].Index {
		t.Fatalf("digests differ: one batch %+v, small batches %+v", d1, d2)
	}
}

func countsOf(t testing.TB, s *Store) Counts {
	t.Helper()
	var c Counts
	if err := s.Read(func(r *Reader) (err error) { c, err = r.Counts(); return }); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReplaySkipsApplied: entries at or below the applied index change nothing, before and
// after a restart, and a batch straddling the applied index applies only its new entries.
func TestReplaySkipsApplied(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	entries := randomEntries(t, 3, 1, 120)
	ref := openStore(t, filepath.Join(t.TempDir(), "ref.db"))
	ref.Apply(entries)
	want := storeDigest(t, ref)

	s := openStore(t, path)
	applyInBatches(s, entries[:80], 4, 10)
	mid := storeDigest(t, s)
	if mid.Index != 80 {
		t.Fatalf("applied index %d", mid.Index)
	}
	assertSkipped := func(s *Store, batch []Entry) {
		t.Helper()
		for i, r := range s.Apply(batch) {
			if !r.Skipped || r.Err != nil || r.Value != nil {
				t.Fatalf("replayed entry %d: %+v", batch[i].Index, r)
			}
		}
		if got := storeDigest(t, s); got != mid {
			t.Fatalf("replay changed the store: %+v, want %+v", got, mid)
		}
	}
	assertSkipped(s, entries[:80])
	assertSkipped(s, entries[79:80])
	assertSkipped(s, nil)

	// Restart.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	if s.AppliedIndex() != 80 {
		t.Fatalf("applied index after reopen %d", s.AppliedIndex())
	}
	if got := storeDigest(t, s); got != mid {
		t.Fatalf("reopened store %+v, want %+v", got, mid)
	}
	assertSkipped(s, entries[:80])

	// A batch straddling the applied index.
	res := s.Apply(entries[70:100])
	for i, r := range res {
		if r.Skipped != (i < 10) {
			t.Fatalf("entry %d: skipped=%v", entries[70+i].Index, r.Skipped)
		}
	}
	applyInBatches(s, entries[100:], 5, 7)
	if got := storeDigest(t, s); got != want {
		t.Fatalf("after replay and restart: %+v, want %+v", got, want)
	}
	// Out-of-order (older) entries inside a batch are skipped too.
	res = s.Apply([]Entry{entries[5], entries[119]})
	if !res[0].Skipped || !res[1].Skipped || storeDigest(t, s) != want {
		t.Fatalf("stale entries in a batch: %+v", res)
	}
}

// TestAppliedIndexWithoutTerm: the applied index is recorded whenever an entry is applied, even
// one with term 0 (raft never sends one, but Entry allows it). It used to be recorded only for a
// non-zero term, so the in-memory index ran ahead of the database and a restart re-applied.
func TestAppliedIndexWithoutTerm(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openStore(t, path)
	data, _ := Encode(Header{Time: 1}, &CreatePD{Name: "pd"})
	s.Apply([]Entry{{Index: 1, Data: data}})
	if d := storeDigest(t, s); d.Index != 1 {
		t.Fatalf("digest index %d", d.Index)
	}
	s.Close()
	s = openStore(t, path)
	if s.AppliedIndex() != 1 {
		t.Fatalf("applied index after reopen %d", s.AppliedIndex())
	}
	if r := s.Apply([]Entry{{Index: 1, Data: data}}); !r[0].Skipped {
		t.Fatal("entry 1 applied twice")
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	entries := randomEntries(t, 5, 1, 200)
	a := openStore(t, filepath.Join(t.TempDir(), "a.db"))
	a.Apply(entries[:150])
	snap := filepath.Join(t.TempDir(), "snap.db")
	if err := a.SnapshotTo(snap); err != nil {
		t.Fatal(err)
	}
	if err := a.SnapshotTo(snap); err == nil {
		t.Fatal("SnapshotTo overwrote an existing file")
	}
	if idx, err := DatabaseIndex(snap); err != nil || idx != 150 {
		t.Fatalf("DatabaseIndex = %d, %v", idx, err)
	}
	if err := CheckDatabase(snap); err != nil {
		t.Fatal(err)
	}
	want := storeDigest(t, a)

	// Restore into a store that has a different history of its own.
	dirB := t.TempDir()
	b := openStore(t, filepath.Join(dirB, "b.db"))
	b.Apply(randomEntries(t, 6, 1, 300))
	f, err := os.Open(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := b.Restore(f); err != nil {
		t.Fatal(err)
	}
	if got := storeDigest(t, b); got != want {
		t.Fatalf("restored %+v, want %+v", got, want)
	}
	// Both go on identically.
	ra, rb := a.Apply(entries[150:]), b.Apply(entries[150:])
	for i := range ra {
		if resultKey(t, ra[i]) != resultKey(t, rb[i]) {
			t.Fatalf("entry %d after restore: %s vs %s", entries[150+i].Index, resultKey(t, ra[i]), resultKey(t, rb[i]))
		}
	}
	want = storeDigest(t, a)
	if got := storeDigest(t, b); got != want {
		t.Fatalf("after more entries: %+v vs %+v", got, want)
	}

	// Garbage is refused and the store is left intact and usable.
	newer := filepath.Join(t.TempDir(), "newer.db")
	if err := a.SnapshotTo(newer); err != nil {
		t.Fatal(err)
	}
	setMeta(t, newer, "schema_version", SchemaVersion+1)
	newerBytes, _ := os.ReadFile(newer)
	for name, tc := range map[string]struct {
		data []byte
		want error
	}{
		"empty":        {nil, ErrNotPflexDB},
		"short":        {[]byte("garbage"), ErrNotPflexDB},
		"random":       {bytes.Repeat([]byte("not a database "), 500), ErrNotPflexDB},
		"plain sqlite": {plainSQLite(t), ErrNotPflexDB},
		"newer schema": {newerBytes, ErrSchemaTooNew},
	} {
		err := b.Restore(bytes.NewReader(tc.data))
		if !errors.Is(err, tc.want) {
			t.Fatalf("%s: Restore err = %v, want %v", name, err, tc.want)
		}
		if got := storeDigest(t, b); got != want {
			t.Fatalf("%s: failed restore changed the store", name)
		}
	}
	more := randomEntries(t, 7, want.Index+1, 20)
	a.Apply(more)
	b.Apply(more)
	if storeDigest(t, a) != storeDigest(t, b) {
		t.Fatal("store unusable after a failed restore")
	}
	// No staging files are left beside the database.
	names, _ := os.ReadDir(dirB)
	for _, n := range names {
		if !strings.HasPrefix(n.Name(), "b.db") {
			t.Fatalf("restore left %s behind", n.Name())
		}
	}
}

// setMeta rewrites one meta value of a database file.
func setMeta(t testing.TB, path, key string, value int64) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE meta SET value = ? WHERE key = ?`, value, key); err != nil {
		t.Fatal(err)
	}
}

// plainSQLite is a valid SQLite database that is not a pflex state database.
func plainSQLite(t testing.TB) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plain.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE t(x); INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConcurrentReadsAndSnapshots runs applies beside digests, reads and snapshots (for -race).
func TestConcurrentReadsAndSnapshots(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	entries := randomEntries(t, 8, 1, 150)
	var wg sync.WaitGroup
	wg.Go(func() { applyInBatches(s, entries, 9, 5) })
	dir := t.TempDir()
	for i := 0; i < 5; i++ {
		path := filepath.Join(dir, fmt.Sprintf("snap%d.db", i))
		if err := s.SnapshotTo(path); err != nil {
			t.Error(err)
		}
		if err := CheckDatabase(path); err != nil {
			t.Error(err)
		}
		if _, err := s.Digest(); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	// Every snapshot is a state the store actually passed through: replaying the log up to its
	// index into a fresh store gives the same digest.
	for i := 0; i < 5; i++ {
		path := filepath.Join(dir, fmt.Sprintf("snap%d.db", i))
		idx, err := DatabaseIndex(path)
		if err != nil {
			t.Fatal(err)
		}
		restored := openStore(t, filepath.Join(t.TempDir(), "r.db"))
		f, _ := os.Open(path)
		err = restored.Restore(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		replayed := openStore(t, filepath.Join(t.TempDir(), "p.db"))
		replayed.Apply(entries[:idx])
		if storeDigest(t, restored) != storeDigest(t, replayed) {
			t.Fatalf("snapshot %d at index %d is not a state the store passed through", i, idx)
		}
	}
}

func TestRestoreStateCommand(t *testing.T) {
	a := newApplier(t)
	a.s.Apply(randomEntries(t, 10, 1, 200))
	a.index = a.s.AppliedIndex()
	backup := filepath.Join(t.TempDir(), "backup.db")
	if err := a.s.SnapshotTo(backup); err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	want := a.digest()
	wantCounts := a.counts()

	b := newApplier(t)
	b.s.Apply(randomEntries(t, 11, 1, 50))
	b.index = b.s.AppliedIndex()
	if b.digest() == want {
		t.Fatal("the two stores start out equal")
	}

	// Garbage and foreign databases are rejected as invalid and change nothing.
	newer := filepath.Join(t.TempDir(), "newer.db")
	if err := a.s.SnapshotTo(newer); err != nil {
		t.Fatal(err)
	}
	setMeta(t, newer, "schema_version", SchemaVersion+1)
	newerBytes, _ := os.ReadFile(newer)
	b.reject(KindInvalid, &RestoreState{})
	b.reject(KindInvalid, &RestoreState{DB: []byte("garbage")})
	b.reject(KindInvalid, &RestoreState{DB: bytes.Repeat([]byte{0xde, 0xad}, 4096)})
	b.reject(KindInvalid, &RestoreState{DB: plainSQLite(t)})
	b.reject(KindInvalid, &RestoreState{DB: newerBytes})
	b.reject(KindInvalid, &RestoreState{DB: db[:len(db)/2]})

	got := b.ok(&RestoreState{DB: db})
	if got != wantCounts {
		t.Fatalf("restore answered %+v, want %+v", got, wantCounts)
	}
	d := b.digestAt()
	if d.Digest != want {
		t.Fatal("after RestoreState the state differs from the backup's")
	}
	if d.Index != b.index {
		t.Fatalf("RestoreState moved the applied index to %d (want the entry's own index %d)", d.Index, b.index)
	}
	// Ids continue from the backup's sequence: the same commands at the same index and time
	// leave both stores equal.
	a.index, b.index = max(a.index, b.index), max(a.index, b.index)
	a.now, b.now = max(a.now, b.now), max(a.now, b.now)
	for _, c := range []Command{&CreatePD{Name: "after-restore"}, &AddSDC{Name: "after-restore"}} {
		if ka, kb := resultKey(t, a.apply(c)), resultKey(t, b.apply(c)); ka != kb {
			t.Fatalf("%T: %s on the backup's store, %s on the restored one", c, ka, kb)
		}
	}
	if a.digestAt() != b.digestAt() {
		t.Fatal("stores differ after the same commands")
	}
}

// The prune does not depend on the boundary entry carrying a request id, nor on hitting the
// exact multiple of 1024: jumping past it (non-command entries in between) prunes too.
func TestRequestIDsExpireAcrossBoundaryWithoutRequestID(t *testing.T) {
	a := newApplier(t)
	a.applyRID("old", &CreatePD{Name: "a"})
	a.now += requestTTL
	a.index = 1030
	a.apply(&CreatePD{Name: "b"}) // index 1031, no request id: still prunes
	r := a.applyRID("old", &CreatePD{Name: "a"})
	if e, ok := AsError(r.Err); !ok || e.Kind != KindConflict {
		t.Fatalf("expired request id was still remembered: %v", r.Err)
	}
}
