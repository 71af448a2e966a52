package fs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow"
	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
)

// Options describes a mount. The workspace (package cowfs) opens the
// lower, picks and checks the directories, and holds the pins; fs only
// serves them to the kernel. Zero values are documented per field.
type Options struct {
	// Lower is the read-only layer beneath the mount, already open: a
	// lower.Dir, or a lower.Objects over a snapshot or a remote
	// version. Its opener closes it after the mount is closed. Required.
	Lower lower.Layer
	// Upper and Work are the upper directory (files at their paths) and
	// the work directory (on the same filesystem; cowfs keeps its
	// metadata there too), made when missing. Required.
	Upper, Work string
	// Opened, if set, is Work opened by OpenWork with these options
	// while the lower was being opened; New takes it over, and closes
	// it if it fails.
	Opened *Work
	// Store and Refs, when set, keep the mount's snapshots; without
	// them Snapshot and Push refuse.
	Store *object.DirStore
	Refs  *refs.Dir
	// LowerDir is the local directory beneath, when the lower is one:
	// snapshots record it, for cowfs verify --repair. Parent is the
	// snapshot the lower is (a restore): snapshots of the mount name it
	// as their parent.
	LowerDir, Parent string
	// FsName is the source shown in /proc/mounts; default "cowfs".
	FsName string
	// CacheTimeout is how long the kernel may trust entries and
	// attributes. cowfs is the only writer of its upper and the lower
	// does not change while mounted, so the default is long: one hour.
	CacheTimeout time.Duration
	// Passthrough lets the kernel read and write files born in the upper
	// directly, bypassing cowfs: about 3.6x the write throughput on such
	// files. It is off by default because a snapshot cannot hold writes
	// that never reach cowfs, so with it a snapshot is not atomic for
	// files being written through passthrough while it is taken.
	Passthrough bool
	// PassthroughLower lets the kernel read lower files directly: a
	// read-only open of a file none of whose bytes were copied up is
	// passed through to the lower file, so warm reads come from the
	// lower's own page cache at native speed. It is off by default
	// because such a descriptor keeps reading the lower's bytes after
	// another descriptor writes the file (the write copies the chunk up,
	// and the kernel cannot move an open passthrough file to a new
	// backing file). Opens made while one is open bypass the page cache
	// (FOPEN_DIRECT_IO), so they and every later open see the new bytes.
	PassthroughLower bool
	// WritebackCache lets the kernel keep written data in its page cache
	// and write it back to cowfs later, in large batches: small writes
	// then cost no round trip (4 KiB writes about 10x faster). Data a
	// process wrote but did not fsync is lost if the mount process dies
	// before the kernel writes it back, as on a power cut; a snapshot
	// holds everything written before it began (it flushes the kernel's
	// cache first), but a write racing with it may be in it only in part.
	// SEEK_DATA and SEEK_HOLE then report the whole file as data. It
	// cannot be combined with Passthrough or PassthroughLower.
	WritebackCache bool
	// Reserve is the space, in bytes, kept free on the upper's
	// filesystem: writes get ENOSPC rather than take it, so the
	// metadata database always has room (cow.Options.Reserve). 0 means
	// cow.DefaultReserve, a negative value none.
	Reserve int64
	// ReadAhead is how far, in bytes, the kernel reads ahead of a
	// sequential reader of a file. 0 means DefaultReadAhead; a negative
	// value leaves the kernel's default for FUSE (128 KiB). Setting it
	// needs root (it is the mount's /sys/class/bdi entry); without root
	// the kernel's default stays and the mount log says so.
	ReadAhead int64
	// Fetch, with a remote lower, gets an object the local store lacks
	// (from the remote cache): a snapshot fetches what it references and
	// the store does not hold, so that the snapshot stands on its own.
	Fetch object.Getter
	// IOTimeout, when positive, bounds each read of the lower from the
	// moment the kernel asks: whatever it waits for beneath (another read
	// of the file, a fetch from the master and its retries), the read
	// fails with EIO once this has passed. Zero: no bound.
	IOTimeout time.Duration
	// Debug logs every FUSE request.
	Debug bool
	// Logger receives errors and warnings; nil means slog.Default().
	Logger *slog.Logger
	// Instrument, when set, wraps the raw filesystem go-fuse serves,
	// outside every lock of cowfs's: it sees each request (metrics).
	Instrument func(fuse.RawFileSystem) fuse.RawFileSystem
	// AllowOther lets users other than the one who mounted use the
	// mount (FUSE's allow_other; for a user other than root,
	// /etc/fuse.conf must say user_allow_other). nil: on for root, off
	// for others.
	AllowOther *bool
	// ReadOnly mounts read-only: the kernel answers every change with
	// EROFS.
	ReadOnly bool
	// Shown, when not nil, is the owner and mode every file is shown
	// with.
	Shown *Shown
}

// Mount is a live cowfs mount.
type Mount struct {
	Dir    string
	server *fuse.Server
	fs     *cow.FS
	ms     *mount
	once   sync.Once
	err    error

	// Snapshot support; nil when the mount has no state directory.
	store  *object.DirStore
	refs   *refs.Dir
	parent string
	log    *slog.Logger

	upper string
	fetch object.Getter
	// completeTrees are the trees of fetch's version whose every object
	// an earlier snapshot found in the local store (see complete).
	completeTrees object.KnownSet

	// lowerDir is the lower directory of a mount over a local one: its
	// snapshots record it, for cowfs verify --repair.
	lowerDir string
}

// mount is the state the kernel inodes share.
type mount struct {
	fs               *cow.FS
	log              *slog.Logger
	passthrough      bool
	passthroughLower bool
	writeback        bool
	ioTimeout        time.Duration
	writers          writers
	// reads counts READ requests served; passed-through reads never
	// arrive, which is how the tests see passthrough at work.
	reads atomic.Uint64
	regen regens
	// tree makes a rename one step for the requests that use a path
	// (treelock.go).
	tree sync.RWMutex
}

// The state directory's layout is package statedir's; these are its
// functions under the names fs's callers know.

// New mounts o.Lower beneath o.Upper at dir and returns once the mount
// serves requests. The directories were checked by its caller (package
// cowfs validates the whole workspace first); New refuses only what go-fuse
// and the kernel cannot serve. A mount that fails part way releases what it
// had set up, newest first: nothing it opened or mounted outlives the
// error. The lower stays its caller's to close.
func New(dir string, o Options) (_ *Mount, err error) {
	opened := o.Opened.take()
	defer func() {
		if err != nil {
			opened.Close()
		}
	}()
	switch {
	case o.Lower == nil:
		return nil, errors.New("no lower layer given")
	case o.Upper == "" || o.Work == "":
		return nil, errors.New("an upper and a work directory are required")
	case o.WritebackCache && (o.Passthrough || o.PassthroughLower):
		return nil, errors.New("the writeback cache cannot be combined with passthrough")
	case (o.Store == nil) != (o.Refs == nil):
		return nil, errors.New("snapshots need both an object store and refs")
	}
	var undo undoStack
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	m := &Mount{Dir: dir, upper: o.Upper, parent: o.Parent, lowerDir: o.LowerDir,
		store: o.Store, refs: o.Refs, fetch: o.Fetch}
	m.log = o.Logger
	if m.log == nil {
		m.log = slog.Default()
	}
	// Where a mount's start goes, at debug level (scripts/bench-mount).
	last := time.Now()
	step := func(step string) {
		now := time.Now()
		m.log.Debug("open step", "step", step, "took", now.Sub(last))
		last = now
	}
	if err := makeUpper(o.Lower, o.Upper, o.Work); err != nil {
		return nil, err
	}
	cfs, err := cow.New(cow.Options{
		Lower:    o.Lower,
		UpperDir: o.Upper,
		WorkDir:  o.Work,
		MetaDir:  filepath.Join(o.Work, "meta"),
		Logger:   m.log,
		// With the writeback cache the kernel owns mtimes.
		WritesKeepMtime: o.WritebackCache,
		Reserve:         o.Reserve,
		Work:            opened,
	})
	// cow.New took it over, or closed it.
	opened = nil
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, fmt.Errorf("upper %s is in use by another cowfs mount: %w", o.Upper, err)
	} else if err != nil {
		return nil, err
	}
	undo.push(func() { cfs.Close() })
	step("upper and metadata opened")
	m.fs = cfs
	m.ms = &mount{fs: cfs, log: m.log, passthrough: o.Passthrough, passthroughLower: o.PassthroughLower, writeback: o.WritebackCache, ioTimeout: o.IOTimeout}
	root := &node{c: cfs.Root(), m: m.ms}
	if m.server, err = serve(dir, root, fuseOptions(cfs, o), &m.ms.tree, o.Shown, o.Instrument); err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	undo.push(func() { unmountServer(m.server, dir) })
	step("kernel mount serves")
	if err := setReadAhead(dir, o.ReadAhead); err != nil {
		m.log.Info("kernel read-ahead left at its default", "err", err)
	}
	// The control socket is the workspace's (cowfs.Open), not the
	// kernel adapter's: Mount is its handler.
	return m, nil
}

// undoStack is what New has set up so far, each with its release; run
// releases them newest first.
type undoStack []func()

func (u *undoStack) push(release func()) { *u = append(*u, release) }

func (u undoStack) run() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

// makeUpper creates the upper and work directories. A fresh upper's root
// is the mount's root: it starts out as the lower's root looks, not as a
// private state directory does.
func makeUpper(lower lower.Layer, upper, work string) error {
	_, statErr := os.Lstat(upper)
	freshUpper := errors.Is(statErr, os.ErrNotExist)
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	if freshUpper {
		return copyRootAttrs(lower, upper)
	}
	return nil
}

// mountOptions are the options the kernel gets for the mount.
func mountOptions(o Options) []string {
	opts := []string{"default_permissions"}
	if o.ReadOnly {
		opts = append(opts, "ro")
	}
	return opts
}

// fuseOptions are go-fuse's options for a mount of cfs.
func fuseOptions(cfs *cow.FS, o Options) *gofs.Options {
	timeout := o.CacheTimeout
	if timeout == 0 {
		timeout = time.Hour
	}
	fsname := o.FsName
	if fsname == "" {
		fsname = "cowfs"
	}
	return &gofs.Options{
		// The root's inode number is the one its stat reports, as for
		// every other node; go-fuse would use 0.
		RootStableAttr:  &gofs.StableAttr{Ino: cfs.Root().Ino, Gen: cfs.Root().Gen},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		// A mode of 0000 is a mode: go-fuse would report 0644 (0755
		// for a directory), and with default_permissions the kernel
		// would then let anyone read a file no one may.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName:      fsname,
			Name:        "cowfs",
			AllowOther:  allowOther(o.AllowOther),
			Options:     mountOptions(o),
			MaxWrite:    1 << 20,
			DirectMount: true,
			Debug:       o.Debug,
			// Symlinks never change behind the kernel's back.
			EnableSymlinkCaching: true,
			// Without this the kernel revalidates attributes on
			// reads and drops the page cache when they differ;
			// nothing changes a file behind the kernel's back here,
			// and warm reads measured 0.77x native with it, 0.9x
			// without (docs/benchmarks.md).
			ExplicitDataCacheControl: true,
			// Reads answer with bytes, never a descriptor, so there
			// is nothing to splice. With splicing on, go-fuse still
			// sets up a pipe for every READ before it finds that out,
			// and for a READ over 1 MiB minus a page it logs a failure
			// each time.
			DisableSplice: true,
			// See killpriv.go.
			ExtraCapabilities: killPrivCaps | writebackCaps(o.WritebackCache),
			// READDIRPLUS's entries carry attributes that shownAttrs
			// does not see.
			DisableReadDirPlus: o.Shown != nil,
		},
	}
}

// waitMount is fuse.Server.WaitMount; a test makes it fail after the
// kernel mount is made, which nothing real does on demand.
var waitMount = (*fuse.Server).WaitMount

// serve is gofs.Mount with the raw filesystem wrapped in shownAttrs if
// shown is set, that in treeLocked, and that in wrap if set
// (Options.Instrument). If the mount is made but does not come up, serve
// takes it down again: otherwise it would stay, served by nothing once
// New closes the layers.
func serve(dir string, root gofs.InodeEmbedder, opts *gofs.Options, tree *sync.RWMutex, shown *Shown, wrap func(fuse.RawFileSystem) fuse.RawFileSystem) (*fuse.Server, error) {
	nodes := gofs.NewNodeFS(root, opts)
	if shown != nil {
		nodes = &shownAttrs{RawFileSystem: nodes, s: *shown}
	}
	var raw fuse.RawFileSystem = &treeLocked{RawFileSystem: nodes, mu: tree}
	if wrap != nil {
		raw = wrap(raw)
	}
	server, err := fuse.NewServer(raw, dir, &opts.MountOptions)
	if err != nil {
		return nil, err
	}
	go server.Serve()
	if err := waitMount(server); err != nil {
		if uerr := unmountServer(server, dir); uerr != nil {
			return nil, fmt.Errorf("%w; and unmount: %v", err, uerr)
		}
		return nil, err
	}
	return server, nil
}

// unmountServer unmounts dir and waits for its server to stop. A busy
// mount is detached, so it goes away when its last user does.
func unmountServer(s *fuse.Server, dir string) error {
	err := s.Unmount()
	if err != nil {
		if derr := unix.Unmount(dir, unix.MNT_DETACH); derr == nil {
			err = nil
		}
	}
	s.Wait()
	return err
}

func allowOther(o *bool) bool {
	if o == nil {
		return os.Geteuid() == 0
	}
	return *o
}

func writebackCaps(on bool) uint64 {
	if on {
		return fuse.CAP_WRITEBACK_CACHE
	}
	return 0
}

func copyRootAttrs(lower lower.Layer, upper string) error {
	st, err := lower.Lstat("")
	if err != nil {
		return fmt.Errorf("lower root: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := unix.Chown(upper, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("upper root: %w", err)
		}
	}
	if err := unix.Chmod(upper, st.Mode&07777); err != nil {
		return fmt.Errorf("upper root: %w", err)
	}
	// Extended attributes too: a restore's root must show those its
	// snapshot recorded, a mount's those of the lower's root.
	names, err := lower.Listxattr("")
	if err != nil {
		return fmt.Errorf("lower root: %w", err)
	}
	for _, x := range names {
		if cow.OwnXattr(x) {
			continue
		}
		v, err := lower.Getxattr("", x)
		if err != nil {
			return fmt.Errorf("lower root: xattr %s: %w", x, err)
		}
		if err := unix.Lsetxattr(upper, x, v, 0); err != nil {
			return fmt.Errorf("upper root: xattr %s: %w", x, err)
		}
	}
	// Last: setting an attribute changes the ctime, not the times set here.
	if err := unix.UtimesNano(upper, []unix.Timespec{st.Atim, st.Mtim}); err != nil {
		return fmt.Errorf("upper root: %w", err)
	}
	return nil
}

// CheckMountpoint refuses a mountpoint that is missing, not a directory,
// not empty, or already a mount, live or dead: the workspace's Validate
// asks it before anything is created. A dead mount (its server
// exited) answers a stat from the kernel's attribute cache while that
// holds, and with ENOTCONN once a change in it has dropped the cache.
func CheckMountpoint(dir string) error {
	dead := func() error {
		return fmt.Errorf("mountpoint %s is a dead mount (the process that served it exited); run: cowfs unmount %s", dir, dir)
	}
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, syscall.ENOTCONN) {
			return dead()
		}
		return fmt.Errorf("mountpoint: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory", dir)
	}
	if mounted, err := IsMountpoint(dir); err != nil {
		return err
	} else if mounted {
		if IsDead(dir) {
			return dead()
		}
		return fmt.Errorf("%s is already a mountpoint", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("mountpoint %s is not empty", dir)
	}
	return nil
}

// IsDead reports whether the mount at dir has lost its server. statfs,
// not stat: the kernel answers a stat from its attribute cache, dead
// server or not, while a statfs always asks the server. A server that is
// alive but stuck would block the statfs for good: after 2 s the mount
// counts as not dead, and the call is left behind.
func IsDead(dir string) bool {
	done := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		done <- unix.Statfs(dir, &st)
	}()
	select {
	case err := <-done:
		return errors.Is(err, unix.ENOTCONN)
	case <-time.After(2 * time.Second):
		return false
	}
}

// IsMountpoint reports whether dir is the root of a mount.
func IsMountpoint(dir string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Lstat(dir, &a); err != nil {
		return false, err
	}
	if err := unix.Lstat(filepath.Join(dir, ".."), &b); err != nil {
		return false, err
	}
	return a.Dev != b.Dev || a.Ino == b.Ino, nil
}

// Unmount unmounts and releases the layers. Metadata is flushed whether or
// not the kernel let go of the mount.
func (m *Mount) Unmount() error {
	err := unmountServer(m.server, m.Dir)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	return err
}

// Counters are the engine's counters (copy-ups), for metrics.
func (m *Mount) Counters() cow.Counters { return m.fs.Counters() }

// Wait blocks until the mount is unmounted (by Unmount, or by umount(8)).
func (m *Mount) Wait() { m.server.Wait() }

// Close releases the layers after Wait returned because of an external
// unmount.
func (m *Mount) Close() error {
	m.once.Do(func() {
		m.err = m.fs.Close()
	})
	return m.err
}
