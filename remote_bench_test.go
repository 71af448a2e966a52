package cowfs_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cowfs/cowfs"
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

// BenchmarkOpenRemote opens a workspace over a master's export of 1,000
// small files at a new mountpoint, as cowfs mount --remote does in its
// mount process (process starts aside: scripts/bench-mount), until the
// mount serves, and closes it outside the timing. The master has its
// version already.
func BenchmarkOpenRemote(b *testing.B) {
	exp := b.TempDir()
	for i := range 1000 {
		d := filepath.Join(exp, fmt.Sprintf("d%02d", i%10))
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d", i)), []byte{byte(i), 1}, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	ms := remotetest.StartMaster(b, exp, remote.ServerConfig{})
	state := b.TempDir()
	ctx := context.Background()
	for i := range b.N + 1 {
		mnt := filepath.Join(b.TempDir(), "mnt")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			b.Fatal(err)
		}
		if i == 1 {
			// The first open warmed the master.
			b.ResetTimer()
		}
		b.StartTimer()
		ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: state,
			Lower: cowfs.Lower{Remote: &cowfs.Remote{Addr: ms.Addr}}})
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if err := ws.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
