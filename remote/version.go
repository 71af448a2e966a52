package remote

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
)

// versionRoot is the one entry of a version object. A tree holds its
// entries' attributes, not its own, so the exported directory's mode, owner,
// times and xattrs travel as the entry of a tree around it; the digest of
// that tree then covers them too.
const versionRoot = "root"

// putVersion stores the version object for the directory entry root.
func putVersion(ctx context.Context, store object.Putter, root object.Entry) (object.Digest, error) {
	root.Name = versionRoot
	enc, err := object.EncodeTree(&object.Tree{Entries: []object.Entry{root}})
	if err != nil {
		return object.Zero, err
	}
	return store.Put(ctx, enc)
}

// OpenVersion fetches and checks version v and returns it as a lower layer
// with the root directory's entry.
func OpenVersion(ctx context.Context, g object.Getter, v object.Digest) (*lower.Objects, object.Entry, error) {
	// The trees beneath may come with the version object, in the same
	// round trip, for the root's fetch below and the lookups that follow.
	get := g.Get
	if r, ok := g.(readGetter); ok {
		get = r.GetForRead
	}
	b, err := get(ctx, v)
	if err != nil {
		return nil, object.Entry{}, fmt.Errorf("version %s: %w", v.Short(), err)
	}
	root, err := DecodeVersion(b)
	if err != nil {
		return nil, object.Entry{}, fmt.Errorf("version %s: %w", v.Short(), err)
	}
	// The root tree itself must be there for the mount to show anything.
	if _, err := g.Get(ctx, root.Object); err != nil {
		return nil, object.Entry{}, fmt.Errorf("version %s root tree: %w", v.Short(), err)
	}
	return lower.NewObjects(g, root.Object, root), root, nil
}

// DecodeVersion decodes a version object and returns its one entry, the
// root directory's.
func DecodeVersion(b []byte) (object.Entry, error) {
	t, err := object.DecodeTree(b)
	if err != nil {
		return object.Entry{}, err
	}
	if len(t.Entries) != 1 || t.Entries[0].Name != versionRoot || t.Entries[0].Mode&unix.S_IFMT != unix.S_IFDIR {
		return object.Entry{}, fmt.Errorf("not a version object: %w", object.ErrCorrupt)
	}
	return t.Entries[0], nil
}

// A readGetter fetches an object for a reader that reads from it next:
// Cache.GetForRead.
type readGetter interface {
	GetForRead(ctx context.Context, d object.Digest) ([]byte, error)
}

// Held reports whether store holds every object of version v (its trees,
// file objects and chunks, undamaged), so that a mount of it needs nothing
// from the master.
func Held(ctx context.Context, store *object.DirStore, v object.Digest) (bool, error) {
	errLacking := errors.New("lacking")
	err := object.WalkEntries(ctx, store, v, func(_ *object.Entry, f *object.File) error {
		if f == nil {
			return nil
		}
		for _, c := range f.Chunks {
			if c.IsZero() {
				continue
			}
			if ok, err := store.Has(ctx, c); err != nil {
				return err
			} else if !ok {
				return errLacking
			}
		}
		return nil
	})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, errLacking), errors.Is(err, object.ErrNotFound), errors.Is(err, object.ErrCorrupt):
		return false, nil
	}
	return false, fmt.Errorf("version %s: %w", v.Short(), err)
}

// PutVersion stores the version object for the directory entry root:
// what a master resolves a path to, and what cowfs publish makes visible
// in a bucket.
func PutVersion(ctx context.Context, store object.Putter, root object.Entry) (object.Digest, error) {
	return putVersion(ctx, store, root)
}
