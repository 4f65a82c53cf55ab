package chunkstore

// Reads and writes first try the page cache without blocking (internal/nowait); whatever is
// left goes through os.File, which also reports the real error if there is one. Writes try a
// raw pwrite before that (rawwrite.go), since ext4 refuses the flag for them.

// readAt reads len(p) bytes at off.
func (d *device) readAt(p []byte, off int64) error {
	n := d.nowaitRead.Do(p, off)
	if n == len(p) {
		return nil
	}
	_, err := d.f.ReadAt(p[n:], off+int64(n))
	return err
}

// writePiece bounds one write system call. The page cache sizes a new folio by the write that
// creates it, so a 1 MiB pwrite leaves 1 MiB folios behind, and every later 4 KiB overwrite of
// such a folio walks all its blocks: on Linux 6.18/ext4 a random 4 KiB overwrite cost 8-10 us on
// a file written in 1 MiB writes against 2.2-2.4 us on one written in 32 KiB writes, and the
// 1 MiB writes themselves cost 2.6-3.2 ms per MiB against 0.25-0.3 ms in 32 KiB pieces
// (docs/BENCHMARKS.md). Thirty-two 32 KiB system calls per MiB cost far less than either. A
// write over pages that are all in the page cache creates no folio, so it goes in one piece
// (cachestat.go).
const writePiece = 32 << 10

// writeAt writes p at off, in pieces of at most writePiece bytes unless its pages are cached.
func (d *device) writeAt(p []byte, off int64) error {
	piece := writePiece
	if len(p) > writePiece && d.resident.all(off, len(p)) {
		piece = len(p)
	}
	for len(p) > 0 {
		k := min(len(p), piece)
		n := d.nowaitWrite.Do(p[:k], off)
		if n < k {
			n += d.rawWrite.do(p[n:k], off+int64(n))
		}
		if n < k {
			if _, err := d.f.WriteAt(p[n:k], off+int64(n)); err != nil {
				return err
			}
		}
		p, off = p[k:], off+int64(k)
	}
	return nil
}
