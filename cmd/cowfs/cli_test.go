package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// bin is the cowfs binary built once for all tests in this package.
var bin string

func TestMain(m *testing.M) {
	dir, cached := binDir()
	bin = filepath.Join(dir, "cowfs")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build cowfs: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	s3test.StopShared()
	if !cached {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// binDir returns where TestMain builds the binaries the tests run: a
// directory in the user's cache kept for this source directory, where go
// build finds the binary of unchanged sources up to date and links
// nothing, or else a temporary one (cached false) for TestMain to remove.
// Keyed by the source directory, so that worktrees of the repository
// tested at once do not replace each other's binaries.
func binDir() (dir string, cached bool) {
	if cache, err := os.UserCacheDir(); err == nil {
		if src, err := os.Getwd(); err == nil {
			sum := sha256.Sum256([]byte(src))
			dir = filepath.Join(cache, "cowfs", "test-bin", hex.EncodeToString(sum[:8]))
			if err := os.MkdirAll(dir, 0o755); err == nil {
				return dir, true
			}
		}
	}
	dir, err := os.MkdirTemp("", "cowfs-cli")
	if err != nil {
		panic(err)
	}
	return dir, false
}

// run runs cowfs with a deadline and returns its combined output and
// exit code.
func run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return runEnv(t, nil, args...)
}

// runEnv is run with env ("KEY=value") added to the test's environment:
// t.Setenv is not allowed in a parallel test.
func runEnv(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("cowfs %v: timed out", args)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("cowfs %v: %v", args, err)
	}
	return out.String(), code
}

func mounted(t *testing.T, dir string) bool {
	ok, err := fs.IsMountpoint(dir)
	if err != nil {
		t.Fatalf("is %s mounted: %v", dir, err)
	}
	return ok
}

// unmountOnCleanup makes sure dir is not left mounted, even when the
// test fails, nor its mount's record of its state (mountstate.go), which
// a mount process killed by the test leaves.
func unmountOnCleanup(t *testing.T, dir string) {
	t.Cleanup(func() {
		if ok, _ := fs.IsMountpoint(dir); ok {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
		os.Remove(stateRecord(dir))
	})
}

type env struct {
	state, lower, mnt string
}

func newEnv(t *testing.T) env {
	base := t.TempDir()
	e := env{state: filepath.Join(base, "state"), lower: filepath.Join(base, "lower"), mnt: filepath.Join(base, "mnt")}
	for _, d := range []string{e.lower, e.mnt, filepath.Join(e.lower, "crawlab_project", "spiders")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.lower, "crawlab_project", "spiders", "quotes.py"), []byte("print('q')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.lower, "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, e.mnt)
	return e
}

func TestMountUnmount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower)
	if code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	// Returning 0 means the mount serves requests now.
	got, err := os.ReadFile(filepath.Join(e.mnt, "crawlab_project", "spiders", "quotes.py"))
	if err != nil || string(got) != "print('q')\n" {
		t.Fatalf("nested file through the mount: %q, %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ran, err := exec.CommandContext(ctx, filepath.Join(e.mnt, "run.sh")).Output()
	if err != nil || string(ran) != "ran\n" {
		t.Fatalf("run.sh from the mount: %q, %v", ran, err)
	}
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: exit %d: %s", code, out)
	}
	if mounted(t, e.mnt) {
		t.Fatal("still mounted after unmount")
	}
}

// TestMountBadInput checks that each wrong invocation exits non-zero with a
// message naming the problem, and leaves nothing mounted.
func TestMountBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	nonEmpty := t.TempDir()
	os.WriteFile(filepath.Join(nonEmpty, "x"), nil, 0o644)
	unmountOnCleanup(t, nonEmpty)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no lower flag", []string{"mount", e.mnt}, "no lower: give --lower DIR or --remote ADDR"},
		{"missing lower", []string{"mount", e.mnt, "--lower", "/nonexistent/lower"}, "lower directory"},
		{"lower is a file", []string{"mount", e.mnt, "--lower", file}, "not a directory"},
		{"missing mountpoint", []string{"mount", "/nonexistent/mnt", "--lower", e.lower}, "mountpoint"},
		{"mountpoint is a file", []string{"mount", file, "--lower", e.lower}, "not a directory"},
		{"mountpoint not empty", []string{"mount", nonEmpty, "--lower", e.lower}, "not empty"},
		{"work without upper", []string{"mount", e.mnt, "--lower", e.lower, "--work", t.TempDir()}, "without an upper"},
		{"readahead not a size", []string{"mount", e.mnt, "--lower", e.lower, "--readahead", "lots"}, "--readahead"},
		{"writeback with passthrough", []string{"mount", e.mnt, "--lower", e.lower, "--writeback-cache", "--passthrough"}, "cannot be combined"},
		{"readahead too small", []string{"mount", e.mnt, "--lower", e.lower, "--readahead", "1K"}, "between 4K and 1G"},
		{"reserve not a size", []string{"mount", e.mnt, "--lower", e.lower, "--reserve", "some"}, "--reserve"},
		{"reserve too small", []string{"mount", e.mnt, "--lower", e.lower, "--reserve", "1M"}, "at least 16M"},
		{"remote flag without remote", []string{"mount", e.mnt, "--lower", e.lower, "--token-file", file}, "--token-file applies only with --remote"},
		{"cache size without remote", []string{"mount", e.mnt, "--lower", e.lower, "--cache-size", "1G"}, "--cache-size applies only with --remote"},
		{"dir prefetch without remote", []string{"mount", e.mnt, "--lower", e.lower, "--no-dir-prefetch"}, "--no-dir-prefetch applies only with --remote"},
		{"learned prefetch without remote", []string{"mount", e.mnt, "--lower", e.lower, "--no-learned-prefetch"}, "--no-learned-prefetch applies only with --remote"},
		{"remote without port", []string{"mount", e.mnt, "--remote", "127.0.0.1"}, "want HOST:PORT"},
		{"no args", []string{"mount"}, "accepts 1 arg"},
		{"unmount not mounted", []string{"unmount", e.mnt}, "not mounted"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := run(t, append([]string{"--state", e.state}, c.args...)...)
			if code == 0 {
				t.Fatalf("exit 0, want failure; output: %s", out)
			}
			if !strings.Contains(out, c.want) {
				t.Fatalf("output %q does not say %q", out, c.want)
			}
			if mounted(t, e.mnt) || mounted(t, nonEmpty) {
				t.Fatal("something was mounted")
			}
		})
	}
}

func TestMountAlreadyMounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower); code != 0 {
		t.Fatalf("mount: %s", out)
	}
	out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower)
	if code == 0 || !strings.Contains(out, "already a mountpoint") {
		t.Fatalf("second mount: exit %d, %q", code, out)
	}
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: %s", out)
	}
}

// TestSignalUnmounts checks that SIGTERM and SIGINT to a mount process
// unmount cleanly and the process exits 0.
func TestSignalUnmounts(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newEnv(t)
			cmd := exec.Command(bin, "--state", e.state, "mount", e.mnt, "--lower", e.lower, "--foreground")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill() })
			deadline := time.Now().Add(30 * time.Second)
			for !mounted(t, e.mnt) {
				if time.Now().After(deadline) {
					t.Fatalf("not mounted after 30s: %s", out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := os.WriteFile(filepath.Join(e.mnt, "new"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd.Process.Signal(sig)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("mount process: %v: %s", err, out.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("mount process did not exit after %v", sig)
			}
			if mounted(t, e.mnt) {
				t.Fatal("still mounted")
			}
		})
	}
}

// TestMountHelper runs the mount(8) helper the way mount -t fuse.cowfs
// does, with overlayfs-style options and an upperdir that already holds
// files.
func TestMountHelper(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := t.TempDir()
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	os.MkdirAll(upper, 0o755)
	os.MkdirAll(work, 0o755)
	if err := os.WriteFile(filepath.Join(upper, "already-there"), []byte("u"), 0o644); err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(base, "mount.fuse.cowfs")
	if err := os.Symlink(bin, helper); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, helper, "cowfs", e.mnt, "-o",
		"rw,lowerdir="+e.lower+",upperdir="+upper+",workdir="+work).CombinedOutput()
	if err != nil {
		t.Fatalf("mount helper: %v: %s", err, out)
	}
	for _, name := range []string{"already-there", "run.sh"} {
		if _, err := os.Stat(filepath.Join(e.mnt, name)); err != nil {
			t.Errorf("%s through the mount: %v", name, err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.mnt, "new"), []byte("n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: %s", out)
	}
	// The upperdir holds the new file at its path.
	if got, err := os.ReadFile(filepath.Join(upper, "new")); err != nil || string(got) != "n" {
		t.Fatalf("upper/new: %q %v", got, err)
	}

	out, err = exec.CommandContext(ctx, helper, "cowfs", e.mnt, "-o", "upperdir="+upper).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "lowerdir") {
		t.Fatalf("helper without lowerdir: %v %s", err, out)
	}
	out, err = exec.CommandContext(ctx, helper, "cowfs", e.mnt, "-o", "lowerdir="+e.lower+",bogus=1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unknown option") {
		t.Fatalf("helper with unknown option: %v %s", err, out)
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	out, code := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "cowfs ") {
		t.Fatalf("version: %d %q", code, out)
	}
	for _, c := range []string{"mount", "unmount", "version"} {
		out, code := run(t, c, "--help")
		if code != 0 || !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help has no examples: %q", c, out)
		}
	}
}

// A mount whose process was killed is reported as dead, by status and by
// a mount at the same place, with the command that clears it.
func TestDeadMountReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower); code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	unmountOnCleanup(t, e.mnt)
	// A task wrote into the workspace's root: the kernel no longer has
	// the root's attributes cached, so a stat of the mountpoint reaches
	// the dead server and fails with ENOTCONN.
	if err := os.WriteFile(filepath.Join(e.mnt, "items.jl"), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := daemonPid(t, e.mnt)
	syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(20 * time.Second); alive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("mount process alive 20s after SIGKILL")
		}
	}
	if out, _ := run(t, "--state", e.state, "status"); !strings.Contains(out, "dead") || !strings.Contains(out, "cowfs unmount "+e.mnt) {
		t.Errorf("status after the mount process was killed: %q", out)
	}
	// --json lists it too, as dead, for a script to unmount.
	out, code := run(t, "--state", e.state, "status", "--json")
	var st struct {
		Mountpoint string `json:"mountpoint"`
		Dead       bool   `json:"dead"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.Mountpoint != e.mnt || !st.Dead {
		t.Errorf("status --json after the mount process was killed: exit %d, %v: %q", code, err, out)
	}
	if out, code := run(t, "--state", e.state, "status", e.mnt); code == 0 || !strings.Contains(out, "dead") || !strings.Contains(out, "cowfs unmount "+e.mnt) {
		t.Errorf("status of the mount after its process was killed: exit %d, %q", code, out)
	}
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower); code == 0 || !strings.Contains(out, "dead mount") {
		t.Errorf("mount over a dead mount: exit %d, %q", code, out)
	}
	if out, code := run(t, "--state", e.state, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount of a dead mount: exit %d: %s", code, out)
	}
	if mounted(t, e.mnt) {
		t.Fatal("still mounted")
	}
}

// Overlapping directories are refused by the CLI before anything is
// created: an upper and work beneath the mountpoint left the work
// directory there, and every later mount of it failed as not empty.
func TestMountOverlapRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, c := range []struct {
		name        string
		upper, work string
		want        string
	}{
		{"beneath the mountpoint", filepath.Join(e.mnt, "u"), filepath.Join(e.mnt, "w"), "inside the mountpoint"},
		{"upper is the lower", e.lower, filepath.Join(t.TempDir(), "w"), "are the same directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower, "--upper", c.upper, "--work", c.work)
			if code == 0 || !strings.Contains(out, c.want) {
				t.Fatalf("mount with --upper %s --work %s: exit %d, %q", c.upper, c.work, code, out)
			}
			if ents, err := os.ReadDir(e.mnt); err != nil || len(ents) != 0 {
				t.Fatalf("the refused mount left %v in the mountpoint (%v)", ents, err)
			}
			if _, err := os.Stat(c.work); err == nil {
				t.Fatalf("the refused mount created %s", c.work)
			}
		})
	}
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower); code != 0 {
		t.Fatalf("mount after the refused ones: exit %d: %s", code, out)
	}
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: %s", out)
	}
}
