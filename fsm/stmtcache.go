package fsm

import (
	"database/sql"
	"errors"
	"sync"
)

// stmtCache prepares each distinct query once per database handle. Parsing SQL was about a third
// of the apply cost before it; every query text in this package is a constant or built from a
// fixed table list, so the cache stays small.
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache { return &stmtCache{db: db, m: map[string]*sql.Stmt{}} }

func (c *stmtCache) get(query string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st, nil
	}
	st, err := c.db.Prepare(query)
	if err != nil {
		return nil, err
	}
	c.m[query] = st
	return st, nil
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, st := range c.m {
		errs = append(errs, st.Close())
	}
	c.m = map[string]*sql.Stmt{}
	return errors.Join(errs...)
}

// cachedTx runs one transaction's queries through prepared statements (database/sql re-binds a
// statement to the transaction's connection and reuses it once prepared there).
type cachedTx struct {
	tx    *sql.Tx
	cache *stmtCache
}

func (c cachedTx) Exec(query string, args ...any) (sql.Result, error) {
	st, err := c.cache.get(query)
	if err != nil {
		return c.tx.Exec(query, args...)
	}
	return c.tx.Stmt(st).Exec(args...)
}

func (c cachedTx) Query(query string, args ...any) (*sql.Rows, error) {
	st, err := c.cache.get(query)
	if err != nil {
		return c.tx.Query(query, args...)
	}
	return c.tx.Stmt(st).Query(args...)
}

func (c cachedTx) QueryRow(query string, args ...any) *sql.Row {
	st, err := c.cache.get(query)
	if err != nil {
		return c.tx.QueryRow(query, args...)
	}
	return c.tx.Stmt(st).QueryRow(args...)
}
