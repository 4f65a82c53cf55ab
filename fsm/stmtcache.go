package fsm

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// stmtCache prepares each distinct query once per database handle. Parsing SQL was about a third
// of the apply cost before it; every query text in this package is a constant or built from a
// fixed table list, so the cache stays small.
type stmtCache struct {
	prepare func(query string) (*sql.Stmt, error)
	mu      sync.Mutex
	m       map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{prepare: db.Prepare, m: map[string]*sql.Stmt{}}
}

// newConnStmtCache prepares on one connection: its statements need no re-binding.
func newConnStmtCache(conn *sql.Conn) *stmtCache {
	return &stmtCache{
		prepare: func(query string) (*sql.Stmt, error) { return conn.PrepareContext(context.Background(), query) },
		m:       map[string]*sql.Stmt{},
	}
}

func (c *stmtCache) get(query string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st, nil
	}
	st, err := c.prepare(query)
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

// stmtRunner is what apply runs its statements through.
type stmtRunner interface {
	Exec(query string, args ...any) (sql.Result, error)
	Query(query string, args ...any) (*sql.Rows, error)
	QueryRow(query string, args ...any) *sql.Row
}

// cachedConn runs the apply transaction's queries on the writer connection, through statements
// prepared on it. Unlike a *sql.Tx it has no cancellable context, for which database/sql starts
// a watcher goroutine for every query's rows, and its statements need no re-binding: together
// about a tenth of a label write's apply CPU.
type cachedConn struct {
	conn  *sql.Conn
	cache *stmtCache
}

func (c cachedConn) Exec(query string, args ...any) (sql.Result, error) {
	st, err := c.cache.get(query)
	if err != nil {
		return c.conn.ExecContext(context.Background(), query, args...)
	}
	return st.Exec(args...)
}

func (c cachedConn) Query(query string, args ...any) (*sql.Rows, error) {
	st, err := c.cache.get(query)
	if err != nil {
		return c.conn.QueryContext(context.Background(), query, args...)
	}
	return st.Query(args...)
}

func (c cachedConn) QueryRow(query string, args ...any) *sql.Row {
	st, err := c.cache.get(query)
	if err != nil {
		return c.conn.QueryRowContext(context.Background(), query, args...)
	}
	return st.QueryRow(args...)
}
