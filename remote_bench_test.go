package cowfs_test

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// BenchmarkColdSeqRead reads a 256 MiB file of an export through a worker
// mount whose cache is empty, as cat does: the master's reads and sends,
// the worker's fetches, checks and cache writes, and FUSE, all in this
// process (so a CPU profile shows both ends).
func BenchmarkColdSeqRead(b *testing.B) {
	const size = 256 << 20
	exp := b.TempDir()
	f, err := os.Create(filepath.Join(exp, "big"))
	if err != nil {
		b.Fatal(err)
	}
	chunk := randBytes(1 << 20)
	for i := range size >> 20 {
		chunk[0] = byte(i) // distinct chunks
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	ms := remotetest.StartMaster(b, exp, remote.ServerConfig{})
	buf := make([]byte, 1<<20)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		rm := mountRemote(remotetest.NewWorker(b), ms.Addr, remotetest.ViewOptions{})
		b.StartTimer()
		r, err := os.Open(filepath.Join(rm.dir, "big"))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, r, buf)
		r.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	}
}
