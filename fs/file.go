package fs

import (
	"context"
	"errors"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/cowfs/cowfs/cow"
)

// handle is an open regular file.
type handle struct {
	h    *cow.Handle
	n    *node
	mode ioMode
	// writer: counted in the mount's writers (an open for writing
	// through the kernel's page cache).
	writer bool
}

var (
	_ = (gofs.FileReader)((*handle)(nil))
	_ = (gofs.FileWriter)((*handle)(nil))
	_ = (gofs.FileFsyncer)((*handle)(nil))
	_ = (gofs.FileFlusher)((*handle)(nil))
	_ = (gofs.FileReleaser)((*handle)(nil))
	_ = (gofs.FileGetattrer)((*handle)(nil))
	_ = (gofs.FileAllocater)((*handle)(nil))
	_ = (gofs.FileLseeker)((*handle)(nil))
)

func (h *handle) errno(ctx context.Context, op string, err error) syscall.Errno {
	return toErrno(ctx, h.n.m.log, op, h.n.path(), err)
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.n.m.reads.Add(1)
	if t := h.n.m.ioTimeout; t > 0 {
		// Set before the read waits for anything: a read queued behind
		// another read of the file shares the one bound.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	vecs, n, release, err := h.h.ReadSlices(ctx, dest, off)
	switch {
	case err != nil:
		return nil, h.errno(ctx, "read", err)
	case vecs == nil:
		return fuse.ReadResultData(dest[:n]), 0
	case release == nil:
		// Views of memory nobody writes: nothing to let go of.
		return fuse.ReadResultVector(vecs), 0
	}
	return &sliceResult{vecs: vecs, release: release}, 0
}

// sliceResult is a READ's reply sent from where its bytes are held
// (cow.Handle.ReadSlices), not copied into the request's buffer: go-fuse
// writes the slices to the kernel with the reply's header in one writev
// (Slices) and calls Done once it has, which lets go of them.
type sliceResult struct {
	vecs    [][]byte
	release func()
}

func (r *sliceResult) Size() int {
	n := 0
	for _, v := range r.vecs {
		n += len(v)
	}
	return n
}

// Bytes is the reply in one slice, for a writer that cannot take them
// apart.
func (r *sliceResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:0]
	for _, v := range r.vecs {
		buf = append(buf, v...)
	}
	return buf, fuse.OK
}

func (r *sliceResult) Slices() ([][]byte, fuse.Status) { return r.vecs, fuse.OK }

func (r *sliceResult) Done() {
	if r.release != nil {
		r.release()
		r.release = nil
	}
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if _, errno := h.dropSetID(ctx, false); errno != 0 {
		return 0, errno
	}
	k, err := h.h.WriteAt(data, off)
	if err != nil {
		return uint32(k), h.errno(ctx, "write", err)
	}
	return uint32(k), 0
}

// maxCopyRange bounds one COPY_FILE_RANGE request, as MaxWrite bounds a
// WRITE: a longer copy_file_range returns short and its caller goes on.
const maxCopyRange = 1 << 20

var _ = (gofs.NodeCopyFileRanger)((*node)(nil))

// CopyFileRange answers copy_file_range between two files of the mount
// in one request, as a read of one and a write to the other; without
// it the kernel reads the source through READ requests and writes it
// back through WRITEs. The kernel has checked the ranges and the open
// modes, and with --writeback-cache has written the source range's
// dirty pages back before it asks.
func (n *node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	in, ok := openHandle(fhIn)
	dst, dok := openHandle(fhOut)
	if !ok || !dok {
		// EOPNOTSUPP, not ENOSYS: the kernel copies this one itself
		// and keeps asking for the next.
		return 0, syscall.EOPNOTSUPP
	}
	if _, errno := dst.dropSetID(ctx, false); errno != 0 {
		return 0, errno
	}
	if t := n.m.ioTimeout; t > 0 {
		// As for a read: the source may be read across the network.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	k, err := in.h.CopyRange(ctx, int64(offIn), dst.h, int64(offOut), int64(min(length, maxCopyRange)))
	if err != nil {
		return uint32(k), dst.errno(ctx, "copy_file_range", err)
	}
	return uint32(k), 0
}

// openHandle is the handle of an open regular file, passed through or not.
func openHandle(fh gofs.FileHandle) (*handle, bool) {
	switch h := fh.(type) {
	case *handle:
		return h, true
	case *ptHandle:
		return h.handle, true
	}
	return nil, false
}

// Flush answers ENOSYS, which makes the kernel stop sending FLUSH on every
// close: cowfs buffers nothing, and locks are the kernel's own, so a flush
// has nothing to do and would cost a round trip per close.
func (h *handle) Flush(ctx context.Context) syscall.Errno { return syscall.ENOSYS }

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.errno(ctx, "fsync", h.h.Fsync(flags&1 != 0, h.n.withPath))
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.h.Release()
	h.n.io.release(h.mode)
	if h.writer {
		h.n.m.writers.remove(h.n)
	}
	return 0
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	st, err := h.h.Stat()
	if errors.Is(err, syscall.ENOTSUP) {
		// A lower file with no descriptor (a snapshot's or a remote
		// version's): its attributes are its node's.
		return h.n.Getattr(ctx, nil, out)
	}
	if err != nil {
		return h.errno(ctx, "fstat", err)
	}
	fillAttr(&out.Attr, &st)
	return 0
}

func (h *handle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	return h.errno(ctx, "fallocate", h.h.Allocate(int64(off), int64(size), mode))
}

func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	if h.n.m.writeback {
		// Data may still be dirty in the kernel, where cowfs cannot
		// see it; ENOSYS makes the kernel answer by itself, with the
		// whole file as data (holes are optional in POSIX).
		return 0, syscall.ENOSYS
	}
	r, err := h.h.Lseek(int64(off), int(whence))
	if err != nil {
		return 0, h.errno(ctx, "lseek", err)
	}
	return uint64(r), 0
}
