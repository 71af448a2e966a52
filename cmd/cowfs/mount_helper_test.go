package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// TestMountHelperCoversEveryFlag checks that every flag of cowfs mount has
// a mount(8) -o spelling, or is listed as having none with the reason:
// a new flag cannot be forgotten in fstab. Each spelling, given with a
// value, must set exactly its flag.
func TestMountHelperCoversEveryFlag(t *testing.T) {
	cmd := newMountCmd(&globals{})
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		if why, ok := mountFlagsWithoutOption[fl.Name]; ok {
			if why == "" {
				t.Errorf("--%s is listed without a reason", fl.Name)
			}
			return
		}
		opt := mountOptionOf(fl.Name)
		if ignoredMountOption(opt) {
			t.Errorf("--%s: its -o spelling %q is one mount(8) options ignored", fl.Name, opt)
			return
		}
		val := "1"
		switch fl.Value.Type() {
		case "bool":
			val = ""
		case "duration":
			val = "5s"
		}
		o := opt
		if val != "" {
			o += "=" + val
		}
		c := newMountCmd(&globals{})
		args, err := helperArgs(c, &globals{}, []string{o})
		if err != nil {
			t.Errorf("--%s as -o %s: %v", fl.Name, o, err)
			return
		}
		if err := c.Flags().Parse(args); err != nil {
			t.Errorf("--%s as -o %s: %v", fl.Name, o, err)
			return
		}
		c.Flags().Visit(func(set *pflag.Flag) {
			if set.Name != fl.Name {
				t.Errorf("-o %s set --%s, not --%s", o, set.Name, fl.Name)
			}
		})
		if !c.Flags().Changed(fl.Name) {
			t.Errorf("-o %s did not set --%s", o, fl.Name)
		}
	})
}

// helperMount runs mount.fuse.cowfs as mount(8) does, with fstab's
// options, and returns its output and error.
func helperMount(t *testing.T, dev, mnt, opts string) (string, error) {
	t.Helper()
	helper := filepath.Join(t.TempDir(), "mount.fuse.cowfs")
	if err := os.Symlink(bin, helper); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, helper, dev, mnt, "-o", opts).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("mount.fuse.cowfs %s: timed out", opts)
	}
	return string(out), err
}

// TestMountHelperFstabRemote mounts a master's export from an fstab line
// (remote, path, token, cache size, io timeout, prefetch, state, ro and
// the options mount(8) and systemd use), and refuses unknown options
// without mounting.
func TestMountHelperFstabRemote(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startServe(t, filepath.Dir(e.lower), "--token-file", tok)
	logFile := filepath.Join(t.TempDir(), "ws.log")

	// cowfs  /mnt/ws  fuse.cowfs  remote=...,path=lower,...  0 0
	opts := strings.Join([]string{"remote=" + addr, "path=lower", "token_file=" + tok, "cache_size=1.5G",
		"io_timeout=30s", "prefetch", "readahead=512K", "reserve=32M", "state=" + e.state, "log_level=info",
		"log_format=json", "log_file=" + logFile, "umask=022", "ro",
		"_netdev", "nofail", "noauto", "auto", "defaults", "user", "x-systemd.automount", "x-systemd.requires=network-online.target", "x-gvfs-hide"}, ",")
	if out, err := helperMount(t, "cowfs", e.mnt, opts); err != nil {
		t.Fatalf("mount.fuse.cowfs -o %s: %v: %s", opts, err, out)
	}
	if got, err := os.ReadFile(filepath.Join(e.mnt, "crawlab_project", "spiders", "quotes.py")); err != nil || string(got) != "print('q')\n" {
		t.Fatalf("a file of the export through the mount: %q, %v", got, err)
	}
	// ro: the kernel refuses writes.
	err := os.WriteFile(filepath.Join(e.mnt, "new"), []byte("n"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("write to a ro mount: %v, want EROFS", err)
	}
	out, code := run(t, "--state", e.state, "status", e.mnt, "--json")
	if code != 0 || !strings.Contains(out, addr) {
		t.Errorf("status of the fstab mount: exit %d: %s", code, out)
	}
	if b, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(b), `"level":"INFO","msg":"mounted"`) {
		t.Errorf("log_file, log_format=json: %v: %.300s", err, b)
	}
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: %s", out)
	}

	// Unknown options: all named, nothing mounted.
	out, err2 := helperMount(t, "cowfs", e.mnt, "remote="+addr+",token_file="+tok+",state="+e.state+",bogus=1,cache_szie=2G,nofail")
	if err2 == nil || !strings.Contains(out, "bogus=1") || !strings.Contains(out, "cache_szie=2G") || strings.Contains(out, "nofail") {
		t.Errorf("unknown options: %v: %s", err2, out)
	}
	if mounted(t, e.mnt) {
		t.Error("mounted despite unknown options")
	}
	// A value the flag refuses: the flag's own error.
	out, err2 = helperMount(t, "cowfs", e.mnt, "lowerdir="+e.lower+",state="+e.state+",cache_size=lots")
	if err2 == nil || !strings.Contains(out, "cache") || mounted(t, e.mnt) {
		t.Errorf("a bad value: %v: %s", err2, out)
	}
}

// TestMountHelperLocalOptions mounts a local lower through the helper with
// flags that had no -o spelling before: writeback_cache, umask,
// allow_other, and ro.
func TestMountHelperLocalOptions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	out, err := helperMount(t, "cowfs", e.mnt, "lowerdir="+e.lower+",state="+e.state+",writeback_cache,umask=077,allow_other,ro,_netdev")
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	fi, err := os.Stat(filepath.Join(e.mnt, "run.sh"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("run.sh with umask=077: %v, %v", fi, err)
	}
	if err := os.Mkdir(filepath.Join(e.mnt, "d"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Errorf("mkdir in a ro mount: %v, want EROFS", err)
	}
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: %s", out)
	}
}
