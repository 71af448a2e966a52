package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/internal/prestart"
)

// The mount command without --foreground hands the mount to a process
// of its own, the same binary run again with --foreground, and waits for
// it to report that the mount serves requests (or why it could not), so
// that "cowfs mount" returning 0 means the workspace is ready. The
// process is usually the one internal/prestart started while this one
// was still initializing; it reports on a pipe passed as fd 3.
//
// It reads its workspace's spec, as JSON, from a second pipe passed as
// fd 4 (a handoff): every option reaches it as the parent validated it,
// with no argv to rebuild, and a token read from a file passes in
// memory, seen by neither ps, the environment nor a file left in the
// state directory.
const (
	readyEnv = prestart.ReadyEnv
	specEnv  = prestart.SpecEnv
)

// A handoff is what the command sends its mount process on the spec
// pipe: the spec, and the log the process writes to (its stdout and
// stderr too, so that a crash's trace lands there).
type handoff struct {
	Spec    cowfs.Spec `json:"spec"`
	LogFile string     `json:"log_file"`
}

// errNotHandedOver is what a mount process started ahead finds when the
// command ended without handing it a spec: it exits, having done
// nothing.
var errNotHandedOver = errors.New("the command handed over no mount")

// spawnDaemon hands spec to a mount process, the one started ahead if
// any, else one started now with args, and waits up to timeout for it
// to become ready.
func spawnDaemon(args []string, spec cowfs.Spec, logPath string, timeout time.Duration) error {
	mp := prestart.Take()
	if mp == nil {
		var err error
		if mp, err = prestart.Start(args); err != nil {
			return err
		}
	}
	r := mp.Ready
	defer r.Close()
	exited := make(chan error, 1)
	go func() { exited <- waitProcess(mp.P) }()
	if err := sendHandoff(mp.Spec, handoff{Spec: spec, LogFile: logPath}); err != nil {
		stopChild(mp.P, r, exited)
		return fmt.Errorf("hand the spec to the mount process: %w", err)
	}
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
			mp.P.Release()
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
		stopChild(mp.P, r, exited)
		return fmt.Errorf("mount stopped by %s", s)
	case <-time.After(timeout):
		stopChild(mp.P, r, exited)
		return fmt.Errorf("mount not ready after %s; see %s", timeout, logPath)
	}
}

// waitProcess waits for p to exit; an exit other than 0 is an error that
// says how it ended.
func waitProcess(p *os.Process) error {
	st, err := p.Wait()
	if err == nil && !st.Success() {
		err = errors.New(st.String())
	}
	return err
}

// sendHandoff writes h to the spec pipe w as JSON and closes it. A spec
// is far smaller than a pipe's buffer, so the write does not wait for
// the reader.
func sendHandoff(w *os.File, h handoff) error {
	b, err := json.Marshal(h)
	if err == nil {
		_, err = w.Write(b)
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

// stopChild stops a mount process nobody will wait for. With the ready
// pipe closed, a child that mounts after all finds no one to tell and
// unmounts (serveMount); SIGTERM makes one that has mounted unmount
// cleanly. SIGKILL, after a while, is for one stuck before mounting,
// where killing leaves nothing behind.
func stopChild(p *os.Process, ready *os.File, exited <-chan error) {
	ready.Close()
	p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		p.Kill()
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

// specFromParent reads what spawnDaemon handed this process: the spec,
// and the log, which becomes its stdout and stderr. errNotHandedOver:
// the pipe closed with nothing in it.
func specFromParent() (cowfs.Spec, string, error) {
	if os.Getenv(specEnv) == "" {
		return cowfs.Spec{}, "", errors.New("started to serve a mount, but given no spec (" + specEnv + ")")
	}
	os.Unsetenv(specEnv)
	f := os.NewFile(4, "spec")
	defer f.Close()
	var h handoff
	if err := json.NewDecoder(f).Decode(&h); errors.Is(err, io.EOF) {
		return h.Spec, "", errNotHandedOver
	} else if err != nil {
		return h.Spec, "", fmt.Errorf("read the spec from the parent: %w", err)
	}
	if h.LogFile != "" {
		if err := outputTo(h.LogFile); err != nil {
			return h.Spec, "", err
		}
	}
	return h.Spec, h.LogFile, nil
}

// outputTo makes the log at path this process's stdout and stderr, which
// were /dev/null until the spec named it (a failure to open it reaches
// the command on the ready pipe). openLogOutput finds them there and
// moves them too when the log is reopened.
func outputTo(path string) error {
	f, err := openLogFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, fd := range []int{1, 2} {
		if err := syscall.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("log %s: %w", path, err)
		}
	}
	return nil
}
