// Package chunkstore keeps an SDS's chunk replicas on its devices: extents allocated on files
// or block devices, with their inventory in SQLite (sds_local.db).
package chunkstore

import (
	"database/sql"
	"errors"
	"fmt"
	"hash/crc32"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// DBFile is the inventory's file name in the SDS data directory.
const DBFile = "sds_local.db"

// Errors. Store methods wrap them with context; test with errors.Is.
var (
	ErrNoSpace = errors.New("chunkstore: no space left")
	ErrRange   = errors.New("chunkstore: range outside the chunk")
	ErrClosed  = errors.New("chunkstore: closed")
)

// Key names a chunk replica.
type Key struct {
	VolumeID int64
	Chunk    int64
}

// Config opens a Store.
type Config struct {
	// Dir holds sds_local.db.
	Dir string
	// Devices are file or block device paths. Chunks are spread over them.
	Devices []string
	// DeviceSize is the size of a device file that does not exist yet (created sparse) or is
	// smaller (extended). Block devices keep their own size.
	DeviceSize int64
}

// chunk is where a replica lives.
type chunk struct {
	dev   int // index in Store.devs
	off   int64
	size  int64
	epoch int64
}

// Store holds chunk replicas. Safe for concurrent use; callers order writes to one chunk
// (the data server's per-chunk lock).
type Store struct {
	db   *sql.DB
	devs []*device

	mu     sync.RWMutex // guards chunks
	chunks map[Key]chunk

	allocMu sync.Mutex // serializes allocation and freeing (devs[i].sp, the chunks table)
	next    int        // device to try first for the next allocation (round robin)

	closed  atomic.Bool
	flushes atomic.Uint64
	onFree  func(Key) // locate.go
}

// Open opens (creating if needed) the devices and the inventory, and rebuilds the allocation
// state from the inventory.
func Open(cfg Config) (*Store, error) {
	if len(cfg.Devices) == 0 {
		return nil, errors.New("chunkstore: no devices")
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("chunkstore: %w", err)
	}
	s := &Store{chunks: make(map[Key]chunk)}
	byPath := map[string]int{}
	for _, p := range cfg.Devices {
		abs, err := filepath.Abs(p)
		if err != nil {
			s.closeDevices()
			return nil, fmt.Errorf("chunkstore: device %s: %w", p, err)
		}
		if _, dup := byPath[abs]; dup {
			s.closeDevices()
			return nil, fmt.Errorf("chunkstore: device %s listed twice", abs)
		}
		d, err := openDevice(abs, cfg.DeviceSize)
		if err != nil {
			s.closeDevices()
			return nil, fmt.Errorf("chunkstore: %w", err)
		}
		byPath[abs] = len(s.devs)
		s.devs = append(s.devs, d)
	}
	if err := s.openDB(filepath.Join(cfg.Dir, DBFile), byPath); err != nil {
		s.closeDevices()
		return nil, err
	}
	return s, nil
}

func (s *Store) openDB(path string, byPath map[string]int) error {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	// FULL: an allocation is durable when its transaction commits. A thin chunk's first write
	// is acknowledged only after its extent is on record, so an acknowledged (and flushed)
	// write can always be found again after a crash.
	q.Add("_pragma", "synchronous(FULL)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return fmt.Errorf("chunkstore: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS chunks (
		volume_id INTEGER NOT NULL,
		chunk     INTEGER NOT NULL,
		device    TEXT    NOT NULL,
		offset    INTEGER NOT NULL,
		size      INTEGER NOT NULL,
		epoch     INTEGER NOT NULL,
		PRIMARY KEY (volume_id, chunk)
	)`); err != nil {
		db.Close()
		return fmt.Errorf("chunkstore: %s: schema: %w", path, err)
	}
	rows, err := db.Query(`SELECT volume_id, chunk, device, offset, size, epoch FROM chunks`)
	if err != nil {
		db.Close()
		return fmt.Errorf("chunkstore: %s: %w", path, err)
	}
	used := make([][]extent, len(s.devs))
	for rows.Next() {
		var k Key
		var c chunk
		var dev string
		if err := rows.Scan(&k.VolumeID, &k.Chunk, &dev, &c.off, &c.size, &c.epoch); err != nil {
			rows.Close()
			db.Close()
			return fmt.Errorf("chunkstore: %s: %w", path, err)
		}
		i, ok := byPath[dev]
		if !ok {
			rows.Close()
			db.Close()
			return fmt.Errorf("chunkstore: chunk %d of volume %d is on device %s, which is not configured (devices must not be removed)",
				k.Chunk, k.VolumeID, dev)
		}
		if c.off < 0 || c.size <= 0 || c.off+c.size > s.devs[i].size {
			rows.Close()
			db.Close()
			return fmt.Errorf("chunkstore: chunk %d of volume %d at [%d, +%d) lies outside device %s (%d bytes)",
				k.Chunk, k.VolumeID, c.off, c.size, dev, s.devs[i].size)
		}
		c.dev = i
		s.chunks[k] = c
		used[i] = append(used[i], extent{c.off, c.size})
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		db.Close()
		return fmt.Errorf("chunkstore: %s: %w", path, err)
	}
	rows.Close()
	for i, d := range s.devs {
		d.sp.rebuild(used[i])
	}
	s.db = db
	return nil
}

func (s *Store) closeDevices() {
	for _, d := range s.devs {
		d.f.Close()
	}
}

// Close syncs and closes the devices and the inventory.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	var errs []error
	for _, d := range s.devs {
		errs = append(errs, d.sync(), d.f.Close())
	}
	errs = append(errs, s.db.Close())
	return errors.Join(errs...)
}

func (s *Store) lookup(k Key) (chunk, bool) {
	s.mu.RLock()
	c, ok := s.chunks[k]
	s.mu.RUnlock()
	return c, ok
}

// Has reports whether the replica k is allocated.
func (s *Store) Has(k Key) bool {
	_, ok := s.lookup(k)
	return ok
}

func checkRange(off, n, size int64) error {
	if off < 0 || n < 0 || off+n > size {
		return fmt.Errorf("%w: [%d, +%d) in a chunk of %d bytes", ErrRange, off, n, size)
	}
	return nil
}

// ReadAt reads len(p) bytes at off within chunk k (of chunkSize bytes). An unallocated chunk
// reads as zeros.
func (s *Store) ReadAt(k Key, chunkSize int64, p []byte, off int64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := checkRange(off, int64(len(p)), chunkSize); err != nil {
		return err
	}
	c, ok := s.lookup(k)
	if !ok {
		clear(p)
		return nil
	}
	if err := checkRange(off, int64(len(p)), c.size); err != nil {
		return err
	}
	d := s.devs[c.dev]
	if err := d.readAt(p, c.off+off); err != nil {
		return fmt.Errorf("chunkstore: read %s: %w", d.path, err)
	}
	return nil
}

// WriteAt writes p at off within chunk k, allocating the chunk (chunkSize bytes, zeroed) on
// its first write. With fua the data is durable when WriteAt returns. epoch is the chunk's
// layout epoch, recorded with the replica.
func (s *Store) WriteAt(k Key, chunkSize, epoch int64, p []byte, off int64, fua bool) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := checkRange(off, int64(len(p)), chunkSize); err != nil {
		return err
	}
	c, err := s.ensure(k, chunkSize, epoch, false)
	if err != nil {
		return err
	}
	if err := checkRange(off, int64(len(p)), c.size); err != nil {
		return err
	}
	d := s.devs[c.dev]
	if err := d.writeAt(p, c.off+off); err != nil {
		return ioErr(fmt.Errorf("chunkstore: write %s: %w", d.path, err))
	}
	if fua {
		return d.sync()
	}
	return nil
}

// Zero makes [off, off+n) of chunk k read as zeros (TRIM and WRITE_ZEROES). An unallocated
// chunk already does. A thin chunk (thick false) zeroed whole is freed; a thick one keeps its
// space reserved. With fua the result is durable when Zero returns.
func (s *Store) Zero(k Key, chunkSize, epoch, off, n int64, thick, fua bool) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := checkRange(off, n, chunkSize); err != nil {
		return err
	}
	c, ok := s.lookup(k)
	if !ok || n == 0 {
		return nil
	}
	if err := checkRange(off, n, c.size); err != nil {
		return err
	}
	if !thick && off == 0 && n == c.size {
		return s.free(k, fua)
	}
	d := s.devs[c.dev]
	if err := d.zero(c.off+off, n, thick); err != nil {
		return fmt.Errorf("chunkstore: %w", err)
	}
	if fua {
		return d.sync()
	}
	return nil
}

// Allocate makes sure every chunk in chunks of volume volumeID is allocated, reserving the
// space (thick provisioning). Chunks already held are left as they are.
func (s *Store) Allocate(volumeID int64, chunks []int64, chunkSize, epoch int64) error {
	for _, c := range chunks {
		if _, err := s.ensure(Key{volumeID, c}, chunkSize, epoch, true); err != nil {
			return err
		}
	}
	return nil
}

// ensure returns chunk k, allocating it when missing: an extent on the next device (round
// robin) that has room, zeroed (reserved with reserve), then recorded.
func (s *Store) ensure(k Key, chunkSize, epoch int64, reserve bool) (chunk, error) {
	if c, ok := s.lookup(k); ok {
		return c, nil
	}
	if chunkSize <= 0 {
		return chunk{}, fmt.Errorf("chunkstore: chunk size %d", chunkSize)
	}
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	if s.closed.Load() {
		return chunk{}, ErrClosed
	}
	if c, ok := s.lookup(k); ok {
		return c, nil
	}
	c := chunk{dev: -1, size: chunkSize, epoch: epoch}
	for i := range s.devs {
		j := (s.next + i) % len(s.devs)
		if off, ok := s.devs[j].sp.alloc(chunkSize); ok {
			c.dev, c.off = j, off
			s.next = (j + 1) % len(s.devs)
			break
		}
	}
	if c.dev < 0 {
		return chunk{}, fmt.Errorf("%w: no device has %d free bytes for chunk %d of volume %d", ErrNoSpace, chunkSize, k.Chunk, k.VolumeID)
	}
	d := s.devs[c.dev]
	// The extent may hold a freed chunk's data (or, on a block device, anything): zero it
	// before it is on record, so that an allocated chunk reads zeros where it was not written.
	if err := d.zero(c.off, c.size, reserve); err != nil {
		d.sp.release(c.off, c.size)
		return chunk{}, fmt.Errorf("chunkstore: allocate chunk %d of volume %d: %w", k.Chunk, k.VolumeID, err)
	}
	if _, err := s.db.Exec(`INSERT INTO chunks (volume_id, chunk, device, offset, size, epoch) VALUES (?, ?, ?, ?, ?, ?)`,
		k.VolumeID, k.Chunk, d.path, c.off, c.size, c.epoch); err != nil {
		d.sp.release(c.off, c.size)
		return chunk{}, fmt.Errorf("chunkstore: record chunk %d of volume %d: %w", k.Chunk, k.VolumeID, err)
	}
	s.mu.Lock()
	s.chunks[k] = c
	s.mu.Unlock()
	return c, nil
}

// free drops chunk k: off the record first, then its space back to the filesystem and the
// free list.
func (s *Store) free(k Key, fua bool) error {
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	c, ok := s.lookup(k)
	if !ok {
		return nil
	}
	if _, err := s.db.Exec(`DELETE FROM chunks WHERE volume_id = ? AND chunk = ?`, k.VolumeID, k.Chunk); err != nil {
		return fmt.Errorf("chunkstore: free chunk %d of volume %d: %w", k.Chunk, k.VolumeID, err)
	}
	s.mu.Lock()
	delete(s.chunks, k)
	s.mu.Unlock()
	if s.onFree != nil {
		s.onFree(k) // under allocMu: no other replica can have the extent yet
	}
	d := s.devs[c.dev]
	// Reallocation zeroes the extent anyway; punching here returns the space to the filesystem.
	zerr := d.zero(c.off, c.size, false)
	d.sp.release(c.off, c.size)
	if zerr != nil {
		return fmt.Errorf("chunkstore: %w", zerr)
	}
	if fua {
		return d.sync()
	}
	return nil
}

// Drop frees replica k (a copy a newer layout no longer places here): its record goes first,
// then its space. Dropping a chunk that is not held is not an error.
func (s *Store) Drop(k Key) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.free(k, false)
}

// Volumes lists the volumes this store holds replicas of, ascending.
func (s *Store) Volumes() []int64 {
	s.mu.RLock()
	seen := map[int64]bool{}
	for k := range s.chunks {
		seen[k.VolumeID] = true
	}
	s.mu.RUnlock()
	out := make([]int64, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Flush makes every acknowledged write durable: fdatasync of every device.
func (s *Store) Flush() error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.flushes.Add(1)
	var errs []error
	for _, d := range s.devs {
		errs = append(errs, d.sync())
	}
	return errors.Join(errs...)
}

// ChunkInfo describes one held replica.
type ChunkInfo struct {
	Chunk  int64  `json:"chunk"`
	Epoch  int64  `json:"epoch"`
	Device string `json:"device"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
}

// Chunks lists the replicas held for volumeID, by chunk number.
func (s *Store) Chunks(volumeID int64) []ChunkInfo {
	s.mu.RLock()
	var out []ChunkInfo
	for k, c := range s.chunks {
		if k.VolumeID == volumeID {
			out = append(out, ChunkInfo{Chunk: k.Chunk, Epoch: c.epoch, Device: s.devs[c.dev].path, Offset: c.off, Size: c.size})
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Chunk < out[j].Chunk })
	return out
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is the CRC-32C of the whole of chunk k (chunkSize bytes; an unallocated chunk is
// all zeros), so that two replicas can be compared.
func (s *Store) Checksum(k Key, chunkSize int64) (uint32, error) {
	buf := make([]byte, min(chunkSize, 1<<20))
	var sum uint32
	for off := int64(0); off < chunkSize; off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), chunkSize-off)]
		if err := s.ReadAt(k, chunkSize, p, off); err != nil {
			return 0, err
		}
		sum = crc32.Update(sum, castagnoli, p)
	}
	return sum, nil
}

// DeviceStats is one device's usage.
type DeviceStats struct {
	Path      string `json:"path"`
	Block     bool   `json:"block_device"`
	SizeBytes int64  `json:"size_bytes"`
	FreeBytes int64  `json:"free_bytes"`
	// SlowWrites counts the writes that slept (dirty-page throttling, reclaim), each of which
	// turned the raw write path off for a second (rawwrite.go).
	SlowWrites int64 `json:"slow_writes"`
}

// Stats is the store's usage.
type Stats struct {
	Chunks        int           `json:"chunks"`
	CapacityBytes int64         `json:"capacity_bytes"`
	FreeBytes     int64         `json:"free_bytes"`
	Flushes       uint64        `json:"flushes"`
	Devices       []DeviceStats `json:"devices"`
}

// Stats reports usage.
func (s *Store) Stats() Stats {
	var st Stats
	s.allocMu.Lock()
	for _, d := range s.devs {
		ds := DeviceStats{Path: d.path, Block: d.block, SizeBytes: d.size, FreeBytes: d.sp.available(),
			SlowWrites: d.rawWrite.backoffs.Load()}
		st.CapacityBytes += ds.SizeBytes
		st.FreeBytes += ds.FreeBytes
		st.Devices = append(st.Devices, ds)
	}
	s.allocMu.Unlock()
	s.mu.RLock()
	st.Chunks = len(s.chunks)
	s.mu.RUnlock()
	st.Flushes = s.flushes.Load()
	return st
}
