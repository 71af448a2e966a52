package cow

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCounters: a write to a lower file copies the file up once and
// brings up the chunks it touches, once each; a second write to the same
// chunk brings up nothing.
func TestCounters(t *testing.T) {
	e := newEngine(t, func(t *testing.T, lower string) {
		if err := os.Mkdir(filepath.Join(lower, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(lower, "d", "f"), randData(3*ChunkSize))
	})
	if got := e.f.Counters(); got != (Counters{}) {
		t.Fatalf("fresh FS counted %+v", got)
	}
	// Across the boundary of chunks 0 and 1: the directory and the file
	// are copied up, and two chunks brought up.
	e.write(t, "d/f", ChunkSize-10, []byte("0123456789abcdef"))
	if got, want := e.f.Counters(), (Counters{CopyUps: 2, ChunksCopiedUp: 2}); got != want {
		t.Fatalf("after a write across two chunks: %+v, want %+v", got, want)
	}
	e.write(t, "d/f", 5, []byte("x"))
	if got, want := e.f.Counters(), (Counters{CopyUps: 2, ChunksCopiedUp: 2}); got != want {
		t.Fatalf("after a second write to chunk 0: %+v, want %+v", got, want)
	}
}
