package fs

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadAhead checks that the mount's read-ahead is set, and that it is
// what the kernel uses: a sequential read of a cold file then reaches
// cowfs in that many bytes per READ.
func TestReadAhead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting a mount's read-ahead needs root")
	}
	lower := t.TempDir()
	const size = 8 << 20
	if err := os.WriteFile(filepath.Join(lower, "data"), bytes.Repeat([]byte("0123456789abcdef"), size/16), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		readAhead int64
		kb        string
		// maxReads bounds the READs of the 8 MiB file; minReads is
		// what the kernel's default read-ahead (128 KiB: 64 READs)
		// needs at least.
		minReads, maxReads uint64
	}{
		{"default", 0, "256", 1, 48},
		{"4MiB", 4 << 20, "4096", 1, 16},
		{"kernel", -1, "128", 56, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm := mountT(t, lower, Options{ReadAhead: tc.readAhead})
			var st unix.Stat_t
			if err := unix.Stat(tm.Dir, &st); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(bdiReadAheadPath(st.Dev))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(b)); got != tc.kb {
				t.Errorf("read_ahead_kb %s, want %s", got, tc.kb)
			}
			f, err := os.Open(filepath.Join(tm.Dir, "data"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			before := tm.m.ms.reads.Load()
			n, err := io.CopyBuffer(io.Discard, f, make([]byte, 64<<10))
			if err != nil || n != size {
				t.Fatalf("read %d bytes: %v", n, err)
			}
			reads := tm.m.ms.reads.Load() - before
			t.Logf("%d READs", reads)
			if reads < tc.minReads || reads > tc.maxReads {
				t.Errorf("%d READs for %d MiB read in 64 KiB steps; want %d to %d", reads, size>>20, tc.minReads, tc.maxReads)
			}
		})
	}
}
