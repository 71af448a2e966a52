package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cowfs/cowfs"
)

// The mount command without --foreground starts itself again in the
// background and waits for it to report that the mount serves requests (or
// why it could not), so that "cowfs mount" returning 0 means the workspace
// is ready. The child reports on a pipe passed as fd 3.
const readyEnv = "COWFS_READY_FD"

// The child reads its workspace's spec, as JSON, from a second pipe passed
// as fd 4: every option reaches it as the parent validated it, with no
// argv to rebuild, and a token read from a file passes in memory, seen by
// neither ps, the environment nor a file left in the state directory.
const specEnv = "COWFS_SPEC_FD"

// spawnDaemon re-executes the mount command in the background with args,
// hands it spec, and waits up to timeout for it to become ready.
func spawnDaemon(args []string, spec cowfs.Spec, logPath string, timeout time.Duration) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	specR, err := specPipe(spec)
	if err != nil {
		return err
	}
	defer specR.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		w.Close()
		return fmt.Errorf("open log %s: %w", logPath, err)
	}
	defer logf.Close()
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), readyEnv+"=3", specEnv+"=4")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w, specR}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	msg := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		msg <- strings.TrimSpace(line)
	}()
	// A signal to this process while the mount is being made (a Ctrl-C,
	// timeout(1)) stops the mount too: a mount process left running would
	// mount after the caller was told it failed.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	select {
	case m := <-msg:
		if m == "ok" {
			cmd.Process.Release()
			return nil
		}
		if m == "" {
			// The pipe closed without a word: the child died.
			err := <-exited
			return fmt.Errorf("mount process exited (%v); see %s", err, logPath)
		}
		<-exited
		return parseFailure(m)
	case s := <-sigs:
		stopChild(cmd, r, exited)
		return fmt.Errorf("mount stopped by %s", s)
	case <-time.After(timeout):
		stopChild(cmd, r, exited)
		return fmt.Errorf("mount not ready after %s; see %s", timeout, logPath)
	}
}

// stopChild stops a mount process nobody will wait for. With the ready
// pipe closed, a child that mounts after all finds no one to tell and
// unmounts (serveMount); SIGTERM makes one that has mounted unmount
// cleanly. SIGKILL, after a while, is for one stuck before mounting,
// where killing leaves nothing behind.
func stopChild(cmd *exec.Cmd, ready *os.File, exited <-chan error) {
	ready.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// readyPipe returns the pipe to report readiness on, if this process was
// started by spawnDaemon.
func readyPipe() io.WriteCloser {
	if os.Getenv(readyEnv) == "" {
		return nil
	}
	os.Unsetenv(readyEnv)
	return os.NewFile(3, "ready")
}

// specPipe returns a pipe's read end that yields spec as JSON, then EOF.
// A spec is far smaller than a pipe's buffer, so the write does not wait
// for a reader.
func specPipe(spec cowfs.Spec) (*os.File, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	_, err = w.Write(b)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("hand the spec to the mount process: %w", err)
	}
	return r, nil
}

// specFromParent reads the spec spawnDaemon handed this process.
func specFromParent() (cowfs.Spec, error) {
	var s cowfs.Spec
	if os.Getenv(specEnv) == "" {
		return s, errors.New("started to serve a mount, but given no spec (" + specEnv + ")")
	}
	os.Unsetenv(specEnv)
	f := os.NewFile(4, "spec")
	defer f.Close()
	if err := json.NewDecoder(f).Decode(&s); err != nil {
		return s, fmt.Errorf("read the spec from the parent: %w", err)
	}
	return s, nil
}
