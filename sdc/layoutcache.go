package sdc

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"pflex/internal/layout"
)

// LayoutCacheFile is the layout cache's file name in the SDC's data_dir.
const LayoutCacheFile = "sdc_chunks.db"

// LayoutCache keeps the last layout seen of every volume in sdc_chunks.db, so that a restarted
// SDC can serve IO before the MDM answers. It is only a cache: the MDM leader is the authority,
// and a stale entry costs one StaleEpoch round trip. Safe for concurrent use (database/sql).
type LayoutCache struct {
	db *sql.DB
}

// OpenLayoutCache opens (creating if needed) the cache in dir.
func OpenLayoutCache(dir string) (*LayoutCache, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)") // a lost update is fetched again from the MDM
	path := filepath.Join(dir, LayoutCacheFile)
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("layout cache %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS layouts (
		volume_id  INTEGER PRIMARY KEY,
		epoch      INTEGER NOT NULL,
		layout     TEXT    NOT NULL,
		updated_at INTEGER NOT NULL
	)`); err != nil {
		db.Close()
		return nil, fmt.Errorf("layout cache %s: schema: %w", path, err)
	}
	return &LayoutCache{db: db}, nil
}

// LoadAll returns every cached layout by volume id. An entry that does not decode is skipped
// (and will be replaced by the MDM's).
func (c *LayoutCache) LoadAll() (map[int64]layout.Layout, error) {
	rows, err := c.db.Query(`SELECT volume_id, layout FROM layouts`)
	if err != nil {
		return nil, fmt.Errorf("layout cache: load: %w", err)
	}
	defer rows.Close()
	out := map[int64]layout.Layout{}
	for rows.Next() {
		var id int64
		var js string
		if err := rows.Scan(&id, &js); err != nil {
			return nil, fmt.Errorf("layout cache: load: %w", err)
		}
		var l layout.Layout
		if json.Unmarshal([]byte(js), &l) == nil && l.Validate() == nil {
			out[id] = l
		}
	}
	return out, rows.Err()
}

// Put stores l, unless the cache already holds a newer epoch of the volume.
func (c *LayoutCache) Put(l layout.Layout) error {
	js, err := json.Marshal(l)
	if err != nil {
		return err
	}
	_, err = c.db.Exec(`INSERT INTO layouts (volume_id, epoch, layout, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT(volume_id) DO UPDATE SET epoch = excluded.epoch, layout = excluded.layout, updated_at = excluded.updated_at
		WHERE excluded.epoch >= layouts.epoch`, l.VolumeID, l.Epoch, string(js), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("layout cache: put volume %d: %w", l.VolumeID, err)
	}
	return nil
}

// Delete forgets a volume (unmapped from this SDC).
func (c *LayoutCache) Delete(volumeID int64) error {
	if _, err := c.db.Exec(`DELETE FROM layouts WHERE volume_id = ?`, volumeID); err != nil {
		return fmt.Errorf("layout cache: delete volume %d: %w", volumeID, err)
	}
	return nil
}

// Close closes the database.
func (c *LayoutCache) Close() error { return c.db.Close() }
