package cow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
	"github.com/cowfs/cowfs/cow/lower"
)

// fileData is the open state of a regular file, shared by all its handles,
// so that every handle sees the file's current layout: a handle opened
// read-only on a lower file reads the new bytes once another handle's write
// copies the chunk up.
type fileData struct {
	refs int
	// upper is the upper file, open read-write; nil while the file is
	// only in the lower.
	upper *os.File
	// lower is the origin, open for reading; nil when no byte comes from it.
	lower lower.File
	// meta is the chunk layout of a copied-up file; nil for a file that
	// is wholly in one layer.
	meta *fileMeta
	id   uint64
	// dirSynced is set once the upper file's directory entry is durable.
	dirSynced bool
}

// Handle is one open of a regular file.
type Handle struct {
	n     *Node
	fs    *FS
	flags int
}

// attachUpper switches an open file to its freshly copied-up upper file.
// Caller holds n.mu.
func (d *fileData) attachUpper(f *FS, rel string, id uint64, fm *fileMeta) error {
	fd, err := fsio.OpenBeneath(f.up.root, rel, unix.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open upper %q: %w", rel, err)
	}
	d.upper = os.NewFile(uintptr(fd), rel)
	// The chunk records of this file are kept under its new id from now
	// on; the open state was made when the file had none.
	d.id = id
	d.meta = fm
	if fm == nil && d.lower != nil {
		d.lower.Close()
		d.lower = nil
	}
	return nil
}

// Open opens the regular file at p. Opening for writing or with O_TRUNC
// copies the file up first (metadata only).
func (f *FS) Open(p Path, flags int) (*Handle, error) {
	n := p.node()
	if n.Type != unix.S_IFREG {
		return nil, syscall.EINVAL
	}
	write := flags&(unix.O_WRONLY|unix.O_RDWR) != 0 || flags&unix.O_TRUNC != 0
	if p.detached {
		// Reopened through /proc/PID/fd after its last name went:
		// only its open state reaches it.
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.data == nil || (write && n.data.upper == nil) {
			return nil, errDetached
		}
		n.data.refs++
		return &Handle{n: n, fs: f, flags: flags}, nil
	}
	if write && !n.upper || n.upper && n.hasLower && f.indexed(n) {
		// The second case, also for reading: this name may be one of
		// a lower file with several that the kernel shares a node
		// among; if another name brought the node up, this one must
		// follow.
		if err := f.copyUp(p); err != nil {
			return nil, err
		}
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.data == nil {
		d, err := f.loadData(p)
		if err != nil {
			return nil, err
		}
		n.data = d
	}
	n.data.refs++
	h := &Handle{n: n, fs: f, flags: flags}
	if flags&unix.O_TRUNC != 0 {
		if err := f.truncateLocked(n, 0); err != nil {
			n.data.refs--
			return nil, err
		}
	}
	return h, nil
}

// loadData opens the layers a file's bytes come from.
func (f *FS) loadData(p Path) (*fileData, error) {
	n := p.node()
	d := &fileData{id: n.id}
	if !n.upper {
		lf, err := f.lo.Open(n.lower)
		if err != nil {
			return nil, err
		}
		d.lower = lf
		return d, nil
	}
	fd, err := fsio.OpenBeneath(f.up.root, p.Rel(), unix.O_RDWR, 0)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		fd, err = fsio.OpenBeneath(f.up.root, p.Rel(), unix.O_RDONLY, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open upper %q: %w", p.Rel(), err)
	}
	d.upper = os.NewFile(uintptr(fd), p.Rel())
	if n.id == 0 {
		return d, nil
	}
	fm, err := f.meta.file(n.id)
	if errors.Is(err, errNotFound) {
		return d, nil
	}
	if err != nil {
		d.upper.Close()
		return nil, err
	}
	// A truncate reaches the upper file before the metadata; after a
	// crash between the two, the file's size is the truth.
	if fi, err := d.upper.Stat(); err == nil && fi.Size() < fm.LowerLimit {
		fm.LowerLimit = fi.Size()
	}
	if fm.Complete() {
		return d, nil
	}
	lf, err := f.lo.Open(fm.Origin)
	if err != nil {
		d.upper.Close()
		return nil, fmt.Errorf("open origin %q of %q: %w", fm.Origin, p.Rel(), err)
	}
	d.lower, d.meta = lf, fm
	return d, nil
}

// Release closes the handle.
func (h *Handle) Release() {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.data
	if d == nil {
		return
	}
	d.refs--
	if d.refs > 0 {
		return
	}
	if d.upper != nil {
		if d.meta != nil {
			// The last handle of a file whose last name went while
			// it was open: its chunk layout goes with it.
			var st unix.Stat_t
			if unix.Fstat(int(d.upper.Fd()), &st) == nil && st.Nlink == 0 {
				h.fs.dropFileID(d.id)
			}
		}
		d.upper.Close()
	}
	if d.lower != nil {
		d.lower.Close()
	}
	n.data = nil
}

// PassthroughFd returns the descriptor the kernel may read and write
// directly, bypassing cowfs, and whether there is one: only for a file that
// lives wholly in the upper and never had an origin. A file with an origin
// is never passed through, so that every write to it goes through the chunk
// bookkeeping, and so that all opens of one inode agree (the kernel allows
// one backing file per inode).
func (h *Handle) PassthroughFd() (int, bool) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.data
	if d == nil || d.upper == nil || n.id != 0 || d.meta != nil {
		return -1, false
	}
	return int(d.upper.Fd()), true
}

// LowerFd returns a descriptor of the lower file while every byte of the
// file comes from it (nothing copied up) and the lower keeps it in one
// local file; the fs package passes such files through to the kernel.
func (h *Handle) LowerFd() (int, bool) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.data
	if d == nil || d.upper != nil || d.meta != nil || d.lower == nil {
		return -1, false
	}
	f, ok := d.lower.(interface{ Fd() uintptr })
	if !ok {
		return -1, false
	}
	return int(f.Fd()), true
}

// ReadAt reads from the file at off.
func (h *Handle) ReadAt(dest []byte, off int64) (int, error) {
	return h.ReadAtContext(context.Background(), dest, off)
}

// ReadAtContext reads from the file at off; a lower that reads across the
// network gives up once ctx is done.
func (h *Handle) ReadAtContext(ctx context.Context, dest []byte, off int64) (int, error) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.data.readAtContext(ctx, dest, off)
}

// ReadSlices is ReadAtContext for a reader that sends the bytes on from
// where they are: while every byte of the file comes from a lower that
// holds its bytes in memory (lower.SliceReader: a remote mount's or a
// restored snapshot's), the bytes at off come as views of that memory,
// vecs, which stay as they are until the caller calls release (if set)
// once; otherwise vecs is nil and the first n bytes of dest are read.
// One hold of the node for either: reads queue in the order they came,
// which a cold disk beneath a local lower reads ahead by.
func (h *Handle) ReadSlices(ctx context.Context, dest []byte, off int64) (vecs [][]byte, n int, release func(), err error) {
	nd := h.n
	nd.mu.Lock()
	defer nd.mu.Unlock()
	d := nd.data
	if d != nil && d.upper == nil && d.meta == nil && d.lower != nil {
		if sr, ok := d.lower.(lower.SliceReader); ok {
			vecs, release, err = sr.ReadSlices(ctx, off, len(dest))
			return vecs, 0, release, err
		}
	}
	n, err = d.readAtContext(ctx, dest, off)
	return nil, n, nil, err
}

// readAt reads the file's current bytes from whichever layers hold them.
func (d *fileData) readAt(dest []byte, off int64) (int, error) {
	return d.readAtContext(context.Background(), dest, off)
}

func (d *fileData) readAtContext(ctx context.Context, dest []byte, off int64) (int, error) {
	switch {
	case d.meta != nil:
		return d.readMixed(ctx, dest, off)
	case d.upper != nil:
		return fsio.ReadFullAt(d.upper, dest, off)
	default:
		return preadLower(ctx, d.lower, dest, off)
	}
}

// preadLower is fsio.ReadFullAt of a lower file, bounded by ctx where the lower
// can be.
func preadLower(ctx context.Context, r io.ReaderAt, dest []byte, off int64) (int, error) {
	cr, ok := r.(lower.ContextReaderAt)
	if !ok {
		return fsio.ReadFullAt(r, dest, off)
	}
	n, err := cr.ReadAtContext(ctx, dest, off)
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// readMixed reads a copied-up file chunk by chunk from whichever layer
// holds each chunk.
func (d *fileData) readMixed(ctx context.Context, dest []byte, off int64) (int, error) {
	fi, err := d.upper.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	if off >= size {
		return 0, nil
	}
	end := min(off+int64(len(dest)), size)
	m := d.meta
	for pos := off; pos < end; {
		c := pos / ChunkSize
		segEnd := min((c+1)*ChunkSize, end)
		buf := dest[pos-off : segEnd-off]
		if pos < m.LowerLimit && !m.Chunks.Has(c) {
			lend := min(segEnd, m.LowerLimit)
			k, err := preadLower(ctx, d.lower, buf[:lend-pos], pos)
			if err != nil {
				return int(pos - off), fmt.Errorf("read origin %q: %w", m.Origin, err)
			}
			clear(buf[k : lend-pos])
			buf = buf[lend-pos:]
			pos = lend
		}
		if len(buf) > 0 {
			k, err := fsio.ReadFullAt(d.upper, buf, pos)
			if err != nil {
				return int(pos - off), err
			}
			clear(buf[k:])
		}
		pos = segEnd
	}
	return int(end - off), nil
}

// WriteAt writes data at off.
func (h *Handle) WriteAt(data []byte, off int64) (int, error) {
	h.fs.gate.RLock()
	defer h.fs.gate.RUnlock()
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.data
	if d.upper == nil {
		return 0, syscall.EBADF
	}
	if err := h.fs.space.need(int64(len(data))); err != nil {
		return 0, err
	}
	if h.fs.keepMtime {
		var st unix.Stat_t
		if err := unix.Fstat(int(d.upper.Fd()), &st); err != nil {
			return 0, err
		}
		defer unix.UtimesNanoAt(int(d.upper.Fd()), "", []unix.Timespec{{Nsec: unix.UTIME_OMIT}, st.Mtim}, unix.AT_EMPTY_PATH)
	}
	if d.meta != nil {
		return h.writeLower(d, data, off)
	}
	return d.upper.WriteAt(data, off)
}

// CopyRange copies up to length bytes at offIn of h's file to offOut of
// out's file, which may be the same file, as a read of h and a write to
// out: the write brings up and marks chunks as any write does, and is
// held by a snapshot as any write is. It copies fewer bytes at the end
// of h's file, and none past it.
func (h *Handle) CopyRange(ctx context.Context, offIn int64, out *Handle, offOut, length int64) (int, error) {
	if length <= 0 {
		return 0, nil
	}
	buf := make([]byte, length)
	k, err := h.ReadAtContext(ctx, buf, offIn)
	if err != nil {
		return 0, err
	}
	if k == 0 {
		return 0, nil
	}
	return out.WriteAt(buf[:k], offOut)
}

// copyAround copies from the origin the parts outside [off, end) of every
// chunk the range touches that is not in the upper yet, and returns those
// chunks. It marks none of them: until the range itself is written, the
// upper holds no bytes for it.
func (d *fileData) copyAround(off, end int64) ([]int64, error) {
	m := d.meta
	if off >= m.LowerLimit || end <= off {
		return nil, nil
	}
	var chunks []int64
	first, last := chunkRange(off, end-off)
	for c := first; c <= last; c++ {
		cs := c * ChunkSize
		if cs >= m.LowerLimit {
			break
		}
		if m.Chunks.Has(c) {
			continue
		}
		ce := min(cs+ChunkSize, m.LowerLimit)
		if cs < off {
			if err := d.copyFromOrigin(cs, min(off, ce)); err != nil {
				return nil, err
			}
		}
		if end < ce {
			if err := d.copyFromOrigin(max(end, cs), ce); err != nil {
				return nil, err
			}
		}
		chunks = append(chunks, c)
	}
	return chunks, nil
}

// copyUpAll copies every chunk still in the lower up whole.
func (f *FS) copyUpAll(d *fileData) error {
	m := d.meta
	var chunks []int64
	for c := int64(0); c*ChunkSize < m.LowerLimit; c++ {
		if m.Chunks.Has(c) {
			continue
		}
		if err := d.copyFromOrigin(c*ChunkSize, min((c+1)*ChunkSize, m.LowerLimit)); err != nil {
			return err
		}
		chunks = append(chunks, c)
	}
	return f.markPresent(d, chunks)
}

// markPresent records chunks as being in the upper.
func (f *FS) markPresent(d *fileData, chunks []int64) error {
	if len(chunks) == 0 {
		return nil
	}
	next := *d.meta
	next.Chunks = slices.Clone(next.Chunks)
	for _, c := range chunks {
		next.Chunks.Set(c)
	}
	// The copied bytes are in the upper file before the chunk is marked
	// present, so a crash can lose the mark but never expose a hole.
	if err := f.storeMeta(d, &next); err != nil {
		return fmt.Errorf("record chunks of %q: %w", next.Origin, err)
	}
	f.chunksUp.Add(uint64(len(chunks)))
	return nil
}

// storeMeta records next as the layout of file d, and only then makes it
// the one reads follow: if the record cannot be written (the metadata
// store is out of room), the file reads as the store has it, which is
// what a remount would show.
func (f *FS) storeMeta(d *fileData, next *fileMeta) error {
	if err := f.meta.putFile(d.id, next); err != nil {
		return err
	}
	*d.meta = *next
	if next.Complete() {
		d.lower.Close()
		d.lower, d.meta = nil, nil
	}
	return nil
}

// writeLower writes data at off into a file that still has chunks in the
// lower. A chunk the write brings up is marked present only once the
// upper holds all of it: if the write fails or falls short (ENOSPC, EIO),
// the part it did not write is copied from the origin instead, and if
// even that fails the chunk stays in the lower, so a failed write never
// leaves a hole where the file had bytes.
func (h *Handle) writeLower(d *fileData, data []byte, off int64) (int, error) {
	end := off + int64(len(data))
	chunks, err := d.copyAround(off, end)
	if err != nil {
		return 0, err
	}
	k, werr := d.upper.WriteAt(data, off)
	if werr == nil && k == len(data) {
		return k, h.fs.markPresent(d, chunks)
	}
	if werr == nil {
		werr = io.ErrShortWrite
	}
	done := chunks[:0]
	for _, c := range chunks {
		lo := max(c*ChunkSize, off+int64(k))
		hi := min((c+1)*ChunkSize, end, d.meta.LowerLimit)
		if lo < hi && d.copyFromOrigin(lo, hi) != nil {
			continue
		}
		done = append(done, c)
	}
	if err := h.fs.markPresent(d, done); err != nil {
		return k, err
	}
	return k, werr
}

// copyFromOrigin copies [from, to) of the origin into the upper file,
// skipping all-zero blocks so that holes in the lower stay holes.
func (d *fileData) copyFromOrigin(from, to int64) error {
	const block = 4096
	buf := make([]byte, to-from)
	k, err := fsio.ReadFullAt(d.lower, buf, from)
	if err != nil {
		return fmt.Errorf("copy-up read %q: %w", d.meta.Origin, err)
	}
	buf = buf[:k]
	for i := 0; i < len(buf); {
		j := min(i+block-int((from+int64(i))%block), len(buf))
		if !fsio.AllZero(buf[i:j]) {
			// Coalesce consecutive non-zero blocks into one write.
			k := j
			for k < len(buf) {
				nk := min(k+block, len(buf))
				if fsio.AllZero(buf[k:nk]) {
					break
				}
				k = nk
			}
			if _, err := d.upper.WriteAt(buf[i:k], from+int64(i)); err != nil {
				return fmt.Errorf("copy-up write: %w", err)
			}
			j = k
		}
		i = j
	}
	return nil
}

// truncate sets the size of the file at p.
func (f *FS) truncate(p Path, size int64) error {
	n := p.node()
	f.mu.RLock()
	defer f.mu.RUnlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.data != nil {
		return f.truncateLocked(n, size)
	}
	d, err := f.loadData(p)
	if err != nil {
		return err
	}
	n.data = d
	d.refs++
	defer func() {
		d.refs--
		if d.refs == 0 {
			d.upper.Close()
			if d.lower != nil {
				d.lower.Close()
			}
			n.data = nil
		}
	}()
	return f.truncateLocked(n, size)
}

// truncateLocked truncates an open file. A cut below the lower limit
// through a chunk still in the lower copies that chunk's kept part first;
// nothing else is copied, so O_TRUNC copies nothing at all.
func (f *FS) truncateLocked(n *Node, size int64) error {
	if size < 0 {
		return syscall.EINVAL
	}
	d := n.data
	if d.upper == nil {
		return syscall.EBADF
	}
	if m := d.meta; m != nil && size < m.LowerLimit {
		// The chunk the new end falls in keeps only its bytes below
		// size, copied up first; it counts as copied up once the
		// truncate is done, so a failed truncate leaves it in the
		// lower, whole.
		c, partial := size/ChunkSize, false
		if size%ChunkSize != 0 && !m.Chunks.Has(c) {
			if err := d.copyFromOrigin(c*ChunkSize, size); err != nil {
				return err
			}
			partial = true
		}
		if err := d.upper.Truncate(size); err != nil {
			return err
		}
		next := *m
		if partial {
			next.Chunks = slices.Clone(next.Chunks)
			next.Chunks.Set(c)
		}
		next.LowerLimit = size
		return f.storeMeta(d, &next)
	}
	return d.upper.Truncate(size)
}

// Allocate implements fallocate(2) on the open file.
func (h *Handle) Allocate(off, length int64, mode uint32) error {
	h.fs.gate.RLock()
	defer h.fs.gate.RUnlock()
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.data
	if d.upper == nil {
		return syscall.EBADF
	}
	if mode&unix.FALLOC_FL_PUNCH_HOLE == 0 {
		if err := h.fs.space.need(length); err != nil {
			return err
		}
	}
	if m := d.meta; m != nil {
		switch {
		case mode&^uint32(unix.FALLOC_FL_KEEP_SIZE) == 0:
			// Allocation changes no byte.
		case mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0:
			// As for a write (writeLower): the chunks count as
			// copied up only once the call has changed the range
			// in the upper. If the upper refuses it (tmpfs has no
			// ZERO_RANGE), they stay in the lower.
			chunks, err := d.copyAround(off, off+length)
			if err != nil {
				return err
			}
			if err := unix.Fallocate(int(d.upper.Fd()), mode, off, length); err != nil {
				return err
			}
			return h.fs.markPresent(d, chunks)
		default:
			// Collapse and insert move bytes across chunks:
			// bring every chunk up first.
			if err := h.fs.copyUpAll(d); err != nil {
				return err
			}
			if d.meta != nil {
				return fmt.Errorf("fallocate mode %#x: chunks left in lower: %w", mode, syscall.EIO)
			}
		}
	}
	return unix.Fallocate(int(d.upper.Fd()), mode, off, length)
}

// Lseek implements SEEK_DATA and SEEK_HOLE over the merged bytes.
func (h *Handle) Lseek(off int64, whence int) (int64, error) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.data
	if d.meta == nil {
		var f any = d.upper
		if d.upper == nil {
			f = d.lower
		}
		fdr, ok := f.(interface{ Fd() uintptr })
		if !ok {
			return seekWhole(f, off, whence)
		}
		return unix.Seek(int(fdr.Fd()), off, whence)
	}
	fi, err := d.upper.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	if off < 0 || off >= size {
		return 0, syscall.ENXIO
	}
	lowerFd, ok := d.lower.(interface{ Fd() uintptr })
	m := d.meta
	for pos := off; pos < size; {
		c := pos / ChunkSize
		segEnd := min((c+1)*ChunkSize, size)
		fd := int(d.upper.Fd())
		if pos < m.LowerLimit && !m.Chunks.Has(c) {
			segEnd = min(segEnd, m.LowerLimit)
			if !ok {
				// Without a descriptor the lower is all data.
				if whence == unix.SEEK_DATA {
					return pos, nil
				}
				pos = segEnd
				continue
			}
			fd = int(lowerFd.Fd())
		}
		r, err := unix.Seek(fd, pos, whence)
		if err != nil && !errors.Is(err, syscall.ENXIO) {
			return 0, err
		}
		if err == nil && r < segEnd {
			return r, nil
		}
		pos = segEnd
	}
	if whence == unix.SEEK_HOLE {
		return size, nil
	}
	return 0, syscall.ENXIO
}

// Fsync makes the file's bytes, its upper directory entry and its chunk
// records durable. withPath runs its argument with the path of the file
// now; it is called only when the entry itself has to be synced (once
// after a copy-up or a create), so the caller can hold its namespace
// steady for that step alone and not across the flush of the bytes.
func (h *Handle) Fsync(dataOnly bool, withPath func(func(Path) error) error) error {
	n := h.n
	n.mu.Lock()
	d := n.data
	var up *os.File
	if d != nil {
		up = d.upper
	}
	synced := d == nil || d.dirSynced
	n.mu.Unlock()
	if up == nil {
		return nil
	}
	var err error
	if dataOnly {
		err = unix.Fdatasync(int(up.Fd()))
	} else {
		err = up.Sync()
	}
	if err != nil {
		return err
	}
	if !synced {
		// The entry may have been created by a copy-up; make it
		// durable so the synced bytes can be found after a crash.
		if err := withPath(h.syncEntry); err != nil {
			return err
		}
		n.mu.Lock()
		if n.data != nil {
			n.data.dirSynced = true
		}
		n.mu.Unlock()
	}
	return h.fs.meta.sync()
}

// syncEntry fsyncs the upper directory that holds the file at p.
func (h *Handle) syncEntry(p Path) error {
	if len(p.Names) == 0 || p.detached {
		return nil
	}
	// O_RDONLY: fsync on an O_PATH descriptor is EBADF.
	fd, err := fsio.OpenBeneath(h.fs.up.root, p.parent().Rel(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	return unix.Fsync(fd)
}

// Stat returns the attributes of the open file.
func (h *Handle) Stat() (unix.Stat_t, error) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	var st unix.Stat_t
	var err error
	if d := n.data; d != nil && d.upper != nil {
		err = unix.Fstat(int(d.upper.Fd()), &st)
	} else if fdr, ok := n.data.lower.(interface{ Fd() uintptr }); ok {
		err = unix.Fstat(int(fdr.Fd()), &st)
	} else {
		return st, syscall.ENOTSUP
	}
	st.Ino = n.Ino
	if err == nil {
		h.fs.linkCount(n, &st)
	}
	return st, err
}

// seekWhole answers SEEK_DATA and SEEK_HOLE for a lower file with no
// descriptor (an object lower) as for a file that is data throughout,
// which is what POSIX allows any filesystem to report.
func seekWhole(f any, off int64, whence int) (int64, error) {
	sz, ok := f.(interface{ Size() int64 })
	if !ok {
		return 0, syscall.ENOTSUP
	}
	size := sz.Size()
	switch {
	case off < 0:
		return 0, syscall.EINVAL
	case off >= size:
		return 0, syscall.ENXIO
	case whence == unix.SEEK_DATA:
		return off, nil
	case whence == unix.SEEK_HOLE:
		return size, nil
	}
	return 0, syscall.EINVAL
}
