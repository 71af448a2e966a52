// Package refs names snapshots: a ref is a small file mapping a name to a
// root tree digest and the root directory's own attributes. Refs are plain
// files, created by link(2) so that creating an existing name fails
// atomically, and written whole before they are linked, so a crash never
// leaves a half-made ref to list.
package refs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cowfs/cowfs/cow"
	"github.com/cowfs/cowfs/cow/object"
)

// ErrExists reports a name that is taken.
var ErrExists = errors.New("snapshot exists")

// ErrNotFound reports a name that is not.
var ErrNotFound = errors.New("no such snapshot")

// Snapshot is what a ref records.
type Snapshot struct {
	Name string `json:"name"`
	// Root is the root tree; RootEntry the root directory's own mode,
	// owner, times and xattrs.
	Root      object.Digest `json:"-"`
	RootEntry object.Entry  `json:"root_entry"`
	Created   time.Time     `json:"created"`
	// Parent is the snapshot the source mount was restored from, if any.
	Parent string `json:"parent,omitempty"`
	// Source is the mountpoint the snapshot was taken of.
	Source string `json:"source,omitempty"`
	// Lower is the local directory the source mount was over, if it was
	// one: where cowfs verify --repair looks for the bytes of a damaged
	// object again.
	Lower string `json:"lower,omitempty"`
}

type onDisk struct {
	Snapshot
	RootDigest string `json:"root"`
}

// Dir holds refs, one file per snapshot name.
type Dir struct {
	dir string
}

// Open opens (creating if needed) the ref directory dir.
func Open(dir string) (*Dir, error) {
	if err := os.MkdirAll(filepath.Join(dir, ".tmp"), 0o755); err != nil {
		return nil, fmt.Errorf("refs %s: %w", dir, err)
	}
	return &Dir{dir: dir}, nil
}

// ValidName checks a snapshot name: a valid file name not starting with a
// dot, so it can be a file in the ref directory.
func ValidName(name string) error {
	if err := cow.ValidName(name); err != nil {
		return fmt.Errorf("snapshot name: %w", err)
	}
	if strings.HasPrefix(name, ".") {
		return fmt.Errorf("snapshot name %q: must not start with a dot", name)
	}
	return nil
}

// Create records s under s.Name, failing with ErrExists if the name is taken.
func (d *Dir) Create(s Snapshot) error {
	if err := ValidName(s.Name); err != nil {
		return err
	}
	b, err := json.MarshalIndent(onDisk{Snapshot: s, RootDigest: s.Root.String()}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Join(d.dir, ".tmp"), "ref-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), filepath.Join(d.dir, s.Name)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", s.Name, ErrExists)
		}
		return err
	}
	return syncDir(d.dir)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Get returns the snapshot called name.
func (d *Dir) Get(name string) (Snapshot, error) {
	if err := ValidName(name); err != nil {
		return Snapshot{}, err
	}
	b, err := os.ReadFile(filepath.Join(d.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return Snapshot{}, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Snapshot{}, err
	}
	var od onDisk
	if err := json.Unmarshal(b, &od); err != nil {
		return Snapshot{}, fmt.Errorf("ref %s: %w", name, err)
	}
	if od.Snapshot.Root, err = object.ParseDigest(od.RootDigest); err != nil {
		return Snapshot{}, fmt.Errorf("ref %s: %w", name, err)
	}
	return od.Snapshot, nil
}

// List returns every snapshot, oldest first.
func (d *Dir) List() ([]Snapshot, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, err
	}
	var out []Snapshot
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		s, err := d.Get(e.Name())
		if err != nil {
			// Refused rather than skipped: a gc must not run on a view
			// that misses a snapshot whose ref it cannot read.
			return nil, fmt.Errorf("%s is not a readable snapshot ref (if it was put there by hand, move it out of %s): %w",
				filepath.Join(d.dir, e.Name()), d.dir, err)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Remove deletes the ref name. Its objects stay until a gc finds nothing
// else reaches them.
func (d *Dir) Remove(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(d.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return err
}
