package nbd

import (
	"context"
	"sort"
	"sync"
)

// Export is one block device the server offers. The server calls its methods
// concurrently, from many connections at once (it advertises CAN_MULTI_CONN),
// so an implementation must be safe for concurrent use and must give Flush
// export-wide meaning: when Flush returns nil, every write that completed
// before Flush was called, through any connection, is durable. A write with
// fua set must be durable when WriteAt returns nil.
//
// Offsets and lengths are validated by the server against Size before a call.
// Errors should wrap one of ErrIO, ErrNoSpace, ErrPerm, ErrInvalid, ... so the
// client sees the matching NBD error; any other error becomes EIO.
type Export interface {
	Size() int64
	ReadOnly() bool
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	Flush(ctx context.Context) error
	Trim(ctx context.Context, off, length int64) error
	WriteZeroes(ctx context.Context, off, length int64, fua, mayTrim bool) error
}

// WriteBuffers is implemented by an Export that wants WRITE payloads read into
// memory of its own (the SDC keeps them in memory shared with the storage
// servers on its host). WriteBuffer returns an n-byte buffer, or nil when it
// has none to give (the server then uses its own); ReleaseWriteBuffer takes
// back a buffer after the request's reply and reports whether it was one of
// the export's.
type WriteBuffers interface {
	WriteBuffer(n int) []byte
	ReleaseWriteBuffer(b []byte) bool
}

// ReadBuffers is implemented by an Export that can read into memory of its own
// (the SDC: a slot of the memory it shares with the storage servers on its
// host, which they read into directly). ReadBuffered returns the n bytes at off
// in such a buffer, or nil and no error when it cannot serve this read so (the
// server then calls ReadAt with a buffer of its own). The server hands the
// buffer back with ReleaseReadBuffer once the reply is sent.
type ReadBuffers interface {
	ReadBuffered(ctx context.Context, n int, off int64) ([]byte, error)
	ReleaseReadBuffer(b []byte)
}

// Exports resolves export names. The set may change while the server runs;
// after removing a name, call Server.ExportRemoved to disconnect its clients.
type Exports interface {
	Lookup(name string) (Export, bool)
	List() []ExportInfo // for NBD_OPT_LIST
}

// ExportInfo names an export for NBD_OPT_LIST and NBD_INFO_DESCRIPTION.
type ExportInfo struct{ Name, Description string }

// ExportMap is a concurrency-safe, mutable Exports.
type ExportMap struct {
	mu      sync.RWMutex
	entries map[string]exportEntry
}

type exportEntry struct {
	export      Export
	description string
}

// NewExportMap returns an empty ExportMap.
func NewExportMap() *ExportMap {
	return &ExportMap{entries: make(map[string]exportEntry)}
}

// Add adds or replaces the export called name.
func (m *ExportMap) Add(name, description string, e Export) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[name] = exportEntry{export: e, description: description}
}

// Remove deletes the export called name and reports whether it existed.
func (m *ExportMap) Remove(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.entries[name]
	delete(m.entries, name)
	return ok
}

// Lookup implements Exports.
func (m *ExportMap) Lookup(name string) (Export, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e, ok := m.entries[name]
	return e.export, ok
}

// List implements Exports; the result is sorted by name.
func (m *ExportMap) List() []ExportInfo {
	m.mu.RLock()
	out := make([]ExportInfo, 0, len(m.entries))
	for name, e := range m.entries {
		out = append(out, ExportInfo{Name: name, Description: e.description})
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// description returns the description of name, if the Exports can tell.
func description(exports Exports, name string) string {
	if m, ok := exports.(*ExportMap); ok {
		m.mu.RLock()
		defer m.mu.RUnlock()
		return m.entries[name].description
	}
	for _, info := range exports.List() {
		if info.Name == name {
			return info.Description
		}
	}
	return ""
}

// readOnlyExport hides the write side of an Export.
type readOnlyExport struct{ Export }

// readOnlyBufferedExport is a readOnlyExport that keeps e's ReadBuffers.
type readOnlyBufferedExport struct {
	readOnlyExport
	ReadBuffers
}

// NewReadOnlyExport wraps e so that it is offered read-only (READ_ONLY flag;
// WRITE, TRIM and WRITE_ZEROES fail with EPERM). Reads still use e's own
// buffers when it has them (ReadBuffers).
func NewReadOnlyExport(e Export) Export {
	if rb, ok := e.(ReadBuffers); ok {
		return readOnlyBufferedExport{readOnlyExport{e}, rb}
	}
	return readOnlyExport{e}
}

func (readOnlyExport) ReadOnly() bool { return true }

func (readOnlyExport) WriteAt(context.Context, []byte, int64, bool) error { return ErrPerm }

func (readOnlyExport) Trim(context.Context, int64, int64) error { return ErrPerm }

func (readOnlyExport) WriteZeroes(context.Context, int64, int64, bool, bool) error {
	return ErrPerm
}
