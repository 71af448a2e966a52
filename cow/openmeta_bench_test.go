package cow

import (
	"path/filepath"
	"testing"
)

// BenchmarkOpenMeta measures what a mount's start waits for in the upper's
// metadata: opening a fresh database (a first mount) and reopening one
// (a remount), each closed again outside the timing. In one process the
// memtable's arena comes from memory freed by the last close and is
// zeroed again, which a mount process's first open does not pay.
func BenchmarkOpenMeta(b *testing.B) {
	b.Run("fresh", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dir := filepath.Join(b.TempDir(), "meta")
			b.StartTimer()
			m, err := openMeta(dir)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			m.close()
		}
	})
	b.Run("reopen", func(b *testing.B) {
		dir := filepath.Join(b.TempDir(), "meta")
		m, err := openMeta(dir)
		if err != nil {
			b.Fatal(err)
		}
		m.close()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			m, err := openMeta(dir)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			m.close()
			b.StartTimer()
		}
	})
}
