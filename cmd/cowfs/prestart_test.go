package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/fs"
)

// processesWith returns the command lines of the processes whose
// arguments include s.
func processesWith(t *testing.T, s string) []string {
	t.Helper()
	paths, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		for _, a := range args {
			if strings.Contains(a, s) {
				found = append(found, strings.Join(args, " "))
				break
			}
		}
	}
	return found
}

// A background mount is served by the process started while the command
// was still initializing (internal/prestart), which logs where the
// command says; and a command that ends without a mount to hand over
// leaves no process behind it.
func TestMountProcessStartedAhead(t *testing.T) {
	e := newEnv(t)
	unmountOnCleanup(t, e.mnt)
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower); code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	procs := processesWith(t, e.mnt)
	if len(procs) != 1 {
		t.Fatalf("processes naming %s: %q, want the mount's only", e.mnt, procs)
	}
	if !strings.HasSuffix(procs[0], " --lower "+e.lower+" --foreground") {
		t.Errorf("the mount process's arguments are %q: not the command's own with --foreground, as one started ahead has", procs[0])
	}
	logs, _ := filepath.Glob(filepath.Join(e.state, "mounts", "*", "mount.log"))
	if len(logs) != 1 {
		t.Fatalf("mount logs: %q, want one", logs)
	}
	if b, _ := os.ReadFile(logs[0]); !strings.Contains(string(b), "msg=mounted") {
		t.Errorf("%s does not say the workspace mounted:\n%s", logs[0], b)
	}
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: exit %d: %s", code, out)
	}

	for _, c := range []struct {
		name string
		args []string
		code int
	}{
		{"no such lower", []string{"--lower", filepath.Join(e.lower, "missing")}, 1},
		{"a flag mistyped", []string{"--lower", e.lower, "--read-onyl"}, 2},
	} {
		mnt := filepath.Join(t.TempDir(), "mnt")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		unmountOnCleanup(t, mnt)
		out, code := run(t, append([]string{"--state", e.state, "mount", mnt}, c.args...)...)
		if code != c.code {
			t.Errorf("%s: exit %d, want %d: %s", c.name, code, c.code, out)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(processesWith(t, mnt)) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if left := processesWith(t, mnt); len(left) > 0 {
			t.Errorf("%s: processes left after the command ended: %q", c.name, left)
		}
	}
}

// A mount process that is never handed a mount (the command refused its
// line) changes nothing, not even the state directory's mode, which the
// command itself tightens and reports, and exits 0 once the spec pipe
// closes empty.
func TestMountProcessNotHandedOver(t *testing.T) {
	e := newEnv(t)
	if err := os.Mkdir(e.state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.state, 0o755); err != nil {
		t.Fatal(err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer readyR.Close()
	specR, specW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--state", e.state, "mount", e.mnt, "--lower", e.lower, "--foreground")
	cmd.Env = append(os.Environ(), readyEnv+"=3", specEnv+"=4")
	cmd.ExtraFiles = []*os.File{readyW, specR}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	specR.Close()
	specW.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("mount process handed nothing: %v: %s", err, out.String())
	}
	if st, err := os.Stat(e.state); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("state directory after: %v (%v), want 0755 untouched", st.Mode().Perm(), err)
	}
	if ok, _ := fs.IsMountpoint(e.mnt); ok {
		unix.Unmount(e.mnt, unix.MNT_DETACH)
		t.Errorf("%s mounted by a process handed nothing", e.mnt)
	}
	if out.Len() > 0 {
		t.Errorf("a process handed nothing said: %s", out.String())
	}
}
