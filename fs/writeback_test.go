package fs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPosixWriteback runs posixtest with the kernel's writeback cache.
func TestPosixWriteback(t *testing.T) {
	t.Parallel()
	runPosixOpts(t, populatePosix, Options{WritebackCache: true})
}

// With the writeback cache, written data may still sit in the kernel when
// a snapshot is asked for. The snapshot must hold it anyway, with the size
// and mtime the mount showed, and a restore must show exactly that.
func TestWritebackSnapshot(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	os.MkdirAll(lower, 0o755)
	old := randBytes(3<<20 + 11)
	writeT(t, filepath.Join(lower, "log"), old)

	m := mountState(t, filepath.Join(base, "mnt"), testSpec{Lower: lower, State: state, Options: Options{WritebackCache: true}})
	// Small writes, no fsync, the files left open: a crawler mid-run.
	// Without the snapshot's flush this failed in 1 run of 30: syncfs
	// starts the kernel's write-back, which mostly wins the race with the
	// snapshot. TestFlushWriters checks the flush
	// itself.
	f, err := os.OpenFile(filepath.Join(m.Dir, "log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := os.Create(filepath.Join(m.Dir, "items.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var logTail, items bytes.Buffer
	for i := range 500 {
		line := []byte("record " + string(rune('a'+i%26)) + "\n")
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
		logTail.Write(line)
		item := bytes.Repeat([]byte{byte('0' + i%10)}, 300)
		if _, err := g.Write(append(item, '\n')); err != nil {
			t.Fatal(err)
		}
		items.Write(append(item, '\n'))
	}
	want := map[string][]byte{"log": append(old, logTail.Bytes()...), "items.jsonl": items.Bytes()}
	wantSt := map[string]os.FileInfo{}
	for name := range want {
		fi, err := os.Lstat(filepath.Join(m.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		wantSt[name] = fi
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := m.Snapshot(ctx, "mid-run")
	if err != nil {
		t.Fatal(err)
	}
	if res.Flushed != 2 {
		t.Errorf("the snapshot flushed %d files open for writing first, want 2", res.Flushed)
	}
	// Writes after the snapshot are not in it.
	if _, err := f.Write([]byte("after the snapshot\n")); err != nil {
		t.Fatal(err)
	}

	r := mountState(t, filepath.Join(base, "r"), testSpec{Snapshot: "mid-run", State: state})
	for name, b := range want {
		p := filepath.Join(r.Dir, name)
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s in the snapshot: %d bytes (want %d), equal %v, %v", name, len(got), len(b), bytes.Equal(got, b), err)
		}
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if w := wantSt[name]; fi.Size() != w.Size() || !fi.ModTime().Equal(w.ModTime()) || fi.Mode() != w.Mode() {
			t.Errorf("%s in the snapshot: size %d mtime %v mode %v; the mount showed %d %v %v",
				name, fi.Size(), fi.ModTime(), fi.Mode(), w.Size(), w.ModTime(), w.Mode())
		}
	}
}

// With the writeback cache, a small write stays in the kernel until it
// is written back (after 30 s, under memory pressure, or at fsync or
// close); flushWriters must bring every file open for writing to the
// upper. The upper file is read directly, so the check does not depend on
// how a snapshot races with the kernel's own write-back.
func TestFlushWriters(t *testing.T) {
	t.Parallel()
	tm := mountT(t, "", Options{WritebackCache: true})
	want := map[string][]byte{}
	for _, name := range []string{"a.log", "b.jsonl"} {
		f, err := os.Create(filepath.Join(tm.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := bytes.Repeat([]byte(name+" line\n"), 4000)
		for i := 0; i < len(b); i += 100 {
			if _, err := f.Write(b[i:min(i+100, len(b))]); err != nil {
				t.Fatal(err)
			}
		}
		want[name] = b
	}
	upper := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(tm.Upper, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, b := range want {
		if got := upper(name); len(got) >= len(b) {
			t.Fatalf("%s: the upper has all %d bytes before any flush: the writes did not stay in the kernel's cache", name, len(got))
		}
	}
	tm.m.flushWriters()
	for name, b := range want {
		if got := upper(name); !bytes.Equal(got, b) {
			t.Errorf("%s: the upper has %d bytes after flushWriters, want %d", name, len(got), len(b))
		}
	}
}

// Without the writeback cache, what a process writes through a shared
// writable mapping also stays in the kernel until it is written back. A
// snapshot must hold what was written through mappings still open when it
// began: into a lower file (a copy-up by write-back) and into a new one.
func TestSnapshotMappedWrites(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	os.MkdirAll(lower, 0o755)
	db := randBytes(2<<20 + 4096)
	writeT(t, filepath.Join(lower, "db"), db)
	m := mountState(t, filepath.Join(base, "mnt"), testSpec{Lower: lower, State: state})

	want := map[string][]byte{"db": db, "new": make([]byte, 3*4096)}
	for name, b := range want {
		f, err := os.OpenFile(filepath.Join(m.Dir, name), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(int64(len(b))); err != nil {
			t.Fatal(err)
		}
		mm, err := unix.Mmap(int(f.Fd()), 0, len(b), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(mm)
		for _, off := range []int{100, 1<<20 + 5000, len(b) - 10} {
			if off+8 > len(b) {
				continue
			}
			// Through a syscall: a page fault on this process's own
			// mount in Go code would hold its P while the server it
			// waits for needs one (copyMapped).
			copyMapped(t, mm[off:off+8], []byte("mapped!\n"))
			copy(b[off:], "mapped!\n")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := m.Snapshot(ctx, "mapped")
	if err != nil {
		t.Fatal(err)
	}
	if res.Flushed != 2 {
		t.Errorf("the snapshot flushed %d files open for writing first, want 2", res.Flushed)
	}
	r := mountState(t, filepath.Join(base, "r"), testSpec{Snapshot: "mapped", State: state})
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(r.Dir, name))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s in the snapshot: %d bytes (want %d), first difference at %d, %v", name, len(got), len(b), firstDiff(got, b), err)
		}
	}
}
