package s3store_test

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// indexNames returns the names of the indexes under the test prefix.
func indexNames(t *testing.T, srv *s3test.Server, bucket string) []string {
	t.Helper()
	var names []string
	for _, k := range keysUnder(t, srv, bucket, "indexes/") {
		names = append(names, k[strings.LastIndex(k, "/")+1:])
	}
	slices.Sort(names)
	return names
}

// A prefix published and pushed to often between gcs keeps few indexes:
// once more than writerMergeMin name few objects, the write that made
// them so merges them after its key, and every version and checkpoint
// written reads whole from a fresh reader. Not parallel: it sets the
// bound.
func TestWritesMergeIndexes(t *testing.T) {
	defer s3store.SetWriterMergeMin(s3store.SetWriterMergeMin(4))
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	local := localStore(t)
	files := map[string][]byte{}
	type written struct {
		v     object.Digest
		files map[string][]byte
	}
	var vs []written
	most, merges := 0, 0
	last := 0
	for i := range 9 {
		for f := range 3 {
			p := fmt.Sprintf("p%02d/f%d", i, f)
			files[p] = randBytes(3000 + f)
			writeFile(t, filepath.Join(dir, p), files[p])
		}
		var v object.Digest
		if i%3 == 2 {
			// Every third write is a push of a checkpoint.
			name := fmt.Sprintf("ckpt-%d", i)
			if _, err := dst.Push(ctx, local, snapshotOf(t, local, dir, name)); err != nil {
				t.Fatal(err)
			}
			var err error
			if v, err = dst.Checkpoint(ctx, name); err != nil {
				t.Fatal(err)
			}
		} else {
			res, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
			if err != nil {
				t.Fatal(err)
			}
			v = res.Version
		}
		vs = append(vs, written{v, maps.Clone(files)})
		n := len(indexNames(t, srv, bucket))
		if n < last {
			merges++
		}
		most, last = max(most, n), n
	}
	if most > 4 || merges == 0 {
		t.Errorf("at most %d indexes after a write, %d merges; want at most 4, and merges", most, merges)
	}
	for i, w := range vs {
		sameFiles(t, fmt.Sprintf("version %d", i), readVersion(t, openAgain(t, srv, bucket), w.v), w.files)
	}
}

// A writer merges only the indexes all of whose packs it listed or
// wrote: another writer's index that it listed, but whose packs came
// after its listing of packs/, is left as it is, and what that index
// names still reads. Not parallel: it sets the bound.
func TestWriterMergeLeavesWhatItDidNotList(t *testing.T) {
	defer s3store.SetWriterMergeMin(s3store.SetWriterMergeMin(100))
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	local := localStore(t)
	files := map[string][]byte{}
	var vs []object.Digest
	var states []map[string][]byte
	for i := range 6 {
		p := fmt.Sprintf("p%02d/f", i)
		files[p] = randBytes(4000 + i)
		writeFile(t, filepath.Join(dir, p), files[p])
		res, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vs, states = append(vs, res.Version), append(states, maps.Clone(files))
	}
	before := indexNames(t, srv, bucket)
	if len(before) != 6 {
		t.Fatalf("%d indexes after 6 publishes; want one each", len(before))
	}

	other := openAgain(t, srv, bucket)
	if err := s3store.ReloadPacks(ctx, other); err != nil {
		t.Fatal(err)
	}
	unlisted := before[0]
	s3store.HideIndexPacks(other, unlisted)
	s3store.SetWriterMergeMin(4)
	s3store.MergeWritten(ctx, other)

	after := indexNames(t, srv, bucket)
	if len(after) != 2 || !slices.Contains(after, unlisted) {
		t.Fatalf("indexes after the merge: %v; want %s left and the other five merged into one", after, unlisted)
	}
	for i, v := range vs {
		sameFiles(t, fmt.Sprintf("version %d after the merge", i), readVersion(t, openAgain(t, srv, bucket), v), states[i])
	}
}
