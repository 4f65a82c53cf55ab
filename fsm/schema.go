package fsm

// SchemaVersion is stored in meta. A binary refuses a database whose version is newer than its own.
const SchemaVersion = 2

// schema creates the materialized state. Every id is AUTOINCREMENT so that ids are never reused
// and are assigned identically on every replica. The hot tables keyed by something other than
// an integer (labels, requests) are WITHOUT ROWID: one B-tree per write instead of two.
const schema = `
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS protection_domains (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	name       TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fault_sets (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	name       TEXT NOT NULL UNIQUE,
	pd_id      INTEGER NOT NULL REFERENCES protection_domains(id),
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pools (
	id                INTEGER PRIMARY KEY AUTOINCREMENT,
	name              TEXT NOT NULL UNIQUE,
	pd_id             INTEGER NOT NULL REFERENCES protection_domains(id),
	protection_policy TEXT NOT NULL,
	total_capacity_gb INTEGER NOT NULL,
	chunk_size_mb     INTEGER NOT NULL,
	created_at        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sds (
	id                INTEGER PRIMARY KEY AUTOINCREMENT,
	name              TEXT NOT NULL UNIQUE,
	pd_id             INTEGER NOT NULL REFERENCES protection_domains(id),
	fault_set_id      INTEGER REFERENCES fault_sets(id),
	address           TEXT NOT NULL,
	devices           TEXT NOT NULL,
	total_capacity_gb INTEGER NOT NULL,
	state             TEXT NOT NULL,
	state_changed_at  INTEGER NOT NULL,
	created_at        INTEGER NOT NULL,
	node_id           TEXT -- the registered node serving it; NULL when added by hand
);
CREATE TABLE IF NOT EXISTS sdc (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	name       TEXT NOT NULL UNIQUE,
	address    TEXT NOT NULL,
	state      TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	node_id    TEXT
);
-- Components that registered themselves (POST /discovery/register): identity, capabilities,
-- addresses and the liveness the leader last committed. Heartbeat times are not replicated.
CREATE TABLE IF NOT EXISTS nodes (
	id               TEXT PRIMARY KEY,
	capabilities     TEXT NOT NULL,
	version          TEXT NOT NULL,
	api_addr         TEXT NOT NULL,
	mgmt_addr        TEXT NOT NULL,
	data_addr        TEXT NOT NULL,
	nbd_addr         TEXT NOT NULL,
	gossip_addr      TEXT NOT NULL,
	state            TEXT NOT NULL,
	registered_at    INTEGER NOT NULL,
	state_changed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS volumes (
	id             INTEGER PRIMARY KEY AUTOINCREMENT,
	name           TEXT NOT NULL UNIQUE,
	pool_id        INTEGER NOT NULL REFERENCES pools(id),
	size_gb        INTEGER NOT NULL,
	provisioning   TEXT NOT NULL,
	map_generation INTEGER NOT NULL DEFAULT 0,
	created_at     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mappings (
	volume_id            INTEGER NOT NULL REFERENCES volumes(id),
	sdc_id               INTEGER NOT NULL REFERENCES sdc(id),
	access_mode          TEXT NOT NULL,
	iops_limit           INTEGER NOT NULL,
	bandwidth_limit_mbps INTEGER NOT NULL,
	generation           INTEGER NOT NULL,
	created_at           INTEGER NOT NULL,
	PRIMARY KEY (volume_id, sdc_id)
);
CREATE TABLE IF NOT EXISTS labels (
	volume_id  INTEGER NOT NULL REFERENCES volumes(id),
	key        TEXT NOT NULL,
	value      TEXT NOT NULL,
	version    INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (volume_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mdm_nodes (
	id        TEXT PRIMARY KEY,
	raft_addr TEXT NOT NULL,
	api_addr  TEXT NOT NULL
);
-- IO tokens: signing keys the leader generated (the highest id signs), the layout pinned per
-- volume, and the ACK ledger of what each token carried through each SDS.
CREATE TABLE IF NOT EXISTS token_keys (
	id         INTEGER PRIMARY KEY,
	key        BLOB NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS volume_layouts (
	volume_id  INTEGER PRIMARY KEY REFERENCES volumes(id),
	epoch      INTEGER NOT NULL,
	members    TEXT NOT NULL,
	created_at INTEGER NOT NULL
);
-- SDSs taken out of a volume's replica sets (down, failed or in maintenance), with the layout
-- epoch that took them out and the epoch they were marked up again at (0: still out). One row per time out:
-- the layout stays compact (its size follows failures, not the volume's size).
CREATE TABLE IF NOT EXISTS layout_exclusions (
	volume_id  INTEGER NOT NULL REFERENCES volumes(id),
	sds_id     INTEGER NOT NULL,
	epoch      INTEGER NOT NULL,
	readmitted INTEGER NOT NULL DEFAULT 0,
	maintenance INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (volume_id, sds_id, epoch)
) WITHOUT ROWID;
-- Rebuilds of a volume's degraded chunks (layout.Rebuild): begun at epoch, chunks below done
-- re-protected, [done, ordered) being copied; returning_sds: the SDS back from maintenance it
-- gives its chunks back to; from_sds/to_sds: a move (rebalance).
CREATE TABLE IF NOT EXISTS layout_rebuilds (
	volume_id  INTEGER NOT NULL REFERENCES volumes(id),
	epoch      INTEGER NOT NULL,
	done       INTEGER NOT NULL,
	ordered    INTEGER NOT NULL,
	returning_sds INTEGER NOT NULL DEFAULT 0,
	from_sds      INTEGER NOT NULL DEFAULT 0,
	to_sds        INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (volume_id, epoch)
) WITHOUT ROWID;
-- Pools whose rebuilds an operator cancelled (POST /rebuild/cancel) until /rebuild/start.
CREATE TABLE IF NOT EXISTS rebuild_paused (
	pool_id    INTEGER PRIMARY KEY,
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS token_ledger (
	token_id    TEXT NOT NULL,
	sds_id      INTEGER NOT NULL,
	volume_id   INTEGER NOT NULL,
	sdc_id      INTEGER NOT NULL,
	read_ops    INTEGER NOT NULL,
	write_ops   INTEGER NOT NULL,
	read_bytes  INTEGER NOT NULL,
	write_bytes INTEGER NOT NULL,
	first_at    INTEGER NOT NULL,
	last_at     INTEGER NOT NULL,
	PRIMARY KEY (token_id, sds_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (
	rid      TEXT PRIMARY KEY,
	ts       INTEGER NOT NULL,
	result   TEXT,
	err_kind TEXT,
	err_msg  TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);
CREATE INDEX IF NOT EXISTS volumes_pool ON volumes(pool_id);
CREATE INDEX IF NOT EXISTS mappings_sdc ON mappings(sdc_id);
`

// stateTables are the tables a digest covers, in a fixed order, with the ordering that makes the
// dump canonical. meta is left out: it holds the applied index, which the digest is reported with.
var stateTables = []struct{ name, order string }{
	{"protection_domains", "id"},
	{"fault_sets", "id"},
	{"pools", "id"},
	{"sds", "id"},
	{"sdc", "id"},
	{"volumes", "id"},
	{"mappings", "volume_id, sdc_id"},
	{"labels", "volume_id, key"},
	{"mdm_nodes", "id"},
	{"nodes", "id"},
	{"token_keys", "id"},
	{"volume_layouts", "volume_id"},
	{"layout_exclusions", "volume_id, sds_id, epoch"},
	{"layout_rebuilds", "volume_id, epoch"},
	{"rebuild_paused", "pool_id"},
	{"token_ledger", "token_id, sds_id"},
	{"requests", "rid"},
	{"sqlite_sequence", "name"},
}
