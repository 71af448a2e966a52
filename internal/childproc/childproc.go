// Package childproc starts the child processes of tests (servers, mounts
// in a process of their own) so that they die with the test binary, and
// only then.
//
// The kernel sends a child its parent-death signal (Pdeathsig) when the
// thread that forked it ends, not its process, and the Go runtime ends a
// thread whose goroutine exits locked to it: fs's low-priority work does,
// on purpose. A child forked from any thread of the pool can so be killed
// in the middle of a test by work that has nothing to do with it. Start
// forks from a thread locked until the child has ended.
package childproc

import (
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Start starts cmd with SIGKILL as its parent-death signal, added to
// cmd.SysProcAttr (made if nil), from an OS thread that stays locked
// until the child has exited. The caller waits for cmd as usual
// (cmd.Wait); the thread's wait does not reap it.
func Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			runtime.UnlockOSThread()
			started <- err
			return
		}
		started <- nil
		// WNOWAIT leaves the exited child for cmd.Wait to reap; once
		// the caller has reaped it, waitid fails (ECHILD) and the
		// thread goes back to the pool all the same.
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if err != unix.EINTR {
				break
			}
		}
		runtime.UnlockOSThread()
	}()
	return <-started
}
