package chunkstore

import "sort"

// extent is a byte range of one device.
type extent struct {
	off, size int64
}

// space is one device's allocator: a bump pointer plus a free list of the extents below it,
// sorted by offset and coalesced. Chunk sizes differ between volumes (a pool setting), so the
// free list is first-fit with splitting rather than one list per size. Not safe for concurrent
// use: the Store's mutex guards it.
type space struct {
	size int64    // device size in bytes
	bump int64    // everything at or above is free
	free []extent // below bump, sorted by offset, never adjacent
}

// available is the free byte count.
func (s *space) available() int64 {
	n := s.size - s.bump
	for _, e := range s.free {
		n += e.size
	}
	return n
}

// alloc returns the offset of a free extent of n bytes, or false.
func (s *space) alloc(n int64) (int64, bool) {
	for i, e := range s.free {
		if e.size < n {
			continue
		}
		if e.size == n {
			s.free = append(s.free[:i], s.free[i+1:]...)
		} else {
			s.free[i] = extent{e.off + n, e.size - n}
		}
		return e.off, true
	}
	if s.size-s.bump < n {
		return 0, false
	}
	off := s.bump
	s.bump += n
	return off, true
}

// release returns [off, off+n) to the free list, merging it with its neighbours and lowering
// the bump pointer when it ends there.
func (s *space) release(off, n int64) {
	i := sort.Search(len(s.free), func(i int) bool { return s.free[i].off > off })
	s.free = append(s.free, extent{})
	copy(s.free[i+1:], s.free[i:])
	s.free[i] = extent{off, n}
	if i+1 < len(s.free) && s.free[i].off+s.free[i].size == s.free[i+1].off {
		s.free[i].size += s.free[i+1].size
		s.free = append(s.free[:i+1], s.free[i+2:]...)
	}
	if i > 0 && s.free[i-1].off+s.free[i-1].size == s.free[i].off {
		s.free[i-1].size += s.free[i].size
		s.free = append(s.free[:i], s.free[i+1:]...)
		i--
	}
	if last := s.free[len(s.free)-1]; last.off+last.size == s.bump {
		s.bump = last.off
		s.free = s.free[:len(s.free)-1]
	}
}

// rebuild sets the allocator from the extents in use (any order): bump just past the highest,
// the gaps below it free.
func (s *space) rebuild(used []extent) {
	sort.Slice(used, func(i, j int) bool { return used[i].off < used[j].off })
	s.bump, s.free = 0, nil
	for _, e := range used {
		if e.off > s.bump {
			s.free = append(s.free, extent{s.bump, e.off - s.bump})
		}
		s.bump = max(s.bump, e.off+e.size)
	}
}
