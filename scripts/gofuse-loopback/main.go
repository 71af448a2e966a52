// Command gofuse-loopback mounts go-fuse's own loopback filesystem, the
// simplest passthrough filesystem go-fuse offers, with the kernel settings
// cowfs mounts with (cache timeouts, default_permissions, 1 MiB writes,
// 256 KiB read-ahead, explicit data cache control, one CPU per two). scripts/bench
// runs it as a baseline column: what any go-fuse filesystem that serves
// a directory pays on this machine before it does any work of its own.
//
//	gofuse-loopback [-passthrough] [-readahead KB] DIR MNT
//
// go-fuse's loopback passes every open file through to the kernel when it
// can. Here, as with cowfs's defaults, it does not (-passthrough turns it
// back on): writes are round trips, and reads go through the FUSE page
// cache, which an open keeps (FOPEN_KEEP_CACHE, as cowfs's opens of
// lower files do; go-fuse's loopback would drop it at every open).
//
// It serves until MNT is unmounted (fusermount3 -u MNT) or it gets SIGTERM
// or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("gofuse-loopback: ")
	passthrough := flag.Bool("passthrough", false, "pass open files through to the kernel")
	readahead := flag.Int("readahead", 256, "the mount's read-ahead, KiB (cowfs's default; the kernel's own is 128)")
	flag.Parse()
	if flag.NArg() != 2 || *readahead < 0 {
		log.Fatal("usage: gofuse-loopback [-passthrough] [-readahead KB] DIR MNT")
	}
	dir, mnt := flag.Arg(0), flag.Arg(1)
	// As cowfs's default --procs.
	runtime.GOMAXPROCS(max(1, runtime.NumCPU()/2))
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		log.Fatal(err)
	}
	lr := &gofs.LoopbackRoot{Path: dir, Dev: st.Dev}
	var root gofs.InodeEmbedder = &gofs.LoopbackNode{RootData: lr}
	if !*passthrough {
		lr.NewNode = func(r *gofs.LoopbackRoot, _ *gofs.Inode, _ string, _ *syscall.Stat_t) gofs.InodeEmbedder {
			return &node{gofs.LoopbackNode{RootData: r}}
		}
		root = lr.NewNode(lr, nil, "", nil)
	}
	lr.RootNode = root
	hour := time.Hour
	server, err := gofs.Mount(mnt, root, &gofs.Options{
		EntryTimeout: &hour, AttrTimeout: &hour, NegativeTimeout: &hour,
		MountOptions: fuse.MountOptions{
			FsName:                   dir,
			Name:                     "gofuse-loopback",
			AllowOther:               os.Geteuid() == 0,
			Options:                  []string{"default_permissions"},
			MaxWrite:                 1 << 20,
			DirectMount:              true,
			ExplicitDataCacheControl: true,
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	// By default the read-ahead cowfs sets (fs.DefaultReadAhead).
	if err := unix.Stat(mnt, &st); err == nil {
		p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
		if err := os.WriteFile(p, []byte(strconv.Itoa(*readahead)), 0); err != nil {
			log.Printf("read-ahead left at its default: %v", err)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		server.Unmount()
	}()
	server.Wait()
}

// node is go-fuse's loopback node whose open files are not passed through.
type node struct{ gofs.LoopbackNode }

// file hides LoopbackFile's PassthroughFd, which go-fuse would use.
type file struct{ *gofs.LoopbackFile }

func (f *file) PassthroughFd() (int, bool) { return -1, false }

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if lf, ok := fh.(*gofs.LoopbackFile); ok {
		fh = &file{lf}
	}
	return fh, fl | fuse.FOPEN_KEEP_CACHE, errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	ch, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if lf, ok := fh.(*gofs.LoopbackFile); ok {
		fh = &file{lf}
	}
	return ch, fh, fl | fuse.FOPEN_KEEP_CACHE, errno
}
