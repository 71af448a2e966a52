package fs

import (
	"context"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// BenchmarkCreateFloor runs BenchmarkCreate's loop on a go-fuse filesystem
// that does no work at all: its creates touch no disk and it knows no
// names. It is the floor for any go-fuse filesystem on this machine, set by
// the kernel's requests for one create (LOOKUP, CREATE, a GETATTR of the
// parent and RELEASE) and go-fuse's handling of them; cowfs's create cost
// is best read against it.
func BenchmarkCreateFloor(b *testing.B) {
	dir := b.TempDir()
	hour := time.Hour
	server, err := gofs.Mount(dir, &nullDir{}, &gofs.Options{
		EntryTimeout: &hour, AttrTimeout: &hour, NegativeTimeout: &hour,
		MountOptions: fuse.MountOptions{
			// As cowfs mounts (fs.New).
			Options: []string{"default_permissions"}, MaxWrite: 1 << 20,
			DirectMount: true, AllowOther: os.Geteuid() == 0,
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		done := make(chan error, 1)
		go func() { done <- server.Unmount() }()
		select {
		case err := <-done:
			if err != nil {
				b.Errorf("unmount: %v", err)
			}
		case <-time.After(30 * time.Second):
			unix.Unmount(dir, unix.MNT_DETACH)
			b.Errorf("unmount %s: timed out; detached", dir)
		}
	})
	createLoop(b, dir)
}

var nullIno atomic.Uint64

// nullDir is a directory that is always empty to lookups and accepts every
// create.
type nullDir struct{ gofs.Inode }

func (d *nullDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o755
	return 0
}

func (d *nullDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.ENOENT
}

func (d *nullDir) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	out.Mode = syscall.S_IFREG | 0o644
	ch := d.NewInode(ctx, &nullFile{}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: 100 + nullIno.Add(1)})
	return ch, nil, fuse.FOPEN_KEEP_CACHE, 0
}

type nullFile struct{ gofs.Inode }

func (f *nullFile) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o644
	return 0
}
