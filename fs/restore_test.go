package fs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
)

// Nothing a process does through a restore changes the snapshot: every
// kind of change, then the snapshot verifies and a second restore shows it
// as it was, bytes and metadata.
func TestRestoreCannotChangeSnapshot(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	os.MkdirAll(filepath.Join(lower, "db"), 0o755)
	data := randBytes(3<<20 + 77)
	writeT(t, filepath.Join(lower, "db/log-1"), data)
	writeT(t, filepath.Join(lower, "db/log-2"), []byte("tail of the log\n"))
	writeT(t, filepath.Join(lower, "spider.py"), []byte("print(1)\n"))

	m := mountState(t, filepath.Join(base, "mnt"), testSpec{Lower: lower, State: state})
	// Some of the snapshot's bytes come from the upper, some from the lower.
	f, err := os.OpenFile(filepath.Join(m.Dir, "db/log-2"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("record 2\n")
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := m.Snapshot(ctx, "ckpt")
	if err != nil {
		t.Fatal(err)
	}
	root, _ := object.ParseDigest(res.Root)
	listing := func(dir string) map[string]string {
		out := map[string]string{}
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			var st unix.Stat_t
			unix.Lstat(p, &st)
			key := fmt.Sprintf("mode %o uid %d gid %d mtime %d size %d", st.Mode, st.Uid, st.Gid, st.Mtim.Nano(), st.Size)
			if fi.Mode().IsRegular() {
				b, _ := os.ReadFile(p)
				key += " " + object.Sum(b).String()
			}
			if xs, _ := listxattrT(p); len(xs) > 0 {
				key += " xattrs " + xs
			}
			out[rel] = key
			return nil
		})
		return out
	}

	r1 := mountState(t, filepath.Join(base, "r1"), testSpec{Snapshot: "ckpt", State: state})
	before := listing(r1.Dir)
	p := func(n string) string { return filepath.Join(r1.Dir, n) }
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// write, append, truncate, fallocate, punch a hole, shared mmap write
	lf, err := os.OpenFile(p("db/log-1"), os.O_RDWR, 0)
	must("open", err)
	_, err = lf.WriteAt([]byte("overwritten"), 1<<20)
	must("write", err)
	must("fallocate", unix.Fallocate(int(lf.Fd()), 0, 0, 8<<20))
	must("punch", unix.Fallocate(int(lf.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 4096, 65536))
	mm, err := unix.Mmap(int(lf.Fd()), 2<<20, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	must("mmap", err)
	copyMapped(t, mm[:5], []byte("MMAP!"))
	must("msync", unix.Msync(mm, unix.MS_SYNC))
	unix.Munmap(mm)
	lf.Close()
	af, err := os.OpenFile(p("db/log-2"), os.O_APPEND|os.O_WRONLY, 0)
	must("open append", err)
	af.WriteString("resumed and appended\n")
	af.Close()
	must("truncate", os.Truncate(p("spider.py"), 2))
	must("chmod", os.Chmod(p("db/log-2"), 0o600))
	must("chown", os.Lchown(p("spider.py"), 4321, 4321))
	old := time.Unix(1000, 0)
	must("utimes", os.Chtimes(p("db/log-1"), old, old))
	must("setxattr", unix.Setxattr(p("spider.py"), "user.cowfs.t", []byte("x"), 0))
	must("rename", os.Rename(p("db"), p("db2")))
	must("unlink", os.Remove(p("db2/log-2")))
	must("create", os.WriteFile(p("new"), []byte("new"), 0o644))

	if changed := listing(r1.Dir); len(before) < 5 || changed["db"] != "" || changed["new"] == "" {
		t.Fatalf("the listing does not see the changes made: %d entries before, %v after", len(before), changed)
	}

	rd, _ := refs.Open(statedir.RefsDir(state))
	store, _ := object.OpenDirStore(statedir.ObjectsDir(state))
	snap, err := rd.Get("ckpt")
	if err != nil || snap.Root.Object != root {
		t.Fatalf("ref after the changes: %v, %v", snap.Root, err)
	}
	if probs, err := object.Verify(ctx, store, root); err != nil || len(probs) != 0 {
		t.Fatalf("verify after the changes: %v %v", probs, err)
	}
	r2 := mountState(t, filepath.Join(base, "r2"), testSpec{Snapshot: "ckpt", State: state})
	after := listing(r2.Dir)
	if len(after) != len(before) {
		t.Errorf("second restore has %d entries, the first had %d before any change", len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s differs in a second restore after changes through the first", k)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(r2.Dir, "db/log-1")); !bytes.Equal(b, data) {
		t.Error("db/log-1 changed in the snapshot")
	}
}

// listxattrT returns the names of p's xattrs, as listxattr gives them.
func listxattrT(p string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// The root's extended attributes are the lower root's in a mount, and in
// a restore what the snapshot recorded, as every other directory's are.
func TestRootXattrs(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	writeT(t, filepath.Join(lower, "f"), []byte("x"))
	if err := unix.Setxattr(lower, "user.lowerroot", []byte("L"), 0); err != nil {
		t.Skipf("no user xattrs here: %v", err)
	}
	m := mountState(t, filepath.Join(base, "mnt"), testSpec{Lower: lower, State: state})
	get := func(dir, name string) string {
		t.Helper()
		buf := make([]byte, 64)
		n, err := unix.Getxattr(dir, name, buf)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(buf[:n])
	}
	if v := get(m.Dir, "user.lowerroot"); v != "L" {
		t.Errorf("mount root: user.lowerroot = %q, want L", v)
	}
	if err := unix.Setxattr(m.Dir, "user.mountroot", []byte("M"), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.Snapshot(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	r := mountState(t, filepath.Join(base, "restore"), testSpec{Snapshot: "s", State: state})
	for name, want := range map[string]string{"user.lowerroot": "L", "user.mountroot": "M"} {
		if v := get(r.Dir, name); v != want {
			t.Errorf("restore root: %s = %q, want %q", name, v, want)
		}
	}
}

// A restore's files are read by the kernel from the chunks the engine
// holds, sent as they are (cow.Handle.ReadSlices): readers at random
// places of one file at once, their pages dropped before each read so
// that each is a READ, each get the file's bytes, holes included.
func TestRestoreReadsConcurrently(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	os.MkdirAll(lower, 0o755)
	data := randBytes(5<<20 + 4321)
	clear(data[2<<20 : 3<<20]) // a hole of a whole chunk
	writeT(t, filepath.Join(lower, "data"), data)
	m := mountState(t, filepath.Join(base, "mnt"), testSpec{Lower: lower, State: state})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := m.Snapshot(ctx, "ckpt"); err != nil {
		t.Fatal(err)
	}
	r := mountState(t, filepath.Join(base, "r"), testSpec{Snapshot: "ckpt", State: state})
	p := filepath.Join(r.Dir, "data")

	errs := make(chan error, 4)
	for w := range 4 {
		go func() {
			errs <- func() error {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				defer f.Close()
				rng := rand.New(rand.NewSource(int64(w)))
				for range 60 {
					unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
					off := rng.Int63n(int64(len(data)))
					buf := make([]byte, []int{4096, 100 << 10, 1 << 20, 3 << 20}[rng.Intn(4)])
					n, err := f.ReadAt(buf, off)
					if err != nil && err != io.EOF {
						return fmt.Errorf("read at %d: %v", off, err)
					}
					if want := data[off : off+int64(n)]; n == 0 || !bytes.Equal(buf[:n], want) {
						return fmt.Errorf("read at %d: %d bytes, first difference at %d", off, n, diffOffset(buf[:n], want))
					}
				}
				return nil
			}()
		}()
	}
	for range 4 {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("readers did not finish")
		}
	}
}
