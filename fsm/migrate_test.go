package fsm

import (
	"database/sql"
	"path/filepath"
	"testing"

	"pflex/internal/layout"
)

func TestMigrateFromSchema1KeepsExclusions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Make it look like a schema 1 database with one exclusion.
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DROP TABLE layout_exclusions`,
		`CREATE TABLE layout_exclusions (volume_id INTEGER NOT NULL, sds_id INTEGER NOT NULL, epoch INTEGER NOT NULL,
			created_at INTEGER NOT NULL, PRIMARY KEY (volume_id, sds_id)) WITHOUT ROWID`,
		`INSERT INTO layout_exclusions VALUES (4, 2, 7, 100)`,
		`UPDATE meta SET value = 1 WHERE key = 'schema_version'`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(q, err)
		}
	}
	db.Close()

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var xs []layout.Exclusion
	if err := s.Read(func(r *Reader) (err error) { xs, err = r.Exclusions(4); return }); err != nil {
		t.Fatal(err)
	}
	if len(xs) != 1 || xs[0] != (layout.Exclusion{SDSID: 2, Epoch: 7}) {
		t.Fatalf("exclusions after migration: %+v", xs)
	}
	var version int64
	if err := s.Read(func(r *Reader) (err error) { version, err = metaValue(r.q, "schema_version"); return }); err != nil {
		t.Fatal(err)
	}
	if version != SchemaVersion {
		t.Fatalf("schema version %d after migration", version)
	}
}
