package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startServe runs cowfs serve on a free loopback port until the test ends.
func startServe(t *testing.T, root string, extra ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"--state", t.TempDir(), "serve", "--root", root, "--listen", addr}, extra...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("cowfs serve did not listen on %s", addr)
		}
	}
}

// The walk-through of the README: serve a folder, mount it, run a script.
func TestServeMountRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("s3cret\n"), 0o600)
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("nope\n"), 0o600)
	addr := startServe(t, e.lower, "--token-file", tok)

	out, code := run(t, "--state", e.state, "mount", e.mnt, "--remote", addr, "--token-file", bad)
	if code == 0 || !strings.Contains(out, "refused the token") || mounted(t, e.mnt) {
		t.Errorf("wrong token: exit %d, %q", code, out)
	}
	out, code = run(t, "--state", e.state, "mount", e.mnt, "--remote", "127.0.0.1:1", "--io-timeout", "1s")
	if code == 0 || !strings.Contains(out, "unreachable") || mounted(t, e.mnt) {
		t.Errorf("no master: exit %d, %q", code, out)
	}
	out, code = run(t, "--state", e.state, "mount", e.mnt, "--remote", addr, "--path", "../x")
	if code == 0 || !strings.Contains(out, "--path") {
		t.Errorf("--path ..: exit %d, %q", code, out)
	}
	out, code = run(t, "--state", e.state, "mount", e.mnt, "--remote", addr, "--lower", e.lower)
	if code == 0 || !strings.Contains(out, "not both") {
		t.Errorf("--remote and --lower: exit %d, %q", code, out)
	}

	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--remote", addr, "--token-file", tok); code != 0 {
		t.Fatalf("mount --remote: exit %d: %s", code, out)
	}
	defer run(t, "unmount", e.mnt)
	b, err := os.ReadFile(filepath.Join(e.mnt, "crawlab_project/spiders/quotes.py"))
	if err != nil || string(b) != "print('q')\n" {
		t.Errorf("quotes.py: %q, %v", b, err)
	}
	cmd := exec.Command("./run.sh")
	cmd.Dir = e.mnt
	if out, err := cmd.Output(); err != nil || string(out) != "ran\n" {
		t.Errorf("run.sh: %q, %v", out, err)
	}
	out, code = run(t, "--state", e.state, "status", e.mnt)
	if code != 0 || !strings.Contains(out, addr) || !strings.Contains(out, "version: sha256-") || !strings.Contains(out, "fetched") {
		t.Errorf("status: exit %d, %s", code, out)
	}
	out, code = run(t, "--state", e.state, "status", "--json")
	// One line, one object, for the one mount.
	var st struct {
		Mountpoint string
		Version    string
		Remote     struct {
			BytesFetched int64 `json:"bytes_fetched"`
		}
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || strings.Count(out, "\n") != 1 || st.Remote.BytesFetched == 0 {
		t.Errorf("status --json: exit %d, %v: %s", code, err, out)
	}
	if out, code := run(t, "--state", e.state, "status", t.TempDir()); code == 0 || !strings.Contains(out, "not a cowfs mount") {
		t.Errorf("status of a plain dir: exit %d, %q", code, out)
	}
}

// A checkpoint taken on one worker resumes on another, through the master.
func TestSnapshotPushRestoreRemote(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addr := startServe(t, e.lower)
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--remote", addr); code != 0 {
		t.Fatalf("mount --remote: exit %d: %s", code, out)
	}
	defer run(t, "unmount", e.mnt)
	if err := os.WriteFile(filepath.Join(e.mnt, "crawl.db"), []byte("records 1-100"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, "--state", e.state, "snapshot", e.mnt, "ckpt", "--push"); code != 0 || !strings.Contains(out, "pushed ckpt") {
		t.Fatalf("snapshot --push: exit %d: %s", code, out)
	}

	other := t.TempDir()
	mnt2 := filepath.Join(t.TempDir(), "resume")
	os.Mkdir(mnt2, 0o755)
	unmountOnCleanup(t, mnt2)
	if out, code := run(t, "--state", other, "restore", "ckpt", mnt2, "--remote", addr); code != 0 {
		t.Fatalf("restore --remote: exit %d: %s", code, out)
	}
	defer run(t, "unmount", mnt2)
	for p, want := range map[string]string{"crawl.db": "records 1-100", "crawlab_project/spiders/quotes.py": "print('q')\n"} {
		if b, err := os.ReadFile(filepath.Join(mnt2, p)); err != nil || string(b) != want {
			t.Errorf("%s on the other worker: %q, %v", p, b, err)
		}
	}
	if out, _ := run(t, "--state", other, "status", mnt2); !strings.Contains(out, "snapshot ckpt of "+addr) {
		t.Errorf("status of a remote restore: %s", out)
	}
	mnt3 := filepath.Join(t.TempDir(), "m3")
	os.Mkdir(mnt3, 0o755)
	if out, code := run(t, "--state", other, "restore", "missing", mnt3, "--remote", addr); code == 0 || !strings.Contains(out, "no snapshot missing") {
		t.Errorf("restore --remote of a missing snapshot: exit %d: %s", code, out)
	}

	// A mount over a local directory has no master to push to.
	local := filepath.Join(t.TempDir(), "local")
	os.Mkdir(local, 0o755)
	unmountOnCleanup(t, local)
	if out, code := run(t, "--state", e.state, "mount", local, "--lower", e.lower); code != 0 {
		t.Fatalf("mount: %s", out)
	}
	defer run(t, "unmount", local)
	if out, code := run(t, "--state", e.state, "snapshot", local, "loc", "--push"); code == 0 || !strings.Contains(out, "no master") {
		t.Errorf("snapshot --push of a local mount: exit %d: %s", code, out)
	}
}

// mountProcs lists the processes whose arguments name mnt.
func mountProcs(mnt string) []int {
	var pids []int
	eachProc(func(pid int, args []string) {
		if slices.Contains(args, mnt) {
			pids = append(pids, pid)
		}
	})
	return pids
}

// A cowfs mount interrupted while the master is slow to answer stops its
// mount process: left running, it mounted later, after its caller had
// been told the mount failed.
func TestInterruptedMountStops(t *testing.T) {
	e := newEnv(t)
	// A master that takes connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	cmd := exec.Command(bin, "--state", e.state, "mount", e.mnt, "--remote", l.Addr().String(), "--io-timeout", "60s")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		for _, pid := range mountProcs(e.mnt) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	// Wait for the mount process (the parent's child) to be in its
	// first call to the master: connected to it. The parent watches for
	// signals from before it starts the child.
	calling := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(held) > 0
	}
	for deadline := time.Now().Add(20 * time.Second); len(mountProcs(e.mnt)) < 2 || !calling(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no mount process calling the master after 20s: %s", out.String())
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), "stopped by interrupt") {
			t.Errorf("interrupted mount: %v, %q; want a failure that says so", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cowfs mount did not exit 30s after SIGINT")
	}
	for deadline := time.Now().Add(20 * time.Second); len(mountProcs(e.mnt)) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("mount process %v still running 20s after cowfs mount was interrupted", mountProcs(e.mnt))
		}
	}
	if mounted(t, e.mnt) {
		t.Fatal("mounted after cowfs mount was interrupted")
	}
}
