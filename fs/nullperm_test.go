package fs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestNullPermissions checks that a file or directory with mode 0000, in
// the lower or made so in the upper, shows mode 0000 and that another user
// can neither read the file nor list the directory.
func TestNullPermissions(t *testing.T) {
	t.Parallel()
	lower := filepath.Join(t.TempDir(), "lower")
	os.MkdirAll(filepath.Join(lower, "lowerdir"), 0o755)
	os.WriteFile(filepath.Join(lower, "lowerfile"), []byte("secret"), 0o644)
	os.Chmod(filepath.Join(lower, "lowerfile"), 0)
	os.Chmod(filepath.Join(lower, "lowerdir"), 0)
	os.WriteFile(filepath.Join(lower, "open"), []byte("public"), 0o644)
	tm := mountT(t, lower, Options{})
	openUp(filepath.Dir(tm.Dir))
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	if err := os.WriteFile(p("upperfile"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p("upperdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"upperfile", "upperdir"} {
		if err := os.Chmod(p(n), 0); err != nil {
			t.Fatal(err)
		}
	}
	asNobody := func(name string, args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		return cmd.CombinedOutput()
	}
	// The control: the same user reads a file open to all.
	if out, err := asNobody("cat", p("open")); err != nil || string(out) != "public" {
		t.Fatalf("another user cannot read a 0644 file: %q, %v", out, err)
	}
	for _, n := range []string{"lowerfile", "lowerdir", "upperfile", "upperdir"} {
		var st unix.Stat_t
		if err := unix.Lstat(p(n), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != 0 {
			t.Errorf("%s: mode %o, want 0000", n, st.Mode&0o7777)
		}
		tool := "cat"
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			tool = "ls"
		}
		if out, err := asNobody(tool, p(n)); err == nil {
			t.Errorf("%s: another user read it: %q", n, out)
		}
	}
}
