package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// cowfs --version and cowfs version say the same: the version, and the
// Go it was built with.
func TestVersionFlag(t *testing.T) {
	flag, code := run(t, "--version")
	if code != 0 {
		t.Fatalf("--version: exit %d: %s", code, flag)
	}
	cmd, code := run(t, "version")
	if code != 0 {
		t.Fatalf("version: exit %d: %s", code, cmd)
	}
	if flag != cmd {
		t.Errorf("--version says %q, version says %q", flag, cmd)
	}
	if !strings.HasPrefix(flag, "cowfs ") || !strings.Contains(flag, runtime.Version()) {
		t.Errorf("--version: %q, want cowfs VERSION with %s", flag, runtime.Version())
	}
}

// Without -ldflags the version comes from the build info go build
// records: the module's version, the commit and whether the tree was
// modified.
func TestVersionFromBuildInfo(t *testing.T) {
	stamped := &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261203141419-276969e05b08+dirty"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "276969e05b08ba1b0bcd3d2907f97f7aa853228d"}, {Key: "vcs.modified", Value: "true"},
	}}
	goes := runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	for _, c := range []struct {
		name, ldflags string
		bi            *debug.BuildInfo
		want          string
	}{
		{"vcs stamped", "", stamped, "cowfs v0.0.0-20261203141419-276969e05b08+dirty (commit 276969e05b08, modified; " + goes + ")"},
		{"ldflags win", "v1.2.3", stamped, "cowfs v1.2.3 (commit 276969e05b08, modified; " + goes + ")"},
		{"not stamped", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "cowfs devel (" + goes + ")"},
		{"no build info", "", nil, "cowfs devel (" + goes + ")"},
	} {
		if got := versionFrom(c.ldflags, c.bi); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// A version given with -ldflags wins over the build info.
func TestVersionLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cowfs again")
	}
	b := filepath.Join(t.TempDir(), "cowfs")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version=v9.8.7", "-o", b, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v: %s", err, out)
	}
	out, err := exec.CommandContext(ctx, b, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "cowfs v9.8.7 ") {
		t.Fatalf("--version of a build with -X main.version=v9.8.7: %q, %v", out, err)
	}
}
