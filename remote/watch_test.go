package remote_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// resolve asks the master at addr for the version of sub.
func resolve(t testing.TB, addr, sub string) object.Digest {
	t.Helper()
	c, err := remote.Dial(remote.ClientConfig{Addr: addr, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := c.Resolve(ctx, sub)
	if err != nil {
		t.Fatalf("resolve %q: %v", sub, err)
	}
	return v
}

// scannedNow returns the version of sub as a master that never saw root
// before scans it.
func scannedNow(t testing.TB, root, sub string) object.Digest {
	t.Helper()
	m := remotetest.StartMaster(t, root, remote.ServerConfig{Rescan: -1})
	defer m.Stop()
	return resolve(t, m.Addr, sub)
}

// A change made just before a resolve is in the version it returns,
// whatever the change and wherever in the tree; a resolve with no change
// since the last one answers without scanning. Before the master kept
// its last scan, the unchanged resolve scanned again.
func TestResolveSeesEveryChange(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	for i := range 20 {
		writeFile(t, filepath.Join(root, "d"+strconv.Itoa(i%4), "f"+strconv.Itoa(i)), randBytes(100+i), 0o644)
	}
	writeFile(t, filepath.Join(root, "big"), randBytes(3<<20), 0o644)
	var log remotetest.LogBuffer
	m := remotetest.StartMaster(t, root, remote.ServerConfig{Rescan: -1, Logger: log.Logger()})
	for _, sub := range []string{"", "d1"} {
		resolve(t, m.Addr, sub)
	}
	p := func(rel string) string { return filepath.Join(root, rel) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name   string
		sub    string
		change func()
	}{
		{"in place, same size", "", func() {
			f, err := os.OpenFile(p("d0/f0"), os.O_WRONLY, 0)
			must(err)
			defer f.Close()
			_, err = f.WriteAt([]byte("XY"), 10)
			must(err)
		}},
		{"in place, in a big file's second chunk", "", func() {
			f, err := os.OpenFile(p("big"), os.O_WRONLY, 0)
			must(err)
			defer f.Close()
			_, err = f.WriteAt([]byte("changed"), 1<<20+5)
			must(err)
		}},
		{"in place, below the path resolved", "d1", func() {
			must(os.WriteFile(p("d1/f1"), []byte("new bytes"), 0o644))
		}},
		{"appended", "", func() {
			f, err := os.OpenFile(p("d2/f2"), os.O_WRONLY|os.O_APPEND, 0)
			must(err)
			defer f.Close()
			_, err = f.Write([]byte("more"))
			must(err)
		}},
		{"truncated", "", func() { must(os.Truncate(p("d3/f3"), 1)) }},
		{"added", "", func() { must(os.WriteFile(p("d0/new"), []byte("n"), 0o644)) }},
		{"added below the path resolved", "d1", func() { must(os.WriteFile(p("d1/new"), []byte("n"), 0o644)) }},
		{"removed", "", func() { must(os.Remove(p("d0/f4"))) }},
		{"renamed across directories", "", func() { must(os.Rename(p("d0/f8"), p("d2/f8"))) }},
		{"mode", "", func() { must(os.Chmod(p("d2/f2"), 0o755)) }},
		{"times", "", func() { must(os.Chtimes(p("d3/f7"), time.Unix(1, 0), time.Unix(2, 0))) }},
		{"xattr", "", func() { must(unix.Lsetxattr(p("d3/f11"), "user.cowfs-test", []byte("v"), 0)) }},
		{"symlink", "", func() { must(os.Symlink("d0/f0", p("link"))) }},
		{"symlink retargeted", "", func() { must(os.Remove(p("link"))); must(os.Symlink("d1/f1", p("link"))) }},
		{"new subdirectories", "", func() {
			writeFile(t, p("n1/n2/n3/deep"), []byte("deep"), 0o644)
		}},
		{"in place, in a new subdirectory", "", func() {
			must(os.WriteFile(p("n1/n2/n3/deep"), []byte("deeper"), 0o644))
		}},
		{"directory renamed", "", func() { must(os.Rename(p("n1"), p("m1"))) }},
		{"in a renamed directory", "", func() {
			writeFile(t, p("m1/n2/n3/after-rename"), []byte("a"), 0o644)
		}},
		{"directory moved in", "", func() {
			writeFile(t, filepath.Join(outside, "o1/o2/f"), []byte("o"), 0o644)
			must(os.Rename(filepath.Join(outside, "o1"), p("o1")))
		}},
		{"in a directory moved in", "", func() {
			writeFile(t, p("o1/o2/o3/g"), []byte("g"), 0o644)
		}},
		{"directory removed", "", func() { must(os.RemoveAll(p("m1"))) }},
		{"root's mode", "", func() { must(os.Chmod(root, 0o750)) }},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := resolve(t, m.Addr, st.sub)
			st.change()
			got := resolve(t, m.Addr, st.sub)
			if got == before {
				t.Fatalf("resolve after the change returned the version from before it")
			}
			if want := scannedNow(t, root, st.sub); got != want {
				t.Fatalf("resolve after the change: %s, a scan now gives %s", got.Short(), want.Short())
			}
		})
	}

	t.Run("unchanged", func(t *testing.T) {
		resolve(t, m.Addr, "") // the last change is news to d1
		resolve(t, m.Addr, "d1")
		before := len(log.Lines("scanned=true"))
		v1 := resolve(t, m.Addr, "")
		v2 := resolve(t, m.Addr, "d1")
		if n := len(log.Lines("scanned=true")); n != before {
			t.Fatalf("resolves of an unchanged export scanned it %d times", n-before)
		}
		if v1 != scannedNow(t, root, "") || v2 != scannedNow(t, root, "d1") {
			t.Fatal("a resolve of an unchanged export returned another version than a scan now")
		}
	})
}

// Changes that overflow the kernel's queue of events, among them new
// directories, are seen, and so are later changes in those directories.
func TestResolveAfterQueueOverflow(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skip(err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || max > 100000 {
		t.Skipf("max_queued_events %q: too many to overflow in a test", b)
	}
	if testing.Short() && max > 20000 {
		t.Skip("-short")
	}
	root := t.TempDir()
	many := filepath.Join(root, "many")
	writeFile(t, filepath.Join(many, "a"), []byte("a"), 0o644)
	var log remotetest.LogBuffer
	m := remotetest.StartMaster(t, root, remote.ServerConfig{Rescan: -1, Logger: log.Logger()})
	resolve(t, m.Addr, "")
	for i := range max + 100 {
		f, err := os.Create(filepath.Join(many, strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	writeFile(t, filepath.Join(root, "late/sub/f"), []byte("1"), 0o644)
	v1 := resolve(t, m.Addr, "")
	if want := scannedNow(t, root, ""); v1 != want {
		t.Fatalf("after an overflow: %s, a scan now gives %s", v1.Short(), want.Short())
	}
	if len(log.Lines("overflowed")) == 0 {
		t.Fatal("the queue did not overflow: the test tests nothing")
	}
	if err := os.WriteFile(filepath.Join(root, "late/sub/f"), []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	v2 := resolve(t, m.Addr, "")
	if v2 == v1 {
		t.Fatal("a change in a directory made during the overflow was not seen")
	}
	if want := scannedNow(t, root, ""); v2 != want {
		t.Fatalf("%s, a scan now gives %s", v2.Short(), want.Short())
	}
}

// A change inotify does not report (bytes written through a hard link
// from outside the export) is served after the periodic scan.
func TestRescanFindsUnreportedChange(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(root, "d/f"), []byte("before"), 0o644)
	if err := os.Link(filepath.Join(root, "d/f"), filepath.Join(outside, "f")); err != nil {
		t.Fatal(err)
	}
	var log remotetest.LogBuffer
	m := remotetest.StartMaster(t, root, remote.ServerConfig{Rescan: 100 * time.Millisecond, Logger: log.Logger()})
	v0 := resolve(t, m.Addr, "")
	if err := os.WriteFile(filepath.Join(outside, "f"), []byte("after!"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := scannedNow(t, root, "")
	if want == v0 {
		t.Fatal("the change made no new version")
	}
	deadline := time.Now().Add(30 * time.Second)
	for resolve(t, m.Addr, "") != want {
		if time.Now().After(deadline) {
			t.Fatal("the change was not served 30 s after it")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(log.Lines("without an inotify event")) == 0 {
		t.Fatal("the periodic scan found the change but did not say so")
	}
}

// A master that cannot watch its export (the watch limit reached) scans
// it for every resolve.
func TestResolveWithoutWatch(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), []byte("1"), 0o644)
	var log remotetest.LogBuffer
	m := remotetest.StartMaster(t, root, remote.ServerConfig{Rescan: -1, Logger: log.Logger()})
	v0 := resolve(t, m.Addr, "")
	remote.GiveUpWatch(m.Server)
	if len(log.Lines("cannot watch the export")) == 0 {
		t.Fatal("giving up the watch was not logged")
	}
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v1 := resolve(t, m.Addr, ""); v1 == v0 || v1 != scannedNow(t, root, "") {
		t.Fatal("a change was not seen without the watch")
	}
	before := len(log.Lines("scanned=true"))
	resolve(t, m.Addr, "")
	if len(log.Lines("scanned=true")) != before+1 {
		t.Fatal("without the watch, a resolve did not scan")
	}
}

// A path gone from the export is no longer scanned every period.
func TestRescanForgetsRemovedPath(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "spider1/f"), []byte("1"), 0o644)
	writeFile(t, filepath.Join(root, "spider2/f"), []byte("2"), 0o644)
	m := remotetest.StartMaster(t, root, remote.ServerConfig{Rescan: 50 * time.Millisecond})
	resolve(t, m.Addr, "spider1")
	resolve(t, m.Addr, "spider2")
	if err := os.RemoveAll(filepath.Join(root, "spider1")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for remote.KnownPaths(m.Server) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d paths kept 30 s after one was removed, want 1", remote.KnownPaths(m.Server))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
