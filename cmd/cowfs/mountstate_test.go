package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// A command given a mountpoint finds the mount's state directory without
// --state: the mount records where its state is, under the mountpoint's
// key, in the runtime directory.
func TestStateFoundFromMount(t *testing.T) {
	e := newEnv(t)
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	if out, code := run(t, "snapshot", e.mnt, "found"); code != 0 || !strings.Contains(out, "snapshot found") {
		t.Fatalf("snapshot without --state: exit %d: %s", code, out)
	}
	if out := cli(t, e.state, "snapshots"); !strings.Contains(out, "found") {
		t.Errorf("the snapshot is not in the mount's state %s: %s", e.state, out)
	}
	// However the mountpoint is spelled.
	rel, err := filepath.Rel("/", e.mnt)
	if err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, "status", "/"+rel+"/"); code != 0 || !strings.Contains(out, e.lower) {
		t.Errorf("status without --state: exit %d: %s", code, out)
	}
	// --state, when given, is the state used.
	if out, code := run(t, "--state", t.TempDir(), "status", e.mnt); code != exitNotFound {
		t.Errorf("status with another --state: exit %d: %s", code, out)
	}
	pid := daemonPid(t, e.mnt)
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: %s", out)
	}
	waitExit(pid, 30e9)
	// Once unmounted, the record is gone: nothing answers.
	if out, code := run(t, "status", e.mnt); code != exitNotFound {
		t.Errorf("status of the unmounted mountpoint: exit %d: %s", code, out)
	}
}
