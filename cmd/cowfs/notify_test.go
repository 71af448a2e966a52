package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// notifySocket listens where a service manager would (NOTIFY_SOCKET) and
// returns the socket and its path.
func notifySocket(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

// nextNotice reads one datagram within d.
func nextNotice(t *testing.T, c *net.UnixConn, d time.Duration) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("no notice within %v: %v", d, err)
	}
	return string(b[:n])
}

// startNotified starts cowfs with NOTIFY_SOCKET set and stops it at the
// test's end. exited is closed when the process has exited, with its
// error in *werr.
func startNotified(t *testing.T, sock string, args ...string) (cmd *exec.Cmd, exited <-chan struct{}, werr *error, out *bytes.Buffer) {
	t.Helper()
	cmd = exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	out, werr = &bytes.Buffer{}, new(error)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		*werr = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return cmd, done, werr, out
}

// A foreground mount, as systemd runs it (Type=notify), says READY=1 once
// the workspace serves and STOPPING=1 when it is told to stop; cowfs serve
// says READY=1 once it listens.
func TestSdNotify(t *testing.T) {
	t.Run("mount", func(t *testing.T) {
		e := newEnv(t)
		c, sock := notifySocket(t)
		cmd, exited, werr, out := startNotified(t, sock, "--state", e.state, "mount", e.mnt, "--lower", e.lower, "--foreground")
		if n := nextNotice(t, c, 30*time.Second); n != "READY=1" {
			t.Fatalf("first notice %q, want READY=1 (%s)", n, out)
		}
		if !mounted(t, e.mnt) {
			t.Fatal("READY=1 before the mount serves")
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if n := nextNotice(t, c, 30*time.Second); n != "STOPPING=1" {
			t.Fatalf("notice after SIGTERM %q, want STOPPING=1", n)
		}
		select {
		case <-exited:
			if *werr != nil {
				t.Fatalf("mount process: %v: %s", *werr, out)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("mount process did not exit after SIGTERM")
		}
	})
	t.Run("serve", func(t *testing.T) {
		c, sock := notifySocket(t)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		cmd, exited, _, out := startNotified(t, sock, "--state", t.TempDir(), "serve", "--root", t.TempDir(), "--listen", addr)
		if n := nextNotice(t, c, 30*time.Second); n != "READY=1" {
			t.Fatalf("first notice %q, want READY=1 (%s)", n, out)
		}
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("READY=1 before cowfs serve listens: %v", err)
		}
		conn.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		if n := nextNotice(t, c, 30*time.Second); n != "STOPPING=1" {
			t.Fatalf("notice after SIGTERM %q, want STOPPING=1", n)
		}
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Fatal("cowfs serve did not exit after SIGTERM")
		}
	})
}
