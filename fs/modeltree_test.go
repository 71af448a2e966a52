package fs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

var modelNoLowerLinks = flag.Bool("model.nolowerlinks", false,
	"leave out of the tree model's lower the two names of one file")

// tobj is one file, directory or symlink of the tree model; hard links
// are names sharing one tobj.
type tobj struct {
	kind   byte // 'd', 'f' or 'l'
	data   []byte
	target string
	ino    uint64 // as first seen through the mount; 0 until then
}

// treeModel is what the mount's tree must be: path (relative, "" the
// root) to object.
type treeModel struct {
	t       *testing.T
	tm      *testMount
	rnd     *rand.Rand
	log     opLog
	entries map[string]*tobj
	nsym    int
	ok, bad int // operations that succeeded, and that failed as expected
}

// treeNames are the only names the test uses, so operations collide with
// existing entries often. Symlinks point under "nowhere", which never
// exists, so no path the test builds resolves through one.
var treeNames = []string{"a", "b", "c", "d", "e", "f"}

func tjoin(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func tparent(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

// TestModelTree runs random directory operations over a populated lower
// and checks the mount against a model of the tree after every step: the
// listing of each touched directory and lstat of each touched path, the
// errno of each refused operation, and the whole tree every 100 steps and
// after every remount.
func TestModelTree(t *testing.T) {
	seed := testSeed(t)
	lower := filepath.Join(t.TempDir(), "lower")
	populateTreeLower(t, lower, rand.New(rand.NewSource(seed)))
	lowerBefore := readTree(t, lower)
	tm := mountT(t, lower, Options{})
	m := &treeModel{
		t: t, tm: tm, rnd: rand.New(rand.NewSource(seed + 1)), log: opLog{seed: seed},
		entries: map[string]*tobj{},
	}
	// The model starts as the lower, hard links included.
	byIno := map[uint64]*tobj{}
	for p, e := range lowerBefore {
		o := byIno[e.ino]
		if o == nil || e.kind == 'd' {
			o = &tobj{kind: e.kind, data: e.data, target: e.target}
			byIno[e.ino] = o
		}
		m.entries[p] = o
	}
	m.checkAll("at start")
	ops := *modelOps * 4 / 3
	if raceEnabled {
		// As the file model: the suite's plain stage runs it all.
		ops /= 5
	}
	for i := 0; i < ops; i++ {
		m.step()
		if i%100 == 99 {
			m.checkAll("every 100 steps")
		}
	}
	m.checkAll("at end")
	m.log.add("remount")
	tm.remount(t)
	m.checkAll("after the final remount")
	t.Logf("%d operations succeeded, %d failed with the expected errno; %d paths at the end", m.ok, m.bad, len(m.entries))
	after := readTree(t, lower)
	if d := diffTrees(lowerBefore, after); d != "" {
		t.Fatalf("the lower changed: %s", d)
	}
}

// populateTreeLower makes a lower with nested directories, an empty
// directory, files, a symlink and two names of one hard-linked file.
func populateTreeLower(t *testing.T, lower string, rnd *rand.Rand) {
	for _, d := range []string{"a/c/e", "c", "d", "f/a"} {
		if err := os.MkdirAll(filepath.Join(lower, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"a/b", "a/c/d", "b", "c/a", "e", "f/a/b"} {
		b := make([]byte, rnd.Intn(5000))
		rnd.Read(b)
		if err := os.WriteFile(filepath.Join(lower, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("nowhere/lower", filepath.Join(lower, "c/f")); err != nil {
		t.Fatal(err)
	}
	if *modelNoLowerLinks {
		return
	}
	if err := os.Link(filepath.Join(lower, "e"), filepath.Join(lower, "c/b")); err != nil {
		t.Fatal(err)
	}
}

// diskEntry is one path of a tree as read from disk.
type diskEntry struct {
	kind   byte
	data   []byte
	target string
	ino    uint64
	nlink  uint64
	mode   uint32
}

func entryOf(full string) (diskEntry, error) {
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		return diskEntry{}, err
	}
	e := diskEntry{ino: st.Ino, nlink: uint64(st.Nlink), mode: st.Mode}
	var err error
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.kind = 'd'
	case unix.S_IFREG:
		e.kind = 'f'
		e.data, err = os.ReadFile(full)
		if err == nil && int64(len(e.data)) != st.Size {
			err = fmt.Errorf("read %d bytes, stat size %d", len(e.data), st.Size)
		}
	case unix.S_IFLNK:
		e.kind = 'l'
		e.target, err = os.Readlink(full)
	default:
		err = fmt.Errorf("unexpected mode %#o", st.Mode)
	}
	return e, err
}

// readTree reads a whole tree: path (relative, "" the root) to entry.
func readTree(t testing.TB, root string) map[string]diskEntry {
	t.Helper()
	out := map[string]diskEntry{}
	err := filepath.WalkDir(root, func(full string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, full)
		if rel == "." {
			rel = ""
		}
		e, err := entryOf(full)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

// diffTrees describes the first difference of two snapshots, or "".
func diffTrees(a, b map[string]diskEntry) string {
	for p, x := range a {
		y, ok := b[p]
		switch {
		case !ok:
			return fmt.Sprintf("%q is gone", p)
		case x.kind != y.kind || !bytes.Equal(x.data, y.data) || x.target != y.target ||
			x.mode != y.mode || x.nlink != y.nlink || x.ino != y.ino:
			return fmt.Sprintf("%q differs", p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			return fmt.Sprintf("%q appeared", p)
		}
	}
	return ""
}

func (m *treeModel) full(p string) string { return filepath.Join(m.tm.Dir, p) }

func (m *treeModel) nlink(o *tobj) int {
	n := 0
	for _, e := range m.entries {
		if e == o {
			n++
		}
	}
	return n
}

func (m *treeModel) children(dir string) []string {
	var out []string
	for p := range m.entries {
		if p != "" && tparent(p) == dir {
			out = append(out, p[strings.LastIndexByte(p, '/')+1:])
		}
	}
	sort.Strings(out)
	return out
}

func (m *treeModel) depth(p string) int {
	if p == "" {
		return 0
	}
	return strings.Count(p, "/") + 1
}

// parentErr is the errno the kernel gives while resolving p's parent.
func (m *treeModel) parentErr(p string) unix.Errno {
	dir := tparent(p)
	if dir == "" {
		return 0
	}
	cur := ""
	for _, c := range strings.Split(dir, "/") {
		cur = tjoin(cur, c)
		switch e := m.entries[cur]; {
		case e == nil || e.kind == 'l': // symlinks all dangle
			return unix.ENOENT
		case e.kind != 'd':
			return unix.ENOTDIR
		}
	}
	return 0
}

// pick returns a random path: mostly an existing one, otherwise a new
// name in a random directory (sometimes under a file or a missing one).
func (m *treeModel) pick() string {
	if m.rnd.Intn(4) != 0 {
		var all []string
		for p := range m.entries {
			if p != "" {
				all = append(all, p)
			}
		}
		if len(all) > 0 {
			sort.Strings(all)
			return all[m.rnd.Intn(len(all))]
		}
	}
	return m.fresh()
}

func (m *treeModel) fresh() string {
	var dirs, files []string
	for p, e := range m.entries {
		switch {
		case e.kind == 'd' && m.depth(p) < 4:
			dirs = append(dirs, p)
		case e.kind == 'f':
			files = append(files, p)
		}
	}
	sort.Strings(dirs)
	sort.Strings(files)
	dir := dirs[m.rnd.Intn(len(dirs))]
	switch r := m.rnd.Intn(20); {
	case r == 0 && len(files) > 0: // under a file: ENOTDIR
		dir = files[m.rnd.Intn(len(files))]
	case r == 1: // under a name that may not exist
		dir = tjoin(dir, treeNames[m.rnd.Intn(len(treeNames))])
	}
	return tjoin(dir, treeNames[m.rnd.Intn(len(treeNames))])
}

func (m *treeModel) content() []byte {
	b := make([]byte, m.rnd.Intn(6000))
	m.rnd.Read(b)
	return b
}

// expect compares an operation's outcome with the model's errno.
func (m *treeModel) expect(op string, got error, want unix.Errno) {
	m.t.Helper()
	if want == 0 {
		if got != nil {
			m.log.fatalf(m.t, "%s: %v, want success", op, got)
		}
		m.ok++
		return
	}
	m.bad++
	if !errors.Is(got, want) {
		m.log.fatalf(m.t, "%s: %v, want %v", op, got, want)
	}
}

func (m *treeModel) step() {
	var touched []string
	r := m.rnd.Intn(100)
	switch {
	case r < 14: // mkdir
		touched = m.stepMkdir()
	case r < 24: // rmdir
		touched = m.stepRmdir()
	case r < 38: // create
		touched = m.stepCreate()
	case r < 46: // rewrite or append to a file
		touched = m.stepWrite()
	case r < 58: // unlink
		touched = m.stepUnlink()
	case r < 78: // rename
		touched = m.stepRename()
	case r < 85: // symlink
		touched = m.stepSymlink()
	case r < 99: // link
		touched = m.stepLink()
	default:
		m.log.add("remount")
		m.tm.remount(m.t)
		m.checkAll("after a remount")
		return
	}
	m.checkTouched(touched)
}

// stepMkdir is a step of mkdir.
func (m *treeModel) stepMkdir() []string {
	p := m.fresh()
	m.log.add("mkdir %s", p)
	want := m.parentErr(p)
	if want == 0 && m.entries[p] != nil {
		want = unix.EEXIST
	}
	m.expect("mkdir "+p, unix.Mkdir(m.full(p), 0o755), want)
	if want == 0 {
		m.entries[p] = &tobj{kind: 'd'}
	}
	return []string{p}
}

// stepRmdir is a step of rmdir.
func (m *treeModel) stepRmdir() []string {
	p := m.pick()
	m.log.add("rmdir %s", p)
	want := m.parentErr(p)
	e := m.entries[p]
	switch {
	case want != 0:
	case e == nil:
		want = unix.ENOENT
	case e.kind != 'd':
		want = unix.ENOTDIR
	case len(m.children(p)) > 0:
		want = unix.ENOTEMPTY
	}
	m.expect("rmdir "+p, unix.Rmdir(m.full(p)), want)
	if want == 0 {
		delete(m.entries, p)
	}
	return []string{p}
}

// stepCreate is a step of create.
func (m *treeModel) stepCreate() []string {
	p := m.fresh()
	data := m.content()
	m.log.add("create %s len=%d", p, len(data))
	want := m.parentErr(p)
	if want == 0 && m.entries[p] != nil {
		want = unix.EEXIST
	}
	fd, err := unix.Open(m.full(p), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	m.expect("create "+p, err, want)
	if want == 0 {
		m.writeAll(fd, p, data)
		m.entries[p] = &tobj{kind: 'f', data: data}
	}
	return []string{p}
}

// stepWrite is a step of rewrite or append to a file.
func (m *treeModel) stepWrite() []string {
	p := m.pick()
	data := m.content()
	app := m.rnd.Intn(2) == 0
	m.log.add("write %s len=%d append=%v", p, len(data), app)
	flags := unix.O_WRONLY | unix.O_TRUNC
	if app {
		flags = unix.O_WRONLY | unix.O_APPEND
	}
	want := m.parentErr(p)
	e := m.entries[p]
	switch {
	case want != 0:
	case e == nil || e.kind == 'l':
		want = unix.ENOENT
	case e.kind == 'd':
		want = unix.EISDIR
	}
	fd, err := unix.Open(m.full(p), flags|unix.O_CLOEXEC, 0)
	m.expect("open for write "+p, err, want)
	if want == 0 {
		m.writeAll(fd, p, data)
		if app {
			e.data = append(slices.Clip(e.data), data...)
		} else {
			e.data = data
		}
	}
	return []string{p}
}

// stepUnlink is a step of unlink.
func (m *treeModel) stepUnlink() []string {
	p := m.pick()
	m.log.add("unlink %s", p)
	want := m.parentErr(p)
	e := m.entries[p]
	switch {
	case want != 0:
	case e == nil:
		want = unix.ENOENT
	case e.kind == 'd':
		want = unix.EISDIR
	}
	m.expect("unlink "+p, unix.Unlink(m.full(p)), want)
	if want == 0 {
		delete(m.entries, p)
	}
	return []string{p}
}

// stepRename is a step of rename.
func (m *treeModel) stepRename() []string {
	src := m.pick()
	var dst string
	if m.rnd.Intn(2) == 0 {
		dst = m.pick()
	} else {
		dst = m.fresh()
	}
	m.log.add("rename %s %s", src, dst)
	want := m.renameErr(src, dst)
	m.expect("rename "+src+" "+dst, unix.Rename(m.full(src), m.full(dst)), want)
	if want == 0 && m.entries[src] != m.entries[dst] {
		m.rename(src, dst)
	}
	return []string{src, dst}
}

// stepSymlink is a step of symlink.
func (m *treeModel) stepSymlink() []string {
	p := m.fresh()
	m.nsym++
	target := fmt.Sprintf("nowhere/%d", m.nsym)
	m.log.add("symlink %s -> %s", p, target)
	want := m.parentErr(p)
	if want == 0 && m.entries[p] != nil {
		want = unix.EEXIST
	}
	m.expect("symlink "+p, unix.Symlink(target, m.full(p)), want)
	if want == 0 {
		m.entries[p] = &tobj{kind: 'l', target: target}
	}
	return []string{p}
}

// stepLink is a step of link.
func (m *treeModel) stepLink() []string {
	src, dst := m.pick(), m.fresh()
	if m.rnd.Intn(4) == 0 {
		dst = m.pick()
	}
	m.log.add("link %s %s", src, dst)
	want := m.parentErr(src)
	switch e := m.entries[src]; {
	case want != 0:
	case e == nil:
		want = unix.ENOENT
	case m.parentErr(dst) != 0:
		want = m.parentErr(dst)
	case m.entries[dst] != nil:
		want = unix.EEXIST
	case e.kind == 'd':
		want = unix.EPERM
	}
	m.expect("link "+src+" "+dst, unix.Link(m.full(src), m.full(dst)), want)
	if want == 0 {
		m.entries[dst] = m.entries[src]
	}
	return []string{src, dst}
}

// renameErr is the errno rename(2) gives, in the order Linux checks.
func (m *treeModel) renameErr(src, dst string) unix.Errno {
	if e := m.parentErr(src); e != 0 {
		return e
	}
	if e := m.parentErr(dst); e != 0 {
		return e
	}
	s, d := m.entries[src], m.entries[dst]
	switch {
	case s == nil:
		return unix.ENOENT
	case strings.HasPrefix(dst, src+"/"): // into itself
		return unix.EINVAL
	case strings.HasPrefix(src, dst+"/"): // over its own ancestor
		return unix.ENOTEMPTY
	case d == nil || d == s:
		return 0
	case s.kind == 'd' && d.kind != 'd':
		return unix.ENOTDIR
	case s.kind != 'd' && d.kind == 'd':
		return unix.EISDIR
	case d.kind == 'd' && len(m.children(dst)) > 0:
		return unix.ENOTEMPTY
	}
	return 0
}

// rename moves src and everything under it to dst, replacing dst.
func (m *treeModel) rename(src, dst string) {
	delete(m.entries, dst)
	moved := map[string]*tobj{}
	for p, e := range m.entries {
		if p == src || strings.HasPrefix(p, src+"/") {
			moved[dst+p[len(src):]] = e
			delete(m.entries, p)
		}
	}
	for p, e := range moved {
		m.entries[p] = e
	}
}

func (m *treeModel) writeAll(fd int, p string, data []byte) {
	for len(data) > 0 {
		k, err := unix.Write(fd, data)
		if err != nil {
			unix.Close(fd)
			m.log.fatalf(m.t, "write %s: %v", p, err)
		}
		data = data[k:]
	}
	if err := unix.Close(fd); err != nil {
		m.log.fatalf(m.t, "close %s: %v", p, err)
	}
}

// checkTouched compares the touched paths, everything under them, their
// parents' listings and the other names of their files.
func (m *treeModel) checkTouched(paths []string) {
	dirs := map[string]bool{}
	for _, p := range paths {
		dirs[tparent(p)] = true
		m.checkPath(p)
		for q := range m.entries {
			if strings.HasPrefix(q, p+"/") {
				m.checkPath(q)
			}
		}
		if e := m.entries[p]; e != nil && e.kind != 'd' {
			for q, o := range m.entries {
				if o == e && q != p {
					m.checkPath(q)
				}
			}
		}
	}
	for d := range dirs {
		m.checkDir(d)
	}
}

// checkDir compares a directory's listing with the model.
func (m *treeModel) checkDir(dir string) {
	e := m.entries[dir]
	if e == nil || e.kind != 'd' {
		return
	}
	des, err := os.ReadDir(m.full(dir))
	if err != nil {
		m.log.fatalf(m.t, "readdir %q: %v", dir, err)
	}
	var got []string
	for _, de := range des {
		got = append(got, de.Name())
	}
	if want := m.children(dir); !slices.Equal(got, want) {
		m.log.fatalf(m.t, "readdir %q: %q, model %q", dir, got, want)
	}
}

// checkPath compares lstat (and content) of one path with the model.
func (m *treeModel) checkPath(p string) {
	want := m.entries[p]
	got, err := entryOf(m.full(p))
	if want == nil {
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			m.log.fatalf(m.t, "lstat %q: %v (kind %c), model: no such path", p, err, got.kind)
		}
		return
	}
	if err != nil {
		m.log.fatalf(m.t, "lstat %q: %v, model kind %c", p, err, want.kind)
	}
	m.compare(p, want, got)
}

func (m *treeModel) compare(p string, want *tobj, got diskEntry) {
	switch {
	case got.kind != want.kind:
		m.log.fatalf(m.t, "%q is %c, model %c", p, got.kind, want.kind)
	case want.kind == 'f' && !bytes.Equal(got.data, want.data):
		m.log.fatalf(m.t, "%q: %d bytes differ from the model's %d at %d", p, len(got.data), len(want.data), firstDiff(got.data, want.data))
	case want.kind == 'l' && got.target != want.target:
		m.log.fatalf(m.t, "%q -> %q, model -> %q", p, got.target, want.target)
	case want.kind != 'd' && got.nlink != uint64(m.nlink(want)):
		m.log.fatalf(m.t, "%q has st_nlink %d, model %d names", p, got.nlink, m.nlink(want))
	case want.ino != 0 && got.ino != want.ino:
		m.log.fatalf(m.t, "%q: st_ino %d, earlier %d", p, got.ino, want.ino)
	}
	want.ino = got.ino
}

// checkAll walks the whole mount and compares it with the model: the same
// paths, kinds, bytes and targets, one inode per model object.
func (m *treeModel) checkAll(when string) {
	got := readTree(m.t, m.tm.Dir)
	for p := range got {
		if m.entries[p] == nil {
			m.log.fatalf(m.t, "%s: %q is in the mount, not in the model", when, p)
		}
	}
	owner := map[uint64]*tobj{}
	for p, want := range m.entries {
		g, ok := got[p]
		if !ok {
			m.log.fatalf(m.t, "%s: %q is in the model, not in the mount", when, p)
		}
		m.compare(p, want, g)
		if o := owner[g.ino]; o != nil && o != want {
			m.log.fatalf(m.t, "%s: %q shares st_ino %d with another file", when, p, g.ino)
		}
		owner[g.ino] = want
	}
	for dir, e := range m.entries {
		if e.kind != 'd' {
			continue
		}
		m.checkDir(dir)
		ents, err := readDirInos(m.full(dir))
		if err != nil {
			m.log.fatalf(m.t, "%s: getdents %q: %v", when, dir, err)
		}
		for name, ino := range ents {
			if p := tjoin(dir, name); got[p].ino != ino {
				m.log.fatalf(m.t, "%s: %q has d_ino %d in readdir, st_ino %d", when, p, ino, got[p].ino)
			}
		}
	}
}

// readDirInos lists a directory with getdents64: name to d_ino.
func readDirInos(dir string) (map[string]uint64, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	out := map[string]uint64{}
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
		// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return nil, fmt.Errorf("bad dirent record length %d", reclen)
			}
			name := string(b[19:reclen])
			if i := strings.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if name != "." && name != ".." {
				out[name] = binary.NativeEndian.Uint64(b[0:8])
			}
			b = b[reclen:]
		}
	}
}
