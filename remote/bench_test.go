package remote_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// benchObjects serves n objects of size bytes each and returns their
// digests and a fresh cache over an empty store for the worker.
func benchObjects(b *testing.B, n, size int) ([]object.Digest, func() *remote.Cache) {
	exp := b.TempDir()
	ms := remotetest.StartMaster(b, exp, remote.ServerConfig{})
	store, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		b.Fatal(err)
	}
	ds := make([]object.Digest, n)
	for i := range ds {
		enc, _ := object.EncodeBlob(randBytes(size))
		if ds[i], err = store.Put(context.Background(), enc); err != nil {
			b.Fatal(err)
		}
	}
	client, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close() })
	return ds, func() *remote.Cache {
		ws, err := object.OpenDirStore(filepath.Join(b.TempDir(), "objects"))
		if err != nil {
			b.Fatal(err)
		}
		c, err := remote.NewCache(ws, client, nil)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
}

// BenchmarkFetch measures a cold fetch through the cache: one round trip,
// verification on both sides, and the cache write.
func BenchmarkFetch(b *testing.B) {
	for _, size := range []int{4 << 10, 100 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			// A cache in use: its fan-out directories exist.
			ds, newCache := benchObjects(b, min(b.N, 2048), size)
			c := newCache()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i > 0 && i%len(ds) == 0 {
					b.StopTimer()
					c.Close()
					c = newCache()
					b.StartTimer()
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, err := c.Get(ctx, ds[i%len(ds)]); err != nil {
					b.Fatal(err)
				}
				cancel()
			}
		})
	}
}

// BenchmarkResolveUnchanged resolves an export of n one-byte files in 100
// directories that did not change since the master last scanned it: what
// a mount waits for at the master.
func BenchmarkResolveUnchanged(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			exp := b.TempDir()
			for i := range n {
				writeFile(b, filepath.Join(exp, fmt.Sprintf("d%02d/f%06d", i%100, i)), []byte{byte(i)}, 0o644)
			}
			ms := remotetest.StartMaster(b, exp, remote.ServerConfig{})
			client, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr, Timeout: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			ctx := context.Background()
			first, err := client.Resolve(ctx, "")
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if v, err := client.Resolve(ctx, ""); err != nil || v != first {
					b.Fatalf("resolve: %v, %v", v, err)
				}
			}
		})
	}
}
