package cow

import (
	"context"
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"

	"github.com/cowfs/cowfs/cow/internal/cowtest"
	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
)

// BenchmarkCaptureAgain measures a snapshot after the first of a mount
// over a lower of 20000 one-line files, 100 to a directory, with nothing
// changed: the cost every later checkpoint of a big spider project pays,
// with the mount's writes held throughout.
func BenchmarkCaptureAgain(b *testing.B) {
	d := b.TempDir()
	for _, s := range []string{"lower", "upper", "work", "meta", "objects"} {
		if err := os.Mkdir(filepath.Join(d, s), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	cowtest.SpiderTree(b, filepath.Join(d, "lower"), 200)
	lo, err := lower.OpenDir(filepath.Join(d, "lower"))
	if err != nil {
		b.Fatal(err)
	}
	f, err := New(Options{Lower: lo, UpperDir: filepath.Join(d, "upper"), WorkDir: filepath.Join(d, "work"), MetaDir: filepath.Join(d, "meta")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	store, err := object.OpenDirStore(filepath.Join(d, "objects"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	first, _, _, err := f.Capture(ctx, cowtest.PutCached{DirStore: store})
	if err != nil {
		b.Fatal(err)
	}
	// A CPU profile of the repeated captures alone (-cpuprofile would
	// have the tree's creation and the first capture in it too).
	if p := os.Getenv("CAPTURE_PROFILE"); p != "" {
		pf, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		pprof.StartCPUProfile(pf)
		defer pprof.StopCPUProfile()
	}
	b.ResetTimer()
	for range b.N {
		root, _, st, err := f.Capture(ctx, cowtest.PutCached{DirStore: store})
		if err != nil {
			b.Fatal(err)
		}
		if root != first || st.BytesRead != 0 {
			b.Fatalf("unchanged lower: root %s (first %s), %d bytes read", root.Short(), first.Short(), st.BytesRead)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/20000, "µs/file")
}
