package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// mountSource returns the source /proc/self/mountinfo shows for the mount
// at mnt.
func mountSource(t *testing.T, mnt string) string {
	t.Helper()
	for _, m := range cowfsMounts() {
		if m.dir == mnt {
			return m.source
		}
	}
	t.Fatalf("no cowfs mount at %s in /proc/self/mountinfo", mnt)
	return ""
}

// findmnt tells a spider's workspace, a master's export and a restore
// apart by their source.
func TestMountSources(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addr := startServe(t, e.lower)
	sub := filepath.Join(t.TempDir(), "sub")
	remoteRoot := filepath.Join(t.TempDir(), "restore")
	restored := filepath.Join(t.TempDir(), "restored")
	for _, d := range []string{sub, remoteRoot, restored} {
		os.Mkdir(d, 0o755)
		unmountOnCleanup(t, d)
	}
	cli(t, e.state, "mount", e.mnt, "--remote", addr)
	cli(t, e.state, "snapshot", e.mnt, "ckpt", "--push")
	cli(t, e.state, "mount", sub, "--remote", addr, "--path", "crawlab_project")
	cli(t, e.state, "restore", "ckpt", restored)
	cli(t, t.TempDir(), "restore", "ckpt", remoteRoot, "--remote", addr)
	local := filepath.Join(t.TempDir(), "local")
	os.Mkdir(local, 0o755)
	unmountOnCleanup(t, local)
	cli(t, e.state, "mount", local, "--lower", e.lower)
	for mnt, want := range map[string]string{
		e.mnt:      "cowfs:remote:" + addr,
		sub:        "cowfs:remote:" + addr + "/crawlab_project",
		restored:   "cowfs:restore:ckpt",
		remoteRoot: "cowfs:restore:ckpt@" + addr,
		local:      "cowfs:" + e.lower,
	} {
		if got := mountSource(t, mnt); got != want {
			t.Errorf("source of %s: %q, want %q", mnt, got, want)
		}
	}

	// Mountpoints complete from the cowfs mounts, snapshot names from
	// the state's refs.
	complete := func(args ...string) []string {
		t.Helper()
		out := cli(t, e.state, append([]string{"__complete"}, args...)...)
		// The candidates, a line each, then cobra's directive (":4"),
		// then (on stderr) what it means.
		var got []string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, ":") {
				break
			}
			got = append(got, l)
		}
		return got
	}
	for _, c := range [][]string{{"snapshot", ""}, {"status", ""}, {"unmount", ""}} {
		if got := complete(c...); !slices.Contains(got, e.mnt) || !slices.Contains(got, restored) || slices.Contains(got, e.lower) {
			t.Errorf("complete %v: %q, want the cowfs mounts", c, got)
		}
	}
	cli(t, e.state, "snapshot", local, "other")
	for _, c := range [][]string{{"verify", ""}, {"restore", ""}, {"push", ""}, {"snapshots", "rm", ""}, {"snapshots", "diff", "ckpt", ""}} {
		if got := complete(c...); !slices.Contains(got, "ckpt") || !slices.Contains(got, "other") {
			t.Errorf("complete %v: %q, want ckpt and other", c, got)
		}
	}
	if got := complete("verify", "ot"); !slices.Equal(got, []string{"other"}) {
		t.Errorf("complete verify ot: %q", got)
	}
	if got := complete("snapshot", e.mnt, ""); len(got) != 0 {
		t.Errorf("complete snapshot MNT (a new name): %q, want nothing", got)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if out := cli(t, e.state, "completion", sh); !strings.Contains(out, "__complete") {
			t.Errorf("completion %s: %.200s", sh, out)
		}
	}
	for _, m := range []string{local, remoteRoot, restored, sub, e.mnt} {
		unmountCLI(t, m)
	}
}
