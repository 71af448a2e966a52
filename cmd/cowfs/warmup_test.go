package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cowfs/cowfs/cow/object"
)

// cowfs warmup fetches a subtree of a remote mount and prints its progress
// as JSON lines when its output is no terminal; bad PATHs and a MNT that
// is no mount are refused with a message.
func TestWarmupCLI(t *testing.T) {
	e := newEnv(t)
	addr := startServe(t, e.lower, "--state", t.TempDir())
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--remote", addr); code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	defer run(t, "unmount", e.mnt)

	out, code := run(t, "--state", e.state, "warmup", e.mnt, filepath.Join(e.mnt, "crawlab_project"))
	if code != 0 {
		t.Fatalf("warmup: exit %d: %s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var last object.PrefetchProgress
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("warmup's last line is no JSON: %v: %s", err, out)
	}
	if last.State != "done" || last.Files != 1 || last.Bytes != int64(len("print('q')\n")) {
		t.Fatalf("warmup's last line: %+v", last)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{e.mnt, "/etc"}, "not inside"},
		{[]string{e.mnt, "../x"}, "not inside"},
		{[]string{e.mnt, "crawlab_project/nope"}, "crawlab_project/nope"},
		{[]string{t.TempDir()}, "not a cowfs mount"},
		{nil, "requires at least 1 arg"},
	} {
		out, code := run(t, append([]string{"--state", e.state, "warmup"}, c.args...)...)
		if code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("warmup %q: exit %d: %s; want an error saying %q", c.args, code, out, c.want)
		}
	}
}
