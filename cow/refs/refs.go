// Package refs names snapshots: a ref is a small file mapping a name to a
// root tree digest and the root directory's own attributes. Refs are plain
// files, created by link(2) so that creating an existing name fails
// atomically, and written whole before they are linked, so a crash never
// leaves a half-made ref to list.
//
// A state directory holds two namespaces: its own snapshots, and those
// workers pushed to it as a master (Dir.Pushed). They are apart so that a
// push never takes or shadows a name of the master's own, and so that the
// master can serve what workers pushed without serving its own snapshots,
// which may be of trees it does not export.
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
	"unicode"
	"unicode/utf8"

	"github.com/cowfs/cowfs/cow/internal/fsio"
	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/object"
)

// PushedPrefix qualifies the name of a snapshot a worker pushed where the
// two namespaces meet: cowfs snapshots lists "pushed/NAME", and Get and
// Remove of the state's own Dir take it. No snapshot name holds a slash.
const PushedPrefix = "pushed/"

// pushedDir is the pushed namespace's directory inside the ref directory.
// No snapshot name starts with a dot, so it is never read as a ref.
const pushedDir = ".pushed"

// ErrExists reports a name that is taken.
var ErrExists = errors.New("snapshot exists")

// ErrNotFound reports a name that is not.
var ErrNotFound = errors.New("no such snapshot")

// Snapshot is what a ref records.
type Snapshot struct {
	Name string `json:"name"`
	// Root is the root directory's entry: its tree (Root.Object) and
	// its own mode, owner, times and xattrs, which a tree does not hold.
	Root    object.Entry `json:"root_entry"`
	Created time.Time    `json:"created"`
	// Parent is the snapshot the source mount was restored from, if any.
	Parent string `json:"parent,omitempty"`
	// Source is the mountpoint the snapshot was taken of.
	Source string `json:"source,omitempty"`
	// Lower is the local directory the source mount was over, if it was
	// one: where cowfs verify --repair looks for the bytes of a damaged
	// object again.
	Lower string `json:"lower,omitempty"`
}

// onDisk is a ref as it is stored. The root tree's digest is kept as
// "root" too, in its text form: every cowfs, this one included, reads the
// tree from there, whatever the Object of "root_entry" holds.
type onDisk struct {
	Snapshot
	RootDigest string `json:"root"`
}

// Dir holds refs, one file per snapshot name.
type Dir struct {
	dir string
	// pushed is the namespace of pushed snapshots; nil in that
	// namespace itself.
	pushed *Dir
}

// Open opens (creating if needed) the ref directory dir.
func Open(dir string) (*Dir, error) {
	if err := os.MkdirAll(filepath.Join(dir, ".tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("refs %s: %w", dir, err)
	}
	p := filepath.Join(dir, pushedDir)
	if err := os.MkdirAll(filepath.Join(p, ".tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("refs %s: %w", p, err)
	}
	return &Dir{dir: dir, pushed: &Dir{dir: p}}, nil
}

// Pushed returns the namespace of the snapshots workers pushed. Its names
// are plain; it has no pins and no namespace of its own.
func (d *Dir) Pushed() *Dir { return d.pushed }

// PushedSource is the Source of a pushed snapshot's ref.
const PushedSource = "pushed"

// AdoptPushed moves the refs of pushed snapshots that a cowfs without the
// pushed namespace kept among the state's own (their Source is
// PushedSource; an own snapshot's is its mountpoint) into the pushed
// namespace, and returns their names. One whose name the pushed namespace
// already holds stays where it is. Each ref is linked into the pushed
// namespace before it is removed here, and gc reads this namespace before
// the pushed one (Live.Mark), so a gc meanwhile sees it in one or the
// other.
func (d *Dir) AdoptPushed() ([]string, error) {
	own, err := d.List()
	if err != nil {
		return nil, err
	}
	var moved []string
	for _, s := range own {
		if s.Source != PushedSource {
			continue
		}
		err := os.Link(filepath.Join(d.dir, s.Name), filepath.Join(d.pushed.dir, s.Name))
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err == nil {
			err = fsio.SyncDir(d.pushed.dir)
		}
		if err == nil {
			err = os.Remove(filepath.Join(d.dir, s.Name))
		}
		if err == nil {
			err = fsio.SyncDir(d.dir)
		}
		if err != nil {
			return moved, fmt.Errorf("move pushed snapshot %s to %s: %w", s.Name, d.pushed.dir, err)
		}
		moved = append(moved, s.Name)
	}
	return moved, nil
}

// inPushed returns the pushed namespace and the plain name when name is
// qualified with PushedPrefix and d has a pushed namespace.
func (d *Dir) inPushed(name string) (*Dir, string, bool) {
	rest, ok := strings.CutPrefix(name, PushedPrefix)
	if !ok || d.pushed == nil {
		return nil, "", false
	}
	return d.pushed, rest, true
}

// ValidName checks a snapshot name: a valid file name not starting with a
// dot, so it can be a file in the ref directory, and text: valid UTF-8
// (JSON, on the control socket and in the ref, turns anything else into
// U+FFFD, and the name given would then find nothing) without control
// characters (a newline broke the table of cowfs snapshots).
func ValidName(name string) error {
	if err := names.Valid(name); err != nil {
		return fmt.Errorf("snapshot name: %w", err)
	}
	if strings.HasPrefix(name, ".") {
		return fmt.Errorf("snapshot name %q: must not start with a dot", name)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("snapshot name %q: not valid UTF-8", name)
	}
	if i := strings.IndexFunc(name, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(name[i:])
		return fmt.Errorf("snapshot name %q: holds the control character %U", name, r)
	}
	return nil
}

// Create records s under s.Name, failing with ErrExists if the name is taken.
func (d *Dir) Create(s Snapshot) error {
	if err := ValidName(s.Name); err != nil {
		return err
	}
	b, err := json.MarshalIndent(onDisk{Snapshot: s, RootDigest: s.Root.Object.String()}, "", "  ")
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
	return fsio.SyncDir(d.dir)
}

// Get returns the snapshot called name; "pushed/NAME" is the pushed
// snapshot NAME.
func (d *Dir) Get(name string) (Snapshot, error) {
	if p, rest, ok := d.inPushed(name); ok {
		s, err := p.Get(rest)
		if errors.Is(err, ErrNotFound) {
			return s, fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		s.Name = name
		return s, err
	}
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
	if od.Snapshot.Root.Object, err = object.ParseDigest(od.RootDigest); err != nil {
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

// Remove deletes the ref name ("pushed/NAME": the pushed snapshot NAME).
// Its objects stay until a gc finds nothing else reaches them.
func (d *Dir) Remove(name string) error {
	if p, rest, ok := d.inPushed(name); ok {
		err := p.Remove(rest)
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return err
	}
	if err := ValidName(name); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(d.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return err
}
