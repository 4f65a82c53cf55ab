package fsm

import (
	"database/sql"
	"fmt"
)

// migrate brings a state database from an older schema version to SchemaVersion in one
// transaction. Every replica runs the same binary over the same rows, so the result is the
// same everywhere.
//
// 1 -> 2: layout_exclusions gains readmitted and one row per time an SDS went out (the primary
// key grows the epoch); the rebuild tables are created by the schema itself.
func migrate(db *sql.DB, from int64) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if from < 2 {
		for _, q := range []string{
			`ALTER TABLE layout_exclusions RENAME TO layout_exclusions_v1`,
			schema, // creates the new layout_exclusions (and nothing else: the rest exists)
			`INSERT INTO layout_exclusions(volume_id, sds_id, epoch, readmitted, created_at)
				SELECT volume_id, sds_id, epoch, 0, created_at FROM layout_exclusions_v1`,
			`DROP TABLE layout_exclusions_v1`,
		} {
			if _, err := tx.Exec(q); err != nil {
				return fmt.Errorf("to schema 2: %w", err)
			}
		}
	}
	if _, err := tx.Exec(`INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)`, SchemaVersion); err != nil {
		return err
	}
	return tx.Commit()
}
