package cow

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
)

// putCached is the store a snapshot uses: objects without an fsync each.
type putCached struct{ *object.DirStore }

func (p putCached) Put(ctx context.Context, b []byte) (object.Digest, error) {
	return p.PutCached(ctx, b)
}

// spiderTree fills root with dirs directories of 100 one-line files, as
// a spider project's many small files.
func spiderTree(b *testing.B, root string, dirs int) {
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
	spiderTree(b, filepath.Join(d, "lower"), 200)
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
	first, _, _, err := f.Capture(ctx, putCached{store})
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
		root, _, st, err := f.Capture(ctx, putCached{store})
		if err != nil {
			b.Fatal(err)
		}
		if root != first || st.BytesRead != 0 {
			b.Fatalf("unchanged lower: root %s (first %s), %d bytes read", root.Short(), first.Short(), st.BytesRead)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/20000, "µs/file")
}

// BenchmarkRescan measures a master's re-scan of an export of 10000
// one-line files, 100 to a directory, with nothing changed: what every
// worker's mount waits for.
func BenchmarkRescan(b *testing.B) {
	d := b.TempDir()
	spiderTree(b, filepath.Join(d, "export"), 100)
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
	var cache MemScanCache
	first, _, err := ScanLower(ctx, lo, "", putCached{store}, &cache)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		e, st, err := ScanLower(ctx, lo, "", putCached{store}, &cache)
		if err != nil {
			b.Fatal(err)
		}
		if e.Object != first.Object || st.BytesRead != 0 {
			b.Fatalf("unchanged export: %s (first %s), %d bytes read", e.Object.Short(), first.Object.Short(), st.BytesRead)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/10000, "µs/file")
}
