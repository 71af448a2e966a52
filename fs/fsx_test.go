package fs

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fsxBinary finds xfstests' fsx: $COWFS_FSX, else what scripts/bench-fsx
// builds (under /tmp, never in the repository). It skips the test when
// fsx cannot be had, saying why.
func fsxBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("COWFS_FSX"); p != "" {
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join("..", "scripts", "bench-fsx"), "build")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("fsx cannot be built (scripts/bench-fsx build: %v): %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out))
}

// TestFsx runs xfstests' fsx on a mount, on a file that starts in the
// lower: reads, writes, mapped reads and writes, truncates, fallocate,
// punch hole, zero range and copy_file_range, each checked against fsx's
// own copy of what the file must hold. The flags are scripts/bench-fsx's,
// for the operations FUSE refuses; with -short, fewer operations on a
// smaller file.
func TestFsx(t *testing.T) {
	fsx := fsxBinary(t)
	ops, size := 10000, 16<<20
	if testing.Short() || raceEnabled {
		// The suite's -race stage too: its plain stage runs it all.
		ops, size = 1000, 4<<20
	}
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"default", Options{}},
		{"writeback", Options{WritebackCache: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			lower := filepath.Join(t.TempDir(), "lower")
			writeT(t, filepath.Join(lower, "f"), randBytes(size))
			tm := mountT(t, lower, c.o)
			logs := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, fsx, "-q", "-k", "-N", strconv.Itoa(ops), "-S", "1",
				"-a", "-u", "-C", "-I", "-0", "-J", "-B", "-P", logs, filepath.Join(tm.Dir, "f"))
			out, err := cmd.CombinedOutput()
			if err != nil {
				log, _ := os.ReadFile(filepath.Join(logs, "f.fsxlog"))
				t.Fatalf("fsx: %v\n%s\nfsx's log:\n%s", err, tail(out, 4000), tail(log, 4000))
			}
		})
	}
}

// tail is the last n bytes of b.
func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
