package lower

import (
	"context"
	"io"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
)

// Layer is a read-only layer. Paths are relative ("" is the root, "a/b" a
// descendant) and are only ever built from names the layer itself returned,
// so a layer need not accept "..". A lower never changes while a mount uses
// it; that is what lets the kernel cache its entries without limit.
type Layer interface {
	// Lstat describes the entry at path without following a final symlink.
	// St.Ino must be stable for the life of the layer and unique within it.
	Lstat(path string) (unix.Stat_t, error)
	// ReadDir lists a directory, without "." and "..".
	ReadDir(path string) ([]DirEntry, error)
	Readlink(path string) (string, error)
	// Open opens a regular file for reading.
	Open(path string) (File, error)
	Listxattr(path string) ([]string, error)
	Getxattr(path, name string) ([]byte, error)
}

// File is an open lower file.
type File interface {
	io.ReaderAt
	io.Closer
}

// ContextReaderAt is a File whose reads wait on something that can
// take long (a master across the network): ReadAtContext gives up, with an
// error, once ctx is done.
type ContextReaderAt interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// A SliceReader is a File that can hand over its bytes where they are in
// memory instead of copying them (objectFile: a chunk it holds). A reader
// that sends them on (a FUSE reply) saves a copy of each byte it reads.
type SliceReader interface {
	// ReadSlices returns the n bytes at off, fewer at the end of the
	// file, as slices that stay as they are until the caller calls
	// release (if not nil), which it must do once, and write nothing
	// to.
	ReadSlices(ctx context.Context, off int64, n int) (vecs [][]byte, release func(), err error)
}

// DirEntry is one entry of a directory listing.
type DirEntry = fsio.DirEntry

var (
	_ Layer           = (*Dir)(nil)
	_ Layer           = (*Objects)(nil)
	_ ContextReaderAt = (*objectFile)(nil)
	_ SliceReader     = (*objectFile)(nil)
)
