package main

import (
	"context"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/object/objecttest"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
)

// chunkObjects returns the stored objects that hold a whole chunk (a blob
// of 1 MiB), in the order the walk finds them.
func chunkObjects(t *testing.T, state string) []string {
	t.Helper()
	var out []string
	dir := statedir.ObjectsDir(state)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && p != dir && len(d.Name()) != 2 {
			return filepath.SkipDir // tmp, quarantine
		}
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() && fi.Size() == 1<<20+2 {
			out = append(out, p)
		}
		return nil
	})
	if len(out) == 0 {
		t.Fatal("no chunk object of 1 MiB found")
	}
	return out
}

// flipByte damages the object file p in place, as bit rot would.
func flipByte(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, b, 0o444); err != nil {
		t.Fatal(err)
	}
}

// verifyFails runs verify name and checks that it fails and names want.
func verifyFails(t *testing.T, state, name, want string, flags ...string) string {
	t.Helper()
	out, code := run(t, append([]string{"--state", state, "verify", name}, flags...)...)
	if code == 0 || !strings.Contains(out, want) {
		t.Errorf("verify %s %v: exit %d, want non-zero naming %q: %s", name, flags, code, want, out)
	}
	return out
}

// TestSnapshotAfterDamageIsWhole is issue 15's local repro: a chunk of a
// snapshot of a mount over a local lower is damaged in the store; verify
// finds it, and the next snapshot of the same source, which reads the
// lower again, must not take the damaged object for the chunk, in the
// same mount or after a remount.
func TestSnapshotAfterDamageIsWhole(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	writeRandom(t, filepath.Join(e.lower, "big"), 3<<20+12345)
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	cli(t, e.state, "snapshot", e.mnt, "g1")
	verifyOK(t, e.state, "g1")

	flipByte(t, chunkObjects(t, e.state)[0])
	verifyFails(t, e.state, "g1", "big")

	cli(t, e.state, "snapshot", e.mnt, "g2")
	verifyOK(t, e.state, "g2")
	unmountCLI(t, e.mnt)

	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	cli(t, e.state, "snapshot", e.mnt, "g3")
	unmountCLI(t, e.mnt)
	verifyOK(t, e.state, "g2", "g3")
}

// snapshotEntry returns the entry at path in snapshot name and, for a
// regular file, its file object.
func snapshotEntry(t *testing.T, state, name, path string) (object.Entry, *object.File) {
	t.Helper()
	store, err := object.OpenDirStore(statedir.ObjectsDir(state))
	if err != nil {
		t.Fatal(err)
	}
	d, err := refs.Open(statedir.RefsDir(state))
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	var entry *object.Entry
	var file *object.File
	err = object.Walk(context.Background(), store, s.Root.Object, func(p string, e *object.Entry, f *object.File) error {
		if p == path {
			entry, file = e, f
		}
		return nil
	})
	if err != nil || entry == nil {
		t.Fatalf("%s in snapshot %s: %v", path, name, err)
	}
	return *entry, file
}

// objectFile returns where the store keeps object d.
func objectFile(state string, d object.Digest) string {
	h := strings.TrimPrefix(d.String(), "sha256-")
	return filepath.Join(statedir.ObjectsDir(state), h[:2], h[2:])
}

// verify --repair stores a damaged chunk again from the lower the
// snapshot's mount was over, and one written in the mount from the
// mountpoint while it is mounted; a chunk whose bytes are gone from every
// source is named with its path, and verify fails.
func TestVerifyRepair(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	os.MkdirAll(filepath.Join(e.lower, "sub"), 0o755)
	writeRandom(t, filepath.Join(e.lower, "sub", "big"), 3<<20+12345)
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	writeRandom(t, filepath.Join(e.mnt, "written"), 2<<20+1)
	cli(t, e.state, "snapshot", e.mnt, "s")

	sub, _ := snapshotEntry(t, e.state, "s", "sub")
	bigEntry, bigFile := snapshotEntry(t, e.state, "s", "sub/big")
	_, writtenFile := snapshotEntry(t, e.state, "s", "written")
	big, written := bigFile.Chunks, writtenFile.Chunks
	flipByte(t, objectFile(e.state, big[1]))
	// A tree and a file object are found again too, by reading the
	// lower as a snapshot does; what is under them only once they are.
	for _, d := range []object.Digest{written[0], sub.Object, bigEntry.Object} {
		if err := os.Remove(objectFile(e.state, d)); err != nil {
			t.Fatal(err)
		}
	}
	out := cli(t, e.state, "verify", "s", "--repair")
	for _, want := range []string{
		"REPAIRED " + big[1].String() + " (chunk, used by sub/big) from lower " + e.lower,
		"REPAIRED " + sub.Object.String() + " (tree, used by sub) from lower " + e.lower,
		"REPAIRED " + bigEntry.Object.String() + " (file object, used by sub/big) from lower " + e.lower,
		"REPAIRED " + written[0].String() + " (chunk, used by written) from mount " + e.mnt,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify --repair does not say %q: %s", want, out)
		}
	}
	verifyOK(t, e.state, "s")
	unmountCLI(t, e.mnt)

	// The lower changed since: its bytes are gone.
	writeRandom(t, filepath.Join(e.lower, "sub", "big"), 3<<20+12345)
	flipByte(t, objectFile(e.state, big[0]))
	out = verifyFails(t, e.state, "s", big[0].String(), "--repair")
	if !strings.Contains(out, "NOT REPAIRED") || !strings.Contains(out, "sub/big") {
		t.Errorf("verify --repair does not name the path of what it could not repair: %s", out)
	}
	verifyFails(t, e.state, "s", "sub/big")

	// Bad input.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--remote", "127.0.0.1:1"}, "--remote of a master applies only with --repair"},
		{[]string{"--repair", "--token-file", "/etc/hostname"}, "--token-file applies only with --remote"},
		{[]string{"--repair", "--remote", "nohostport"}, "HOST:PORT"},
		{[]string{"--repair", "--remote", "127.0.0.1:1", "--token-file", "/no/such/file"}, "/no/such/file"},
	} {
		if out, code := run(t, append([]string{"--state", e.state, "verify", "s"}, c.args...)...); code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("verify %v: exit %d, want an error saying %q: %s", c.args, code, c.want, out)
		}
	}
}

// verify --repair --remote fetches a damaged chunk of a worker's snapshot
// from the master again; without the master nothing has it, and with a
// master that is down verify says so and fails.
func TestVerifyRepairRemote(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	writeRandom(t, filepath.Join(e.lower, "big"), 2<<20+7)
	addr := startServe(t, e.lower)
	cli(t, e.state, "mount", e.mnt, "--remote", addr)
	cli(t, e.state, "snapshot", e.mnt, "s")
	unmountCLI(t, e.mnt)

	_, f := snapshotEntry(t, e.state, "s", "big")
	// The chunks came through the worker's cache: they are in its packs.
	objecttest.DamageFile(t, statedir.ObjectsDir(e.state), f.Chunks[1])
	verifyFails(t, e.state, "s", f.Chunks[1].String(), "--repair")
	out := cli(t, e.state, "verify", "s", "--repair", "--remote", addr)
	if want := "REPAIRED " + f.Chunks[1].String() + " (chunk, used by big) from master " + addr; !strings.Contains(out, want) {
		t.Errorf("verify --repair --remote does not say %q: %s", want, out)
	}
	verifyOK(t, e.state, "s")

	// A master that does not answer.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()
	store, err := object.OpenDirStore(statedir.ObjectsDir(e.state))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Remove(f.Chunks[0]); err != nil {
		t.Fatal(err)
	}
	verifyFails(t, e.state, "s", "master unreachable", "--repair", "--remote", down, "--io-timeout", "2s")
}
