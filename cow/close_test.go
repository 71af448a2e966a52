package cow

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A second Close of an FS closes nothing: it used to close the upper's
// descriptors again, by number, and so whatever file had been given
// those numbers since (in the tests running beside it, badger's MANIFEST,
// whose next write then failed with EBADF).
func TestCloseTwiceClosesNothingElse(t *testing.T) {
	f := newTestFS(t, map[string][]byte{"a": []byte("x")})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// The lowest free numbers are the ones the FS just released.
	var files []*os.File
	for range 8 {
		g, err := os.Open(filepath.Join(t.TempDir(), "."))
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		files = append(files, g)
	}
	f.Close()
	for _, g := range files {
		var st unix.Stat_t
		if err := unix.Fstat(int(g.Fd()), &st); err != nil {
			t.Fatalf("descriptor %d, opened after the first Close, after the second: %v", g.Fd(), err)
		}
	}
}
