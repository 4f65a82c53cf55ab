package fsm

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// RestoreState replaces the whole state with a backup taken by GET /cluster/snapshot. It goes
// through the log like any write, so every replica swaps at the same index and a leader change
// midway cannot leave replicas disagreeing about whether the restore happened.
type RestoreState struct {
	DB []byte `json:"db"` // a pflex state database file
}

const TypeRestoreState CommandType = 20

func (*RestoreState) Type() CommandType { return TypeRestoreState }

func init() { register("restore_state", applyRestoreState) }

// applyRestoreState copies every state table of the backup over the live ones inside the apply
// transaction. The backup is read through its own read-only connection (ATTACH is not allowed
// inside a transaction). Given the same bytes, every replica does exactly the same.
func applyRestoreState(t *applyTx, _ Header, c *RestoreState) (any, error) {
	dir, err := os.MkdirTemp("", "pflex-restore-")
	if err != nil {
		return nil, fmt.Errorf("fsm: restore: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "backup.db")
	if err := os.WriteFile(path, c.DB, 0o600); err != nil {
		return nil, fmt.Errorf("fsm: restore: %w", err)
	}
	if err := CheckDatabase(path); err != nil {
		return nil, invalid("restore: %v", err)
	}
	src, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return nil, fmt.Errorf("fsm: restore: %w", err)
	}
	defer src.Close()
	version, err := metaValue(src, "schema_version")
	if err != nil {
		return nil, fmt.Errorf("fsm: restore: %w", err)
	}
	if version != SchemaVersion {
		return nil, invalid("restore: backup has schema version %d, this cluster runs %d", version, SchemaVersion)
	}
	for _, tbl := range stateTables {
		if _, err := t.exec(`DELETE FROM ` + tbl.name); err != nil {
			return nil, err
		}
		if err := copyTable(src, t, tbl.name); err != nil {
			return nil, err
		}
	}
	counts, err := t.reader().Counts()
	if err != nil {
		return nil, err
	}
	return counts, nil
}

func copyTable(src *sql.DB, t *applyTx, table string) error {
	rows, err := src.Query(`SELECT * FROM ` + table)
	if err != nil && strings.Contains(err.Error(), "no such table") {
		return nil // a backup from before the table existed: it had no rows of it
	}
	if err != nil {
		return fmt.Errorf("fsm: restore: read %s: %w", table, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return fmt.Errorf("fsm: restore: %s: %w", table, err)
	}
	insert := `INSERT INTO ` + table + `(` + strings.Join(cols, ", ") + `) VALUES (?` + strings.Repeat(", ?", len(cols)-1) + `)`
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("fsm: restore: scan %s: %w", table, err)
		}
		if _, err := t.exec(insert, vals...); err != nil {
			return err
		}
	}
	return rows.Err()
}
