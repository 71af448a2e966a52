package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCopyFileRange: copy_file_range between and within files of a mount
// is one request that cowfs answers from the layers, without the kernel
// reading the source through READ requests and writing it back; the
// bytes land where a read and a write would put them, across chunks that
// are still in the lower, and bytes written just before (still in the
// kernel's cache with --writeback-cache) are the ones copied.
func TestCopyFileRange(t *testing.T) {
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"default", Options{}},
		{"writeback", Options{WritebackCache: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			lower := filepath.Join(t.TempDir(), "lower")
			src := randBytes(3 << 20)
			writeT(t, filepath.Join(lower, "f"), src)
			tm := mountT(t, lower, c.o)
			p := filepath.Join(tm.Dir, "f")
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			want := bytes.Clone(src)

			copyRange := func(from *os.File, offIn int64, to *os.File, offOut int64, n int) {
				t.Helper()
				before := tm.m.ms.reads.Load()
				for done := 0; done < n; {
					oi, oo := offIn+int64(done), offOut+int64(done)
					k, err := unix.CopyFileRange(int(from.Fd()), &oi, int(to.Fd()), &oo, n-done, 0)
					if err != nil {
						t.Fatalf("copy_file_range %d bytes from %d to %d: %v", n, offIn, offOut, err)
					}
					if k == 0 {
						t.Fatalf("copy_file_range from %d to %d: 0 bytes after %d of %d", offIn, offOut, done, n)
					}
					done += k
				}
				if reads := tm.m.ms.reads.Load() - before; reads != 0 {
					t.Fatalf("copy_file_range cost %d READ requests, want none", reads)
				}
			}

			// Within the lower file, from chunks 0 and 1 to across
			// chunks 1 and 2.
			copyRange(f, 100, f, 2<<20-5000, 1<<20+3000)
			copy(want[2<<20-5000:], src[100:100+1<<20+3000])
			// Freshly written bytes are what is copied.
			fresh := randBytes(8192)
			if _, err := f.WriteAt(fresh, 2<<20+17); err != nil {
				t.Fatal(err)
			}
			copy(want[2<<20+17:], fresh)
			copyRange(f, 2<<20+17, f, 4096, len(fresh))
			copy(want[4096:], fresh)
			// Into a new file, past its end.
			g, err := os.OpenFile(filepath.Join(tm.Dir, "g"), os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			copyRange(f, 0, g, 10, 200000)
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}

			wantG := append(make([]byte, 10), want[:200000]...)
			wantContent(t, p, want)
			wantContent(t, filepath.Join(tm.Dir, "g"), wantG)
			tm.remount(t)
			wantContent(t, p, want)
			wantContent(t, filepath.Join(tm.Dir, "g"), wantG)
		})
	}
}
