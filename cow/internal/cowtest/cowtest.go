package cowtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cowfs/cowfs/cow/object"
)

// PutCached is the store a snapshot uses: objects without an fsync each.
type PutCached struct{ *object.DirStore }

func (p PutCached) Put(ctx context.Context, b []byte) (object.Digest, error) {
	return p.PutCached(ctx, b)
}

// SpiderTree fills root with dirs directories of 100 one-line files, as
// a spider project's many small files.
func SpiderTree(b testing.TB, root string, dirs int) {
	for i := range dirs {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for j := range 100 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.py", j)), []byte(fmt.Sprintf("print(%d)\n", i*100+j)), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TreeOf reads and decodes tree d from store, failing t if it cannot.
func TreeOf(t *testing.T, store *object.DirStore, d object.Digest) *object.Tree {
	t.Helper()
	b, err := store.Get(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := object.DecodeTree(b)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}
