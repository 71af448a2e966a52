package fs

import (
	"context"
	"fmt"
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
	createLoop(b, mountFloor(b, &nullDir{}, false))
}

// BenchmarkReaddirFloor runs BenchmarkReaddirNew's listing on a go-fuse
// filesystem that lists 5,000 names from memory and looks none of them
// up: the floor of a listing through go-fuse on this machine. plus is
// READDIRPLUS with every entry answered without attributes, as cowfs
// answers the entries the kernel holds; plain is READDIR, the names
// alone, as fuse-overlayfs lists past a listing's first batch (libfuse's
// READDIRPLUS_AUTO).
func BenchmarkReaddirFloor(b *testing.B) {
	const n = 5000
	for _, plus := range []bool{true, false} {
		name := "plain"
		if plus {
			name = "plus"
		}
		b.Run(name, func(b *testing.B) {
			d := &listDir{}
			for i := range n {
				d.ents = append(d.ents, fuse.DirEntry{Name: fmt.Sprintf("n%05d", i), Ino: uint64(100 + i), Mode: fuse.S_IFREG})
				d.held = append(d.held, true)
			}
			dir := mountFloor(b, d, !plus)
			b.ResetTimer()
			for range b.N {
				listN(b, dir, n)
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// mountFloor mounts root with cowfs's mount options and unmounts it in
// the benchmark's cleanup, with a deadline.
func mountFloor(b *testing.B, root gofs.InodeEmbedder, noReadDirPlus bool) string {
	dir := b.TempDir()
	hour := time.Hour
	server, err := gofs.Mount(dir, root, &gofs.Options{
		EntryTimeout: &hour, AttrTimeout: &hour, NegativeTimeout: &hour,
		MountOptions: fuse.MountOptions{
			// As cowfs mounts (fs.New).
			Options: []string{"default_permissions"}, MaxWrite: 1 << 20,
			DirectMount: true, AllowOther: os.Geteuid() == 0,
			DisableReadDirPlus: noReadDirPlus,
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
	return dir
}

// listDir is a directory listed from memory; a lookup finds none of its
// entries.
type listDir struct {
	nullDir
	ents []fuse.DirEntry
	held []bool
}

func (d *listDir) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &heldListing{&listing{ents: d.ents, held: d.held}}, 0, 0
}

// heldListing answers READDIRPLUS for every entry without attributes.
type heldListing struct{ *listing }

func (h *heldListing) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EEXIST
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
