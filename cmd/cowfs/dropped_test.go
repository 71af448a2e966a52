package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A remount of a version the master no longer keeps fails with a message
// that says so and what to do, unless this machine holds all of the
// version: then it mounts and logs a warning.
func TestRemountDroppedVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mstate := t.TempDir()
	addr := startServe(t, e.lower, "--keep-versions", "1", "--state", mstate)
	whole := filepath.Join(t.TempDir(), "whole")
	os.Mkdir(whole, 0o755)
	unmountOnCleanup(t, whole)
	wholeState := t.TempDir()

	// e.mnt reads nothing but the root; whole, on another machine (state
	// directory), reads every file.
	for mnt, state := range map[string]string{e.mnt: e.state, whole: wholeState} {
		if out, code := run(t, "--state", state, "mount", mnt, "--remote", addr); code != 0 {
			t.Fatalf("mount %s: exit %d: %s", mnt, code, out)
		}
	}
	if _, err := os.ReadFile(filepath.Join(whole, "crawlab_project/spiders/quotes.py")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(whole, "run.sh")); err != nil {
		t.Fatal(err)
	}
	for _, mnt := range []string{e.mnt, whole} {
		if out, code := run(t, "unmount", mnt); code != 0 {
			t.Fatalf("unmount %s: exit %d: %s", mnt, code, out)
		}
	}

	// A new version on the master (a mount of another mountpoint asks
	// for it), which drops the old one; gc removes its objects.
	os.WriteFile(filepath.Join(e.lower, "run.sh"), []byte("#!/bin/sh\necho ran again\n"), 0o755)
	other := filepath.Join(t.TempDir(), "other")
	os.Mkdir(other, 0o755)
	unmountOnCleanup(t, other)
	if out, code := run(t, "--state", t.TempDir(), "mount", other, "--remote", addr); code != 0 {
		t.Fatalf("mount of the new version: exit %d: %s", code, out)
	}
	run(t, "unmount", other)
	// A packed object's age is its pack's last write (0056, 0068), and
	// the master wrote the new version into the pack that holds the old
	// one a moment ago: as if that was an hour ago.
	packs, _ := filepath.Glob(filepath.Join(mstate, "objects", "packs", "*.pack"))
	hourAgo := time.Now().Add(-time.Hour)
	for _, p := range packs {
		if err := os.Chtimes(p, hourAgo, hourAgo); err != nil {
			t.Fatal(err)
		}
	}
	if out, code := run(t, "--state", mstate, "gc", "--grace", "0"); code != 0 {
		t.Fatalf("gc on the master: exit %d: %s", code, out)
	}

	out, code := run(t, "--state", e.state, "mount", e.mnt, "--remote", addr, "--io-timeout", "5s")
	if code == 0 || mounted(t, e.mnt) {
		t.Errorf("remount of a dropped version, not cached: exit %d, mounted %v: %s", code, mounted(t, e.mnt), out)
		run(t, "unmount", e.mnt)
	}
	t.Log(out)
	if !strings.Contains(out, "no longer keeps") || !strings.Contains(out, "--keep-versions") {
		t.Errorf("remount of a dropped version: the message does not say the master dropped it: %s", out)
	}

	out, code = run(t, "--state", wholeState, "mount", whole, "--remote", addr, "--io-timeout", "5s")
	if code != 0 {
		t.Fatalf("remount of a dropped version held here whole: exit %d: %s", code, out)
	}
	defer run(t, "unmount", whole)
	if b, err := os.ReadFile(filepath.Join(whole, "run.sh")); err != nil || string(b) != "#!/bin/sh\necho ran\n" {
		t.Errorf("the version held here: %q, %v", b, err)
	}
	logs, _ := filepath.Glob(filepath.Join(wholeState, "mounts", "*", "mount.log"))
	var warned bool
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		warned = warned || strings.Contains(string(b), "no longer keeps")
	}
	if !warned {
		t.Errorf("no warning in %v that the master dropped the version", logs)
	}
}
