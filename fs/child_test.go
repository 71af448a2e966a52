package fs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/internal/childproc"
)

// childMountEnv carries a childMount's settings to the child process.
const childMountEnv = "COWFS_TEST_CHILD_MOUNT"

// childConfig is what the child mounts.
type childConfig struct {
	Dir, Lower, Upper, Work string
	WritebackCache          bool
	Reserve                 int64
}

// childMount is a cowfs mount served by another process, a child running
// this test binary's TestMountChild, as a real mount is. A test needs one
// when it faults on a mapping of a file of the mount with the writeback
// cache on: the faulting thread holds its process's mmap_lock while it
// waits for the write-back of the page, and a server in the same process
// needs that lock too (a Go runtime mmap, a read of /proc/PID/cmdline), so
// an in-process mount can deadlock where a real one cannot.
type childMount struct {
	cfg    childConfig
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan error
	stderr *bytes.Buffer
	lines  chan string // the child's stdout, a line at a time
	// abort is the fusectl file of the child's FUSE connection and dev
	// the mount's device: connection numbers are reused, so abort is
	// written only while dev is still mounted at cfg.Dir.
	abort, dev string
}

// mountChild mounts cowfs over lower in a child process and registers a
// stop that runs even when the test fails.
func mountChild(t testing.TB, lower string, writeback bool) *childMount {
	t.Helper()
	base := t.TempDir()
	return mountChildCfg(t, childConfig{
		Dir: filepath.Join(base, "mnt"), Lower: lower,
		Upper: filepath.Join(base, "upper"), Work: filepath.Join(base, "work"),
		WritebackCache: writeback,
	})
}

// mountChildCfg is mountChild with every setting given; cfg.Dir must not
// exist yet.
func mountChildCfg(t testing.TB, cfg childConfig) *childMount {
	t.Helper()
	if err := needFusectl(); err != nil {
		t.Fatalf("fusectl: %v", err)
	}
	c := &childMount{cfg: cfg}
	if err := os.Mkdir(c.cfg.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.stop(t) })
	c.start(t)
	return c
}

// start runs the child and waits, with a deadline, until it serves.
func (c *childMount) start(t testing.TB) {
	t.Helper()
	cfg, err := json.Marshal(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMountChild$", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), childMountEnv+"="+string(cfg))
	c.stderr = &bytes.Buffer{}
	cmd.Stderr = c.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	// The child dies with the test binary; the stop in the test's
	// cleanup, or the kernel when the server's descriptor closes, then
	// ends the connection.
	if err := childproc.Start(cmd); err != nil {
		t.Fatal(err)
	}
	c.cmd = cmd
	c.exited = make(chan error, 1)
	c.lines = make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.exited <- cmd.Wait()
	}()
	c.serving(t)
}

// serving waits, with a deadline, until the child says it serves.
func (c *childMount) serving(t testing.TB) {
	t.Helper()
	select {
	case l := <-c.lines:
		if l != "MOUNTED" {
			c.kill()
			t.Fatalf("child mount: %q\nstderr:\n%s", l, c.stderr)
		}
	case <-time.After(30 * time.Second):
		c.kill()
		t.Fatalf("child mount: not serving after 30s\nstderr:\n%s", c.stderr)
	}
	var err error
	if c.abort, c.dev, err = fuseAbortFile(c.cfg.Dir); err != nil {
		c.kill()
		t.Fatal(err)
	}
}

// stop asks the child to unmount and waits for it, with a deadline; a
// child that does not finish is killed, its connection aborted and its
// mount detached, and the test fails.
func (c *childMount) stop(t testing.TB) {
	if c.cmd == nil {
		return
	}
	c.stdin.Close()
	select {
	case err := <-c.exited:
		if err != nil {
			t.Errorf("child mount: %v\nstderr:\n%s", err, c.stderr)
		}
		// A child that died left its mount behind, its connection
		// gone.
		if d, _ := mountDev(c.cfg.Dir); d == c.dev {
			unix.Unmount(c.cfg.Dir, unix.MNT_DETACH)
		}
	case <-time.After(30 * time.Second):
		c.kill()
		t.Errorf("child mount: did not unmount within 30s; killed\nstderr:\n%s", c.stderr)
	}
	c.cmd = nil
}

// kill ends the child at once, however stuck its mount is.
func (c *childMount) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	if c.abort != "" {
		if d, _ := mountDev(c.cfg.Dir); d == c.dev {
			os.WriteFile(c.abort, []byte("1"), 0o200)
		}
		c.abort = ""
	}
	unix.Unmount(c.cfg.Dir, unix.MNT_DETACH)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
	}
	c.cmd = nil
}

// remount has the child unmount and mount the same upper again.
func (c *childMount) remount(t testing.TB) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "remount\n"); err != nil {
		c.kill()
		t.Fatalf("child mount: %v", err)
	}
	c.serving(t)
}

// TestMountChild is the child half of childMount; alone it does nothing.
// It mounts and says MOUNTED; for each line "remount" on its stdin it
// unmounts, mounts again and says MOUNTED; it unmounts when stdin closes.
func TestMountChild(t *testing.T) {
	env := os.Getenv(childMountEnv)
	if env == "" {
		t.Skip("the child process of a childMount; runs only when a test starts it")
	}
	var cfg childConfig
	if err := json.Unmarshal([]byte(env), &cfg); err != nil {
		t.Fatal(err)
	}
	mount := func() *Mount {
		m, err := newT(t, cfg.Dir, testSpec{Lower: cfg.Lower, Upper: cfg.Upper, Work: cfg.Work,
			Options: Options{WritebackCache: cfg.WritebackCache, Reserve: cfg.Reserve}})
		if err != nil {
			fmt.Println("mount failed:", err)
			t.Fatal(err)
		}
		fmt.Println("MOUNTED")
		return m
	}
	m := mount()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() != "remount" {
			t.Fatalf("child mount: unknown command %q", sc.Text())
		}
		if err := m.Unmount(); err != nil {
			fmt.Println("unmount failed:", err)
			t.Fatal(err)
		}
		m = mount()
	}
	if err := m.Unmount(); err != nil {
		t.Fatalf("unmount: %v", err)
	}
}
