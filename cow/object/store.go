package object

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DirStore keeps objects as plain files under a directory, one file per
// object at ab/cdef... (the hex of its digest), written once by atomic
// rename and never opened for writing again. Plain files, not a database,
// because every mount process on a machine shares the store, and a file
// rename needs no lock between processes (git keeps loose objects the same
// way). Every Get verifies the bytes against the digest.
type DirStore struct {
	dir string
}

// OpenDirStore opens (creating if needed) a store in dir.
func OpenDirStore(dir string) (*DirStore, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, fmt.Errorf("object store %s: %w", dir, err)
	}
	return &DirStore{dir: dir}, nil
}

func (s *DirStore) path(d Digest) string {
	h := d.String()[len(digestPrefix):]
	return filepath.Join(s.dir, h[:2], h[2:])
}

// Has reports whether the store holds d.
func (s *DirStore) Has(_ context.Context, d Digest) (bool, error) {
	_, err := os.Lstat(s.path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Get returns the encoded object d, verified.
func (s *DirStore) Get(_ context.Context, d Digest) ([]byte, error) {
	b, err := os.ReadFile(s.path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if Sum(b) != d {
		return nil, fmt.Errorf("%s: bytes hash to %s: %w", d, Sum(b), ErrCorrupt)
	}
	return b, nil
}

// Put stores an encoded object and returns its digest. Storing an object
// the store has is a no-op: an object, once stored, is never written again.
func (s *DirStore) Put(ctx context.Context, encoded []byte) (Digest, error) {
	if _, err := KindOf(encoded); err != nil {
		return Zero, err
	}
	d := Sum(encoded)
	if ok, err := s.Has(ctx, d); err != nil || ok {
		if ok {
			// Freshen it: a gc running now keeps objects younger
			// than its grace period, and this one is about to be
			// referenced again.
			now := time.Now()
			os.Chtimes(s.path(d), now, now)
		}
		return d, err
	}
	p := s.path(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return Zero, err
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "put-")
	if err != nil {
		return Zero, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(encoded); err != nil {
		tmp.Close()
		return Zero, err
	}
	// Objects are read-only on disk: nothing in cowfs opens one for
	// writing, and the mode says so to everything else.
	if err := tmp.Chmod(0o444); err != nil {
		tmp.Close()
		return Zero, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return Zero, err
	}
	if err := tmp.Close(); err != nil {
		return Zero, err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return Zero, fmt.Errorf("store %s: %w", d, err)
	}
	return d, nil
}

// StoredObject describes one object on disk.
type StoredObject struct {
	Digest  Digest
	Size    int64
	ModTime time.Time
}

// Each calls fn for every object in the store.
func (s *DirStore) Each(fn func(StoredObject) error) error {
	fans, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, fan := range fans {
		if !fan.IsDir() || len(fan.Name()) != 2 {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(s.dir, fan.Name()))
		if err != nil {
			return err
		}
		for _, e := range ents {
			d, err := ParseDigest(digestPrefix + fan.Name() + e.Name())
			if err != nil || strings.Contains(e.Name(), ".") {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if err := fn(StoredObject{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Size returns the stored size of object d.
func (s *DirStore) Size(d Digest) (int64, error) {
	fi, err := os.Lstat(s.path(d))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Remove deletes object d. Only a gc that proved nothing reaches d may call
// it.
func (s *DirStore) Remove(d Digest) error {
	err := os.Remove(s.path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
