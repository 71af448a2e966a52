package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cowfs "github.com/cowfs/cowfs/fs"
)

// chunkObjects returns the stored objects that hold a whole chunk (a blob
// of 1 MiB), in the order the walk finds them.
func chunkObjects(t *testing.T, state string) []string {
	t.Helper()
	var out []string
	dir := cowfs.ObjectsDir(state)
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
