package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cowfs push sends a local snapshot to a master, again if need be: a
// snapshot whose push failed (or was never asked for) is pushed later,
// through its live mount or straight from the state directory.
func TestPushCommand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("s3cret\n"), 0o600)
	a := startServe(t, e.lower, "--token-file", tok)
	b := startServe(t, e.lower)
	cli(t, e.state, "mount", e.mnt, "--remote", a, "--token-file", tok)
	if err := os.WriteFile(filepath.Join(e.mnt, "crawl.db"), []byte("records 1-100"), 0o644); err != nil {
		t.Fatal(err)
	}
	cli(t, e.state, "snapshot", e.mnt, "ckpt")

	// The push fails: the master given is not there. Nothing was sent,
	// and the exit code says to try again later.
	out, code := run(t, "--state", e.state, "push", "ckpt", "--remote", "127.0.0.1:1", "--io-timeout", "1s")
	if code != exitUnreachable || !strings.Contains(out, "unreachable") {
		t.Fatalf("push to no master: exit %d: %s", code, out)
	}
	// Without --remote: to the mount's own master, through the live
	// mount, which holds the token.
	out = cli(t, e.state, "push", "ckpt")
	if !strings.Contains(out, "pushed ckpt to "+a) {
		t.Errorf("push to the mount's master: %s", out)
	}
	// Again: the master has it all, and the same name for the same
	// snapshot is not an error.
	out = cli(t, e.state, "push", "ckpt", "--json")
	res := jsonLines[struct {
		Name        string `json:"name"`
		Master      string `json:"master"`
		ObjectsSent int    `json:"objects_sent"`
	}](t, out)
	if len(res) != 1 || res[0].Name != "ckpt" || res[0].Master != a || res[0].ObjectsSent != 0 {
		t.Errorf("push again --json: %+v", res)
	}
	unmountCLI(t, e.mnt)

	// Unmounted: to the master the mount was over, named in its state,
	// with the token given now.
	if out, code := run(t, "--state", e.state, "push", "ckpt"); code != exitDenied {
		t.Errorf("push to the recorded master without its token: exit %d: %s", code, out)
	}
	cli(t, e.state, "push", "ckpt", "--token-file", tok)
	// And to any other master.
	out = cli(t, e.state, "push", "ckpt", "--remote", b)
	if !strings.Contains(out, "pushed ckpt to "+b) {
		t.Errorf("push --remote: %s", out)
	}
	other := t.TempDir()
	mnt2 := filepath.Join(t.TempDir(), "resume")
	restoreAt(t, other, "ckpt", mnt2, "--remote", b)
	if got, err := os.ReadFile(filepath.Join(mnt2, "crawl.db")); err != nil || string(got) != "records 1-100" {
		t.Errorf("crawl.db restored from the master pushed to: %q, %v", got, err)
	}
	unmountCLI(t, mnt2)

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"push", "missing", "--remote", b}, exitNotFound, "no such snapshot"},
		{[]string{"push"}, exitUsage, "accepts 1 arg"},
		{[]string{"push", "ckpt", "--remote", "nohost"}, exitUsage, "HOST:PORT"},
		{[]string{"push", "ckpt", "--remote", b, "--io-timeout", "0s"}, exitUsage, "--io-timeout must be positive"},
	} {
		out, code := run(t, append([]string{"--state", e.state}, c.args...)...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("cowfs %v: exit %d, %q; want exit %d saying %q", c.args, code, out, c.code, c.want)
		}
	}
	// A snapshot of a mount over a local directory has no master of its
	// own to go to.
	local := filepath.Join(t.TempDir(), "local")
	os.Mkdir(local, 0o755)
	unmountOnCleanup(t, local)
	cli(t, e.state, "mount", local, "--lower", e.lower)
	cli(t, e.state, "snapshot", local, "loc")
	if out, code := run(t, "--state", e.state, "push", "loc"); code != exitUsage || !strings.Contains(out, "--remote") {
		t.Errorf("push of a local mount's snapshot without --remote: exit %d: %s", code, out)
	}
	unmountCLI(t, local)
}

// A snapshot --push that fails because the master is down says to retry
// with exit 4, through the mount's control socket too, and cowfs push
// sends it once the master is back.
func TestPushRetriedAfterMasterDown(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out --io-timeout with the master down; the full suite runs it")
	}
	e := newEnv(t)
	mstate := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "serve.log")
	addr, stop := serveAt(t, mstate, e.lower, "", logPath)
	cli(t, e.state, "mount", e.mnt, "--remote", addr, "--io-timeout", "10s")
	if err := os.WriteFile(filepath.Join(e.mnt, "crawl.db"), []byte("records 1-100"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A snapshot of a remote mount holds all it references: the
	// worker must have it before the master goes.
	listing(t, e.mnt)
	stop()
	out, code := run(t, "--state", e.state, "snapshot", e.mnt, "ckpt", "--push")
	if code != exitUnreachable || !strings.Contains(out, "cowfs push ckpt") {
		t.Errorf("snapshot --push with the master down: exit %d, want %d naming cowfs push: %s", code, exitUnreachable, out)
	}
	if out, code := run(t, "--state", e.state, "push", "ckpt"); code != exitUnreachable {
		t.Errorf("push with the master down: exit %d, want %d: %s", code, exitUnreachable, out)
	}
	serveAt(t, mstate, e.lower, addr, logPath)
	if out := cli(t, e.state, "push", "ckpt"); !strings.Contains(out, "pushed ckpt to "+addr) {
		t.Errorf("push once the master is back: %s", out)
	}
	if out := cli(t, mstate, "snapshots"); !strings.Contains(out, "pushed/ckpt") {
		t.Errorf("the master's snapshots after the push: %s", out)
	}
	unmountCLI(t, e.mnt)
}
