package cow

import (
	"path/filepath"
	"testing"
)

// BenchmarkOpenMeta measures what the upper's metadata costs: making a
// fresh database (a workspace's first record; a mount waits for none)
// and reopening one (the start of a remount of a workspace with
// records), each closed again outside the timing. In one process the
// memtable's arena comes from memory freed by the last close and is
// zeroed again, which a mount process's first open does not pay.
func BenchmarkOpenMeta(b *testing.B) {
	b.Run("fresh", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dir := filepath.Join(b.TempDir(), "meta")
			b.StartTimer()
			m, err := openMeta(dir)
			if err == nil {
				_, err = m.made()
			}
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
		if err == nil {
			_, err = m.made()
		}
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
