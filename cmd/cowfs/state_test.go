package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkPrivate fails unless every directory of the state directory is
// closed to group and other, every stored object is 0400, and every
// other file of cowfs's own is 0600 at most. What lies in an upper keeps
// the modes the workspace gave it, so uppers are not looked into.
func checkPrivate(t *testing.T, state string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(state, p)
		mode := info.Mode()
		switch {
		case d.IsDir() && d.Name() == "upper":
			// Its root looks as the lower's root does; the
			// directory holding it is private.
			return filepath.SkipDir
		case d.IsDir() && mode.Perm()&0o077 != 0:
			t.Errorf("directory %s has mode %v", rel, mode)
		case d.IsDir():
		case strings.HasPrefix(rel, "objects/") && len(filepath.Base(filepath.Dir(rel))) == 2 && mode.Perm() != 0o400:
			t.Errorf("object %s has mode %v, want 0400", rel, mode)
		case mode.Perm()&0o077 != 0 && !strings.Contains(rel, "/meta/"):
			t.Errorf("file %s has mode %v", rel, mode)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no state directory at %s", state)
	}
}

// Every command that makes a state directory makes it private: stored
// objects hold the bytes of files that may be readable by their owner
// only, and the state directory was 0755 with objects 0444.
func TestStatePrivate(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	for _, c := range []string{"gc", "snapshots"} {
		state := filepath.Join(base, c)
		cli(t, state, c)
		checkPrivate(t, state)
	}

	export := t.TempDir()
	if err := os.WriteFile(filepath.Join(export, "secret"), []byte("only mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	served := filepath.Join(base, "served")
	addr := startServe(t, export, "--state", served)
	worker := newEnv(t)
	cli(t, worker.state, "mount", worker.mnt, "--remote", addr)
	t.Cleanup(func() { unmountCLI(t, worker.mnt) })
	if b, err := os.ReadFile(filepath.Join(worker.mnt, "secret")); err != nil || string(b) != "only mine\n" {
		t.Fatalf("read through the remote mount: %q, %v", b, err)
	}
	checkPrivate(t, served)
	checkPrivate(t, worker.state)

	e := newEnv(t)
	if err := os.WriteFile(filepath.Join(e.lower, "secret"), []byte("only mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	t.Cleanup(func() { unmountCLI(t, e.mnt) })
	if err := os.WriteFile(filepath.Join(e.mnt, "new"), []byte("also mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, e.state, "snapshot", e.mnt, "s1")
	cli(t, e.state, "gc")
	checkPrivate(t, e.state)
}

// A state directory open to others is made private by the first command
// that uses it, which says so; one that belongs to another user is
// refused.
func TestStateTightened(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := os.Mkdir(e.state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.state, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	out := cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	t.Cleanup(func() { unmountCLI(t, e.mnt) })
	if !strings.Contains(out, "0700") || !strings.Contains(out, e.state) {
		t.Errorf("mount did not say it made %s private: %q", e.state, out)
	}
	if st, err := os.Stat(e.state); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("state directory after mount: %v, %v", st.Mode(), err)
	}

	other := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, "--state", other, "snapshots")
	if code == 0 || !strings.Contains(out, "belongs to uid 65534") {
		t.Errorf("a state directory of another user: exit %d, %q", code, out)
	}
}
