package cow

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/internal/cowtest"
	"github.com/cowfs/cowfs/cow/internal/fsio"
	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
)

// The lower changed between PrepareLower and the capture (which it must
// not, while mounted): a directory whose listing changed, or one beneath
// it, is walked afresh while writes are held, so a file created or
// removed since is in the snapshot as in a capture without a prepare; a
// file rewritten in place since is taken as the prepare read it, a moment
// before, as a mount shows such a change late (docs/architecture.md).
func TestCapturePreparedLowerChanged(t *testing.T) {
	t.Parallel()
	f := newTestFS(t, nil)
	lower := f.lo.(*lower.Dir).Path()
	for p, b := range map[string]string{"a/f1": "one\n", "a/f2": "two\n", "b/g": "old\n", "c/x/y/z": "deep\n", "top": "top\n"} {
		if err := os.MkdirAll(filepath.Join(lower, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(lower, p), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	prep, err := f.PrepareLower(ctx, cowtest.PutCached{DirStore: store})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lower, "a/f3"), []byte("three\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(lower, "a/f2")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lower, "c/x/y/w"), []byte("new deep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lower, "b/g"), []byte("NEW\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	prepared, _, st, err := f.CapturePrepared(ctx, cowtest.PutCached{DirStore: store}, prep)
	if err != nil {
		t.Fatal(err)
	}
	if st.DirsReused != 1 || st.Files != 6 || st.Dirs != 6 {
		t.Errorf("stats %+v: want b alone taken whole, and 6 files and 6 directories in all", st)
	}
	walked, _, _, err := f.Capture(ctx, cowtest.PutCached{DirStore: store})
	if err != nil {
		t.Fatal(err)
	}
	entry := func(root object.Digest, path string) object.Entry {
		t.Helper()
		e := object.Entry{Object: root}
		for _, name := range splitAll(path) {
			found := false
			for _, c := range cowtest.TreeOf(t, store, e.Object).Entries {
				if c.Name == name {
					e, found = c, true
				}
			}
			if !found {
				t.Fatalf("no %s in the snapshot (at %s)", path, name)
			}
		}
		return e
	}
	for _, p := range []string{"a", "c", "top"} {
		if a, b := entry(prepared, p), entry(walked, p); a.Object != b.Object {
			t.Errorf("%s: %s after the prepare, %s by a walk", p, a.Object.Short(), b.Object.Short())
		}
	}
	if n := len(cowtest.TreeOf(t, store, entry(prepared, "a").Object).Entries); n != 2 {
		t.Errorf("a has %d entries, want f1 and f3", n)
	}
	entry(prepared, "c/x/y/w")
	want, _ := object.EncodeBlob([]byte("old\n"))
	fb, err := store.Get(ctx, entry(prepared, "b/g").Object)
	if err != nil {
		t.Fatal(err)
	}
	fo, err := object.DecodeFile(fb)
	if err != nil {
		t.Fatal(err)
	}
	if len(fo.Chunks) != 1 || fo.Chunks[0] != object.Sum(want) {
		t.Errorf("b/g is not the bytes the prepare read")
	}
}

func splitAll(p string) []string {
	var out []string
	for p != "" {
		var name string
		p, name = fsio.SplitPath(p)
		out = append([]string{name}, out...)
	}
	return out
}
