package childproc

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// exited reports whether the child pid has exited, without reaping it.
func exited(t *testing.T, pid int) bool {
	t.Helper()
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
		t.Fatalf("waitid %d: %v", pid, err)
	}
	// With WNOHANG, a child that has not exited leaves info zero.
	return info.Signo != 0
}

// endThreads has n goroutines exit locked to their threads, so that the
// runtime ends n threads of its pool.
func endThreads(n int) {
	for range n {
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread()
		}()
		<-done
	}
}

// sleeper is a child that runs until killed; the test's cleanup kills
// and reaps it unless the test waited for it.
type sleeper struct {
	*exec.Cmd
	waited bool
}

func newSleeper(t *testing.T) *sleeper {
	s := &sleeper{Cmd: exec.Command("sleep", "60")}
	t.Cleanup(func() {
		if s.Process != nil && !s.waited {
			s.Process.Kill()
			s.Wait()
		}
	})
	return s
}

// wait waits, at most 10 s, for the child to end, and reports whether
// it was killed.
func (s *sleeper) wait(t *testing.T) (killed bool) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case err := <-done:
		s.waited = true
		return err != nil && strings.Contains(err.Error(), "killed")
	case <-time.After(10 * time.Second):
		return false
	}
}

// The kernel's part, which Start works around: a child whose forking
// thread ends is killed, though its parent process lives on. (A few
// tries: a goroutine that exits locked to the process's main thread
// leaves that thread wedged, not ended.)
func TestPdeathsigFollowsThread(t *testing.T) {
	for try := 0; try < 5; try++ {
		s := newSleeper(t)
		s.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		started := make(chan error)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends here
			started <- s.Start()
		}()
		if err := <-started; err != nil {
			t.Fatal(err)
		}
		if exitSoon(t, s.Process.Pid) {
			if !s.wait(t) {
				t.Fatal("child ended, not killed")
			}
			return
		}
	}
	t.Fatal("a child whose forking thread ended was not killed, five times")
}

// exitSoon reports whether the child pid exits within 2 s, without
// reaping it.
func exitSoon(t *testing.T, pid int) bool {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if exited(t, pid) {
			return true
		}
	}
	return false
}

func TestStartSurvivesEndedThreads(t *testing.T) {
	s := newSleeper(t)
	if err := Start(s.Cmd); err != nil {
		t.Fatal(err)
	}
	endThreads(50)
	if exitSoon(t, s.Process.Pid) {
		t.Fatal("child killed when threads of its parent ended")
	}
	// The caller's Wait still reaps it.
	s.Process.Kill()
	if !s.wait(t) {
		t.Fatal("child not reaped after its kill")
	}
	endThreads(1) // the forking thread, back in the pool, may end like any
}

const helperEnv = "COWFS_CHILDPROC_HELPER"

// TestHelperStartsAndExits is the parent of TestStartDiesWithParent's
// child: it starts it, says its pid and exits.
func TestHelperStartsAndExits(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	cmd := exec.Command("sleep", "60")
	if err := Start(cmd); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("PID " + strconv.Itoa(cmd.Process.Pid) + "\n")
	os.Exit(0)
}

func TestStartDiesWithParent(t *testing.T) {
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperStartsAndExits$", "-test.timeout=1m")
	helper.Env = append(os.Environ(), helperEnv+"=1")
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { helper.Process.Kill(); helper.Wait() })
	pid := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "PID "); ok {
			pid, _ = strconv.Atoi(p)
		}
	}
	if pid == 0 {
		t.Fatal("helper said no pid")
	}
	deadline := time.Now().Add(10 * time.Second)
	for unix.Kill(pid, 0) == nil {
		// A killed orphan is reaped by init; until then it is a zombie.
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && strings.Contains(string(b), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			unix.Kill(pid, unix.SIGKILL)
			t.Fatalf("child %d of an exited parent still running after 10s", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
