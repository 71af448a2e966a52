package cowfs_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// Four readers of one file through a mount of a master, each reading its
// quarter at the same time (processes that share the file's node,
// decision 0082): each reads its quarter's bytes, and the worker's cache
// is read about as often as for one reader of the whole file, not again
// for every read that follows another reader's (which made it 3.6x).
func TestRemoteReadersAtPlaces(t *testing.T) {
	t.Parallel()
	const size = 24<<20 + 4321
	exp := t.TempDir()
	data := randBytes(size)
	writeFile(t, filepath.Join(exp, "big"), data, 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})

	// cacheReads reads the file through a fresh worker's mount with
	// readers readers at once, each its own part, and returns how often
	// the mount read its cache.
	cacheReads := func(readers int) int64 {
		t.Helper()
		mnt := newMountpoint(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: t.TempDir(),
			Lower: cowfs.Lower{Remote: &cowfs.Remote{Addr: ms.Addr, IOTimeout: 30 * time.Second, NoLearnedPrefetch: true}}})
		if err != nil {
			t.Fatalf("mount: %v", err)
		}
		t.Cleanup(func() { ws.Close() })
		part := int64(size/readers + 1)
		var g errgroup.Group
		for r := range int64(readers) {
			g.Go(func() error {
				f, err := os.Open(filepath.Join(ws.Dir(), "big"))
				if err != nil {
					return err
				}
				defer f.Close()
				from, to := r*part, min((r+1)*part, size)
				got, err := io.ReadAll(io.NewSectionReader(f, from, to-from))
				if err != nil {
					return err
				}
				if !bytes.Equal(got, data[from:to]) {
					return fmt.Errorf("reader %d of %d: bytes %d-%d differ from the file's", r, readers, from, to)
				}
				return nil
			})
		}
		if err := within(t, 2*time.Minute, fmt.Sprintf("%d readers", readers), g.Wait); err != nil {
			t.Fatal(err)
		}
		return ws.Status().Remote.Hits
	}
	one, four := cacheReads(1), cacheReads(4)
	t.Logf("cache reads: one reader %d, four readers %d", one, four)
	if four > 2*one {
		t.Errorf("four readers read the worker's cache %d times, one reader %d; want at most twice", four, one)
	}
}
