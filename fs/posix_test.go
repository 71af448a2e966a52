package fs

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// skipPosix lists posixtest cases cowfs does not run, with the reason.
var skipPosix = map[string]string{
	// The test takes a write lock and then a read lock on a second
	// descriptor of the same process and expects EAGAIN. POSIX record
	// locks belong to the process, so native ext4 grants the second lock
	// as well (checked by running the test on a plain directory); go-fuse's
	// own posixtest run skips it for the same reason.
	"FcntlFlockLocksFile": "expects a conflict POSIX does not define; fails on native ext4 too",
	// FdLeak counts the descriptors of the whole test process, which the
	// other tests running in parallel open and close: TestPosixFdLeak
	// runs it alone.
	"FdLeak": "counts the process's descriptors; TestPosixFdLeak runs it alone",
}

// TestPosixFdLeak runs posixtest's FdLeak in each configuration the
// parallel posix tests use. It must not call t.Parallel: a top-level test
// that does not runs before every parallel one starts, so no other test's
// descriptors come and go while it counts.
func TestPosixFdLeak(t *testing.T) {
	for name, o := range map[string]Options{
		"default":     {},
		"writeback":   {WritebackCache: true},
		"passthrough": {Passthrough: true, PassthroughLower: true},
	} {
		t.Run(name, func(t *testing.T) {
			lower := filepath.Join(t.TempDir(), "lower")
			if err := os.Mkdir(lower, 0o755); err != nil {
				t.Fatal(err)
			}
			populatePosix(t, lower)
			tm := mountT(t, lower, o)
			posixtest.FdLeak(t, tm.Dir)
		})
	}
}

func runPosix(t *testing.T, populate func(t *testing.T, lower string)) {
	runPosixOpts(t, populate, Options{})
}

func runPosixOpts(t *testing.T, populate func(t *testing.T, lower string), o Options) {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fn := posixtest.All[name]
		t.Run(name, func(t *testing.T) {
			if why, ok := skipPosix[name]; ok {
				t.Skip(why)
			}
			lower := filepath.Join(t.TempDir(), "lower")
			if err := os.Mkdir(lower, 0o755); err != nil {
				t.Fatal(err)
			}
			if populate != nil {
				populate(t, lower)
			}
			tm := mountT(t, lower, o)
			// posixtest expects an empty directory to work in. With a
			// populated lower that is a lower directory whose entries
			// were removed through the mount: a merged directory full of
			// whiteouts, the hardest case for lookup and readdir.
			dir := tm.Dir
			if populate != nil {
				dir = filepath.Join(tm.Dir, "work")
				ents, err := os.ReadDir(dir)
				if err != nil || len(ents) == 0 {
					t.Fatalf("lower work dir should show entries: %v %v", ents, err)
				}
				for _, e := range ents {
					if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
						t.Fatal(err)
					}
				}
			}
			fn(t, dir)
		})
	}
}

func TestPosixEmptyLower(t *testing.T) {
	t.Parallel()
	runPosix(t, nil)
}

// TestPosixPopulatedLower runs posixtest in a directory of the mount whose
// lower holds files, so lookups, readdir and whiteouts merge two layers.
func TestPosixPopulatedLower(t *testing.T) {
	t.Parallel()
	runPosix(t, populatePosix)
}

func populatePosix(t *testing.T, lower string) {
	for _, f := range []string{"a", "b/c", "b/d/e", "work/.keep", "work/test", "work/dir/file", "work/file", "work/link"} {
		p := filepath.Join(lower, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("lower "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
