package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitFor polls cond every 20ms until it holds or d has passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, d)
		}
	}
}

func fileHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

// SIGHUP and SIGUSR1 (logrotate's signals) make a background mount reopen
// its log, which logrotate has moved away, and keep serving; the next
// lines go to the new file.
func TestSignalReopensLog(t *testing.T) {
	e := newEnv(t)
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower); code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	pid := daemonPid(t, e.mnt)
	logs, _ := filepath.Glob(filepath.Join(e.state, "mounts", "*", "mount.log"))
	if len(logs) != 1 {
		t.Fatalf("mount logs: %v", logs)
	}
	logPath := logs[0]
	for i, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1} {
		rotated := logPath + "." + string(rune('1'+i))
		if err := os.Rename(logPath, rotated); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, sig); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "a new log after "+sig.String(), func() bool { return fileHas(logPath, "reopened the log") })
		if !alive(pid) || !mounted(t, e.mnt) {
			t.Fatalf("%v stopped the mount", sig)
		}
		if b, err := os.ReadFile(filepath.Join(e.mnt, "run.sh")); err != nil || !strings.Contains(string(b), "echo ran") {
			t.Fatalf("read through the mount after %v: %q, %v", sig, b, err)
		}
	}
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: exit %d: %s", code, out)
	}
	waitFor(t, 20*time.Second, "the mount process's exit", func() bool { return !alive(pid) })
	if !fileHas(logPath, "unmounted") || fileHas(logPath+".2", "unmounted") {
		t.Errorf("the last line did not go to the reopened log")
	}
}

// cowfs serve reopens --log-file on SIGHUP and keeps serving.
func TestServeSignalReopensLog(t *testing.T) {
	root, logPath := t.TempDir(), filepath.Join(t.TempDir(), "serve.log")
	addr := startServe(t, root, "--log-file", logPath)
	var pid int
	eachProc(func(p int, args []string) {
		if len(args) > 0 && args[0] == bin && strings.Contains(strings.Join(args, " "), addr) {
			pid = p
		}
	})
	if pid == 0 {
		t.Fatalf("no cowfs serve process listening on %s", addr)
	}
	// serve listens before it logs that it serves: a dial that succeeds can
	// come before the line is written.
	waitFor(t, 30*time.Second, "the serving line in "+logPath, func() bool { return fileHas(logPath, "serving") })
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a new log after SIGHUP", func() bool { return fileHas(logPath, "reopened the log") })
	if !alive(pid) {
		t.Fatal("SIGHUP stopped cowfs serve")
	}
	if c, err := net.Dial("tcp", addr); err != nil {
		t.Fatalf("cowfs serve no longer listens after SIGHUP: %v", err)
	} else {
		c.Close()
	}
}

// The logging flags: a bad level or format is refused before anything is
// mounted; a JSON log carries the mountpoint on every line, and --debug's
// request lines are DEBUG.
func TestLogFlags(t *testing.T) {
	e := newEnv(t)
	for _, bad := range [][]string{{"--log-level", "loud"}, {"--log-format", "xml"}} {
		args := append([]string{"--state", e.state, "mount", e.mnt, "--lower", e.lower}, bad...)
		if out, code := run(t, args...); code == 0 || !strings.Contains(out, bad[0]) || mounted(t, e.mnt) {
			t.Errorf("mount %v: exit %d, %q", bad, code, out)
		}
	}
	if out, code := run(t, "--state", e.state, "serve", "--root", e.lower, "--log-format", "xml"); code == 0 || !strings.Contains(out, "--log-format") {
		t.Errorf("serve --log-format xml: exit %d, %q", code, out)
	}

	logPath := filepath.Join(t.TempDir(), "ws.log")
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower, "--log-file", logPath, "--log-format", "json", "--debug"); code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	if _, err := os.ReadFile(filepath.Join(e.mnt, "run.sh")); err != nil {
		t.Fatal(err)
	}
	unmountCLI(t, e.mnt)
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	requests := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec struct {
			Level, Msg, Mountpoint string
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON line: %q: %v", line, err)
		}
		if rec.Mountpoint != e.mnt {
			t.Errorf("a line without the mountpoint: %q", line)
		}
		if strings.Contains(rec.Msg, "LOOKUP") {
			requests++
			if rec.Level != "DEBUG" {
				t.Errorf("a request line at %s: %q", rec.Level, line)
			}
		}
	}
	if requests == 0 {
		t.Errorf("no request lines with --debug in %s", b)
	}

	quiet := filepath.Join(t.TempDir(), "quiet.log")
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower, "--log-file", quiet, "--log-level", "warn"); code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	unmountCLI(t, e.mnt)
	if b, _ := os.ReadFile(quiet); strings.Contains(string(b), "mounted") {
		t.Errorf("info lines with --log-level warn: %s", b)
	}
}

// cowfs as a container's entrypoint is PID 1: it mounts in the
// foreground without being told, where a background mount would leave
// the container at once, its mount process killed with it.
func TestPID1StaysInForeground(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare(1) to run cowfs as PID 1")
	}
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--pid", "--fork", bin, "--state", e.state, "mount", e.mnt, "--lower", e.lower)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var werr error
	go func() {
		werr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	waitFor(t, 30*time.Second, "the mount", func() bool { return mounted(t, e.mnt) })
	select {
	case <-exited:
		t.Fatalf("cowfs as PID 1 returned (%v) with its mount up: %s", werr, out.String())
	case <-time.After(time.Second):
	}
	if b, err := os.ReadFile(filepath.Join(e.mnt, "run.sh")); err != nil || !strings.Contains(string(b), "echo ran") {
		t.Fatalf("read through the mount: %q, %v", b, err)
	}
	// Status names the mount process as this pid namespace sees it, not
	// the 1 it is in its own: cowfs unmount waits for that pid to exit.
	st, code := run(t, "--state", e.state, "status", e.mnt, "--json")
	var got struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(st), &got); code != 0 || err != nil || got.Pid <= 1 {
		t.Errorf("status of the mount of a PID 1 cowfs: exit %d, pid %d (%v): %s", code, got.Pid, err, st)
	} else if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", got.Pid)); err != nil || !strings.Contains(string(b), "mount") {
		t.Errorf("status pid %d is not the mount process: %q, %v", got.Pid, b, err)
	}
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: exit %d: %s", code, out)
	}
	select {
	case <-exited:
		if werr != nil {
			t.Fatalf("cowfs as PID 1: %v: %s", werr, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cowfs as PID 1 still running 30s after its unmount")
	}
}

func TestForegroundChoice(t *testing.T) {
	for _, c := range []struct {
		pid       int
		flag, set bool
		want      bool
	}{
		{pid: 4242, want: false},
		{pid: 4242, flag: true, set: true, want: true},
		{pid: 1, want: true},
		{pid: 1, flag: true, set: true, want: true},
		{pid: 1, flag: false, set: true, want: false},
	} {
		if got := chooseForeground(c.pid, c.flag, c.set); got != c.want {
			t.Errorf("pid %d, --foreground=%v given %v: foreground %v, want %v", c.pid, c.flag, c.set, got, c.want)
		}
	}
}
