package cowfs_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A warmup of a subtree, asked for over the mount's control socket,
// fetches all of it: with the master gone, the subtree reads whole, and a
// file outside it fails with EIO within the I/O timeout.
func TestWarmupSubtree(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out --io-timeout with the master down; the full suite runs it")
	}
	exp := t.TempDir()
	in := map[string][]byte{
		"spider/run.py":           randBytes(100),
		"spider/pkg/__init__.py":  {},
		"spider/pkg/data.bin":     randBytes(2<<20 + 17),
		"spider/pkg/deep/mod.py":  randBytes(3000),
		"spider/pkg/deep/also.py": randBytes(10),
	}
	for p, b := range in {
		writeFile(t, filepath.Join(exp, p), b, 0o644)
	}
	if err := os.Symlink("pkg/deep/mod.py", filepath.Join(exp, "spider/link")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(exp, "top"), randBytes(5000), 0o644)
	writeFile(t, filepath.Join(exp, "other/big"), randBytes(3<<20), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})

	base := t.TempDir()
	state, mnt := filepath.Join(base, "state"), filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	const ioTimeout = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: state,
		Lower: cowfs.Lower{Remote: &cowfs.Remote{Addr: ms.Addr, IOTimeout: ioTimeout}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	ctl := cowfs.ControlOf(state, mnt)

	// Bad paths are refused, naming the path.
	for _, p := range []string{"nope", "spider/run.py/x", "../etc"} {
		_, err := ctl.Warmup(ctx, []string{"spider", p}, nil)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("warmup of %q: %v, want an error naming it", p, err)
		}
	}

	p, err := ctl.Warmup(ctx, []string{"spider"}, nil)
	if err != nil {
		t.Fatalf("warmup: %v", err)
	}
	if p == nil || p.State != "done" || p.Files != 4 || p.Bytes != 2<<20+17+100+3000+10 {
		t.Fatalf("warmup's last reply: %+v", p)
	}

	ms.Stop()
	for p, want := range in {
		if got, err := os.ReadFile(filepath.Join(mnt, p)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s with the master gone: %d bytes, %v", p, len(got), err)
		}
	}
	if got, err := os.Readlink(filepath.Join(mnt, "spider/link")); err != nil || got != "pkg/deep/mod.py" {
		t.Errorf("spider/link: %q, %v", got, err)
	}
	for _, p := range []string{"top", "other/big"} {
		start := time.Now()
		err := within(t, ioTimeout+10*time.Second, "read "+p, func() error {
			_, err := os.ReadFile(filepath.Join(mnt, p))
			return err
		})
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("%s, not warmed up, with the master gone: %v, want EIO", p, err)
		}
		if took := time.Since(start); took > ioTimeout+5*time.Second {
			t.Errorf("%s failed after %v, more than the I/O timeout %v", p, took, ioTimeout)
		}
	}
}

// A local workspace has nothing to warm up, and says so.
func TestWarmupLocal(t *testing.T) {
	base := t.TempDir()
	state, lower, mnt := filepath.Join(base, "state"), filepath.Join(base, "lower"), filepath.Join(base, "mnt")
	writeFile(t, filepath.Join(lower, "f"), []byte("x"), 0o644)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: state, Lower: cowfs.Lower{Dir: lower}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	_, err = cowfs.ControlOf(state, mnt).Warmup(ctx, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "not a remote workspace") {
		t.Fatalf("warmup of a local workspace: %v", err)
	}
}
