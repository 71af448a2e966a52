package object

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// WalkFunc is called for every entry under a root, parents before children.
// file is the decoded file object of a regular file (nil otherwise).
type WalkFunc func(path string, e *Entry, file *File) error

// Walk visits every entry of the tree root, fetching (and so verifying)
// every tree and file object on the way. Blobs are not fetched.
//
// Walk, as Reachable, keeps a frame per directory it is in on a stack of
// its own and the path in one buffer: a tree nests as deep as its objects
// make it (a version from a hostile master can be a chain of a million
// directories), and a recursive walk that held each directory's path
// grew with the square of the depth until the process was killed.
func Walk(ctx context.Context, g Getter, root Digest, fn WalkFunc) error {
	return walk(ctx, g, root, true, fn)
}

// EntryFunc is WalkFunc without the entry's path.
type EntryFunc func(e *Entry, file *File) error

// WalkEntries is Walk for a caller that needs no paths: its time is in
// proportion to the entries it visits, where Walk also makes each one's
// path, which for a chain of directories costs the square of its depth.
func WalkEntries(ctx context.Context, g Getter, root Digest, fn EntryFunc) error {
	return walk(ctx, g, root, false, func(_ string, e *Entry, f *File) error { return fn(e, f) })
}

// walk is Walk; without paths, fn is given "" for each path.
func walk(ctx context.Context, g Getter, root Digest, paths bool, fn WalkFunc) error {
	type frame struct {
		t    *Tree
		next int
		dir  int // len(path) of this directory's path
	}
	var path []byte
	var stack []frame
	enter := func(d Digest) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := g.Get(ctx, d)
		if err != nil {
			return fmt.Errorf("tree of %q: %w", path, err)
		}
		t, err := DecodeTree(b)
		if err != nil {
			return fmt.Errorf("tree of %q: %w", path, err)
		}
		stack = append(stack, frame{t: t, dir: len(path)})
		return nil
	}
	if err := enter(root); err != nil {
		return err
	}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if top.next == len(top.t.Entries) {
			stack = stack[:len(stack)-1]
			continue
		}
		e := &top.t.Entries[top.next]
		top.next++
		path = path[:top.dir]
		if top.dir > 0 {
			path = append(path, '/')
		}
		path = append(path, e.Name...)
		p := ""
		if paths {
			p = string(path)
		}
		var f *File
		if isReg(e.Mode) && e.Size > 0 {
			b, err := g.Get(ctx, e.Object)
			if err != nil {
				return fmt.Errorf("file %q: %w", path, err)
			}
			if f, err = DecodeFile(b); err != nil {
				return fmt.Errorf("file %q: %w", path, err)
			}
			if f.Size != e.Size {
				return fmt.Errorf("file %q: object of %d bytes for an entry of %d: %w", path, f.Size, e.Size, ErrCorrupt)
			}
		}
		if err := fn(p, e, f); err != nil {
			return err
		}
		if isDir(e.Mode) {
			if err := enter(e.Object); err != nil {
				return err
			}
		}
	}
	return nil
}

const (
	modeType = 0o170000
	modeDir  = 0o040000
	modeReg  = 0o100000
)

func isDir(mode uint32) bool { return mode&modeType == modeDir }
func isReg(mode uint32) bool { return mode&modeType == modeReg }

// Reachable adds to set every object the tree root reaches, itself included:
// trees, file objects and blobs.
func Reachable(ctx context.Context, g Getter, root Digest, set map[Digest]bool) error {
	return reachable(ctx, g, root, set, false)
}

// ReachablePresent is Reachable over a partial copy of the tree (a version
// of a remote export, fetched lazily): an object g does not have is added to
// set, but what only it could lead to is not.
func ReachablePresent(ctx context.Context, g Getter, root Digest, set map[Digest]bool) error {
	return reachable(ctx, g, root, set, true)
}

func reachable(ctx context.Context, g Getter, root Digest, set map[Digest]bool, partial bool) error {
	type frame struct {
		t    *Tree
		next int
	}
	var stack []frame
	// names are those of the directories below root the walk is in, for
	// an error's path, joined only if there is one.
	var names []string
	in := func(err error, name string) error {
		return fmt.Errorf("%s: %w", strings.Join(append(names, name), "/"), err)
	}
	// enter adds tree d to set and, unless partial and missing, steps
	// into it.
	enter := func(d Digest) (bool, error) {
		set[d] = true
		if err := ctx.Err(); err != nil {
			return false, err
		}
		b, err := g.Get(ctx, d)
		if partial && errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		t, err := DecodeTree(b)
		if err != nil {
			return false, err
		}
		stack = append(stack, frame{t: t})
		return true, nil
	}
	if set[root] {
		return nil
	}
	if _, err := enter(root); err != nil {
		return err
	}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if top.next == len(top.t.Entries) {
			stack = stack[:len(stack)-1]
			names = names[:max(0, len(stack)-1)]
			continue
		}
		e := &top.t.Entries[top.next]
		top.next++
		switch {
		case isDir(e.Mode):
			if set[e.Object] {
				continue
			}
			entered, err := enter(e.Object)
			if err != nil {
				return in(err, e.Name)
			}
			if entered {
				names = append(names, e.Name)
			}
		case isReg(e.Mode) && e.Size > 0 && !set[e.Object]:
			set[e.Object] = true
			b, err := g.Get(ctx, e.Object)
			if partial && errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return in(err, e.Name)
			}
			f, err := DecodeFile(b)
			if err != nil {
				return in(err, e.Name)
			}
			for _, c := range f.Chunks {
				if !c.IsZero() {
					set[c] = true
				}
			}
		}
	}
	return nil
}

// Problem is one thing Verify found wrong.
type Problem struct {
	Path string
	Err  error
}

// Verify re-reads every object the tree root reaches, blobs included, and
// checks each against its digest and its place (a blob's length against
// the file's size). It returns every problem found, not only the first.
func Verify(ctx context.Context, g Getter, root Digest) ([]Problem, error) {
	var probs []Problem
	err := Walk(ctx, g, root, func(p string, e *Entry, f *File) error {
		if f == nil {
			return nil
		}
		for i, c := range f.Chunks {
			if c.IsZero() {
				continue
			}
			b, err := g.Get(ctx, c)
			if err == nil {
				var data []byte
				if data, err = DecodeBlob(b); err == nil {
					want := min(int64(ChunkSize), f.Size-int64(i)*ChunkSize)
					if int64(len(data)) != want {
						err = fmt.Errorf("chunk %d holds %d bytes, want %d: %w", i, len(data), want, ErrCorrupt)
					}
				}
			}
			if err != nil {
				probs = append(probs, Problem{Path: p, Err: fmt.Errorf("chunk %d (%s): %w", i, c.Short(), err)})
			}
		}
		return nil
	})
	if err != nil && (errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotFound) || errors.Is(err, fs.ErrPermission)) {
		probs = append(probs, Problem{Path: "", Err: err})
		return probs, nil
	}
	return probs, err
}

// Change is one path that differs between two trees.
type Change struct {
	Path string
	Kind byte // '+' added, '-' removed, 'M' changed
}

// Diff lists what differs from tree a to tree b. Subtrees with equal
// digests are skipped without being read, so the cost is in proportion to
// what changed.
func Diff(ctx context.Context, g Getter, a, b Digest) ([]Change, error) {
	var out []Change
	err := diffTree(ctx, g, "", a, b, &out)
	return out, err
}

func getTree(ctx context.Context, g Getter, d Digest) (*Tree, error) {
	if d.IsZero() {
		return &Tree{}, nil
	}
	b, err := g.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	return DecodeTree(b)
}

func diffTree(ctx context.Context, g Getter, dir string, a, b Digest, out *[]Change) error {
	if a == b {
		return nil
	}
	ta, err := getTree(ctx, g, a)
	if err != nil {
		return err
	}
	tb, err := getTree(ctx, g, b)
	if err != nil {
		return err
	}
	join := func(n string) string {
		if dir == "" {
			return n
		}
		return dir + "/" + n
	}
	i, j := 0, 0
	for i < len(ta.Entries) || j < len(tb.Entries) {
		switch {
		case j == len(tb.Entries) || (i < len(ta.Entries) && ta.Entries[i].Name < tb.Entries[j].Name):
			e := &ta.Entries[i]
			*out = append(*out, Change{Path: join(e.Name), Kind: '-'})
			if isDir(e.Mode) {
				if err := diffTree(ctx, g, join(e.Name), e.Object, Zero, out); err != nil {
					return err
				}
			}
			i++
		case i == len(ta.Entries) || tb.Entries[j].Name < ta.Entries[i].Name:
			e := &tb.Entries[j]
			*out = append(*out, Change{Path: join(e.Name), Kind: '+'})
			if isDir(e.Mode) {
				if err := diffTree(ctx, g, join(e.Name), Zero, e.Object, out); err != nil {
					return err
				}
			}
			j++
		default:
			ea, eb := &ta.Entries[i], &tb.Entries[j]
			p := join(ea.Name)
			if isDir(ea.Mode) && isDir(eb.Mode) {
				if !sameAttrs(ea, eb) {
					*out = append(*out, Change{Path: p, Kind: 'M'})
				}
				if err := diffTree(ctx, g, p, ea.Object, eb.Object, out); err != nil {
					return err
				}
			} else if !sameAttrs(ea, eb) || ea.Object != eb.Object || ea.Target != eb.Target {
				*out = append(*out, Change{Path: p, Kind: 'M'})
			}
			i++
			j++
		}
	}
	return nil
}

func sameAttrs(a, b *Entry) bool {
	if a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Size != b.Size || a.Mtime != b.Mtime || a.Rdev != b.Rdev || len(a.Xattrs) != len(b.Xattrs) {
		return false
	}
	for k, v := range a.Xattrs {
		if w, ok := b.Xattrs[k]; !ok || string(v) != string(w) {
			return false
		}
	}
	return true
}
