package scan

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cowfs/cowfs/cow/internal/cowtest"
	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
)

// BenchmarkRescan measures a master's re-scan of an export of 10000
// one-line files, 100 to a directory, with nothing changed: what every
// worker's mount waits for.
func BenchmarkRescan(b *testing.B) {
	d := b.TempDir()
	cowtest.SpiderTree(b, filepath.Join(d, "export"), 100)
	lo, err := lower.OpenDirStrict(filepath.Join(d, "export"))
	if err != nil {
		b.Fatal(err)
	}
	defer lo.Close()
	store, err := object.OpenDirStore(filepath.Join(d, "objects"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var cache MemCache
	first, _, err := Tree(ctx, lo, "", cowtest.PutCached{DirStore: store}, &cache)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		e, st, err := Tree(ctx, lo, "", cowtest.PutCached{DirStore: store}, &cache)
		if err != nil {
			b.Fatal(err)
		}
		if e.Object != first.Object || st.BytesRead != 0 {
			b.Fatalf("unchanged export: %s (first %s), %d bytes read", e.Object.Short(), first.Object.Short(), st.BytesRead)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/10000, "µs/file")
}
