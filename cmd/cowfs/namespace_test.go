package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// newMountpoint makes directory d, to be unmounted in cleanup.
func newMountpoint(t *testing.T, d string) string {
	t.Helper()
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, d)
	return d
}

// readIn returns file name of dir, or the error reading it gave.
func readIn(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// The master serves its export and what workers pushed, not a snapshot
// its operator took of a mount over another tree, unless serve
// --serve-snapshots says so; a pushed name and the master's own are two
// snapshots, each restored by its own name.
func TestServeOnlyExport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := t.TempDir()
	newMnt := func(name string) string { return newMountpoint(t, filepath.Join(base, name)) }

	// On the master: a mount over a directory outside --root, and its
	// snapshots.
	mstate := filepath.Join(base, "master-state")
	secret := filepath.Join(base, "secret")
	os.Mkdir(secret, 0o700)
	os.WriteFile(filepath.Join(secret, "key"), []byte("top secret"), 0o600)
	smnt := newMnt("secret-mnt")
	if out, code := run(t, "--state", mstate, "mount", smnt, "--lower", secret); code != 0 {
		t.Fatalf("mount: %s", out)
	}
	defer run(t, "unmount", smnt)
	for _, name := range []string{"priv", "priv2"} {
		if out, code := run(t, "--state", mstate, "snapshot", smnt, name); code != 0 {
			t.Fatalf("snapshot %s: %s", name, out)
		}
	}
	addr := startServe(t, e.lower, "--state", mstate)

	other := filepath.Join(base, "other-state")
	m2 := newMnt("m2")
	out, code := run(t, "--state", other, "restore", "priv", m2, "--remote", addr)
	if code == 0 || !strings.Contains(out, "no snapshot priv on the master") {
		run(t, "unmount", m2)
		t.Fatalf("restore --remote of the master's own snapshot of a tree outside --root: exit %d: %s", code, out)
	}

	// A worker pushes priv, and the master snapshots as ckpt after a
	// worker pushed ckpt.
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--remote", addr); code != 0 {
		t.Fatalf("mount --remote: %s", out)
	}
	defer run(t, "unmount", e.mnt)
	os.WriteFile(filepath.Join(e.mnt, "mine"), []byte("pushed by a worker"), 0o644)
	for _, name := range []string{"priv", "ckpt"} {
		if out, code := run(t, "--state", e.state, "snapshot", e.mnt, name, "--push"); code != 0 || !strings.Contains(out, "pushed "+name) {
			t.Fatalf("snapshot %s --push: exit %d: %s", name, code, out)
		}
	}
	if out, code := run(t, "--state", mstate, "snapshot", smnt, "ckpt"); code != 0 {
		t.Fatalf("the master's own snapshot of a name a worker pushed: exit %d: %s", code, out)
	}
	if out, code := run(t, "--state", other, "restore", "priv", m2, "--remote", addr); code != 0 {
		t.Fatalf("restore --remote of the pushed priv: %s", out)
	}
	if got, key := readIn(m2, "mine"), readIn(m2, "key"); got != "pushed by a worker" || key == "top secret" {
		t.Errorf("restore --remote priv: mine %q, key %q", got, key)
	}
	run(t, "unmount", m2)

	// On the master each name restores its own, and snapshots lists both.
	out, code = run(t, "--state", mstate, "snapshots")
	for _, name := range []string{"priv", "priv2", "ckpt", "pushed/priv", "pushed/ckpt"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` `).MatchString(out) {
			t.Errorf("snapshots on the master: no %s: exit %d: %s", name, code, out)
		}
	}
	for name, want := range map[string][2]string{"ckpt": {"key", "top secret"}, "pushed/ckpt": {"mine", "pushed by a worker"}} {
		m := newMnt("local-" + strings.ReplaceAll(name, "/", "-"))
		if out, code := run(t, "--state", mstate, "restore", name, m); code != 0 {
			t.Fatalf("restore %s on the master: %s", name, out)
		}
		if got := readIn(m, want[0]); got != want[1] {
			t.Errorf("restore %s on the master: %s %q, want %q", name, want[0], got, want[1])
		}
		run(t, "unmount", m)
	}
	if out, code := run(t, "--state", mstate, "verify", "pushed/priv"); code != 0 {
		t.Errorf("verify pushed/priv: %s", out)
	}

	// --serve-snapshots serves the master's own too; a name both hold is
	// the pushed one's, and a push may take neither.
	addr2 := startServe(t, e.lower, "--state", mstate, "--serve-snapshots")
	if out, code := run(t, "--state", other, "restore", "priv2", m2, "--remote", addr2); code != 0 {
		t.Fatalf("restore --remote of the master's own priv2 with --serve-snapshots: %s", out)
	}
	if got := readIn(m2, "key"); got != "top secret" {
		t.Errorf("priv2 with --serve-snapshots: key %q", got)
	}
	run(t, "unmount", m2)
	if out, code := run(t, "--state", other, "restore", "ckpt", m2, "--remote", addr2); code != 0 {
		t.Fatalf("restore --remote ckpt with --serve-snapshots: %s", out)
	}
	if got := readIn(m2, "mine"); got != "pushed by a worker" {
		t.Errorf("ckpt, held by both, with --serve-snapshots: mine %q, want the pushed one's", got)
	}
	run(t, "unmount", m2)
	w2 := newMnt("w2")
	w2state := filepath.Join(base, "w2-state")
	if out, code := run(t, "--state", w2state, "mount", w2, "--remote", addr2); code != 0 {
		t.Fatalf("mount --remote: %s", out)
	}
	defer run(t, "unmount", w2)
	for _, name := range []string{"priv2", "priv"} {
		if out, code := run(t, "--state", w2state, "snapshot", w2, name, "--push"); code == 0 || !strings.Contains(out, "exists on the master") {
			t.Errorf("push of %s, a name taken on the master: exit %d: %s", name, code, out)
		}
	}
	if out, _ := run(t, "serve", "--help"); !strings.Contains(out, "--serve-snapshots") || !strings.Contains(out, "outside DIR") {
		t.Errorf("serve --help says nothing of --serve-snapshots exposing trees outside DIR: %s", out)
	}
}
