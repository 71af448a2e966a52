package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// A process working in a directory through a descriptor of it while
// another renames one of its ancestors: every unlink and create must act
// on that directory, wherever it is now, as on ext4. cowfs took a path
// before a rename and used it after, and so removed and created files in
// the directory that had taken the old place, or failed with ENOENT.
// Run against an empty lower and against a lower holding the directories.
func TestRenameUnderWork(t *testing.T) {
	t.Parallel()
	for _, fromLower := range []bool{false, true} {
		t.Run(fmt.Sprintf("lower=%v", fromLower), func(t *testing.T) {
			const n = 600
			lower := t.TempDir()
			files := func(root string) {
				for _, d := range []string{"X", "Y"} {
					if err := os.MkdirAll(filepath.Join(root, d, "s"), 0o755); err != nil {
						t.Fatal(err)
					}
					for i := range n {
						writeT(t, filepath.Join(root, d, "s", fmt.Sprintf("u%d", i)), []byte(d))
					}
				}
			}
			if fromLower {
				files(lower)
			}
			lowerBefore := readTree(t, lower)
			m := mountT(t, lower, Options{})
			if !fromLower {
				files(m.Dir)
			}
			open := func(p string) int {
				fd, err := unix.Open(filepath.Join(m.Dir, p), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { unix.Close(fd) })
				return fd
			}
			s1, s2 := open("X/s"), open("Y/s")

			stop := make(chan struct{})
			var wg sync.WaitGroup
			var renameErr error
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					for _, r := range [][2]string{{"X", "T"}, {"Y", "X"}, {"T", "Y"}} {
						if err := os.Rename(filepath.Join(m.Dir, r[0]), filepath.Join(m.Dir, r[1])); err != nil {
							renameErr = err
							return
						}
					}
				}
			})
			var failed []error
			for i := range n {
				if err := unix.Unlinkat(s1, fmt.Sprintf("u%d", i), 0); err != nil {
					failed = append(failed, fmt.Errorf("unlink u%d: %w", i, err))
				}
				fd, err := unix.Openat(s1, fmt.Sprintf("c%d", i), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err != nil {
					failed = append(failed, fmt.Errorf("create c%d: %w", i, err))
				} else {
					unix.Close(fd)
				}
			}
			close(stop)
			wg.Wait()
			if renameErr != nil {
				t.Fatalf("rename: %v", renameErr)
			}
			if len(failed) > 0 {
				t.Errorf("%d of %d calls through the directory's descriptor failed, first: %v", len(failed), 2*n, failed[0])
			}
			names := func(fd int) map[byte]int {
				d, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", fd))
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				ents, err := d.Readdirnames(-1)
				if err != nil {
					t.Fatal(err)
				}
				count := map[byte]int{}
				for _, e := range ents {
					count[e[0]]++
				}
				return count
			}
			if got := names(s1); got['u'] != 0 || got['c'] != n {
				t.Errorf("the worked-in directory holds %d u files and %d c files, want 0 and %d", got['u'], got['c'], n)
			}
			if got := names(s2); got['u'] != n || got['c'] != 0 {
				t.Errorf("the other directory holds %d u files and %d c files, want %d and 0", got['u'], got['c'], n)
			}
			if d := diffTrees(lowerBefore, readTree(t, lower)); d != "" {
				t.Errorf("the lower changed: %s", d)
			}
		})
	}
}
