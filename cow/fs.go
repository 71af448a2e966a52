package cow

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/names"
)

// Options configures an FS. UpperDir, WorkDir and MetaDir must exist.
type Options struct {
	// Lower is the read-only layer. Required.
	Lower lower.Layer
	// UpperDir holds the upper layer's files at their merged paths.
	UpperDir string
	// WorkDir is where copy-ups are prepared; it must be on the same
	// filesystem as UpperDir and must not be inside it.
	WorkDir string
	// MetaDir holds the badger database of the upper's metadata.
	MetaDir string
	// Logger receives warnings; nil means slog.Default().
	Logger *slog.Logger
	// WritesKeepMtime makes a write leave the upper file's mtime as it
	// was. For a FUSE mount with the kernel's writeback cache: the
	// kernel owns a file's mtime then, sets it with a setattr, and may
	// write back data after that setattr.
	WritesKeepMtime bool
	// Reserve is the space, in bytes, kept free on the upper's
	// filesystem for the metadata database (see space): 0 means
	// DefaultReserve, a negative value none.
	Reserve int64
	// Work, if set, is the work directory and metadata OpenWork opened
	// from these options ahead of the lower; New takes it over, and
	// closes it if it fails.
	Work *Work
}

// FS is the merged view of a lower layer under an upper layer.
//
// Namespace changes (create, remove, rename, copy-up) take mu exclusively and
// lookups take it shared. One lock, instead of a lock per directory, keeps
// copy-up of a parent chain, whiteouts and renames trivially atomic with
// respect to each other; the kernel's entry and attribute caches answer most
// lookups without reaching it.
type FS struct {
	mu sync.RWMutex
	// gate is held shared by every data write that does not hold mu
	// (write, fallocate) and exclusively by a snapshot, which also holds
	// mu: together they stop every change for the instant a snapshot
	// needs. Lock order: mu, gate, Node.mu.
	gate sync.RWMutex
	lo   lower.Layer
	up   *upperLayer
	meta *metaStore
	log  *slog.Logger
	root *Node
	// sameDev is true when upper and lower share a filesystem, so their
	// inode numbers cannot collide.
	sameDev bool
	// umask is the process's, read once at New: what it masks from a
	// new inode's mode, own puts back.
	umask uint32
	// euid and egid are the process's, read once at New: own asks for
	// them on every create, and each is a system call.
	euid, egid int
	// keepMtime: see Options.WritesKeepMtime.
	keepMtime bool
	space     *space
	// lowerGone is set once a merged directory's lower was found
	// removed, so that the warning is logged once.
	lowerGone atomic.Bool
	// counts: see Counters.
	copyUps, chunksUp atomic.Uint64
	// kept counts the entries directories keep (dirlist.go). It is an
	// object of its own: the cleanup that gives back a directory's share
	// must not keep f, and so the root directory, alive.
	kept *atomic.Int64
	// closeOnce makes Close release the descriptors once: a second
	// close by number would close whatever was given the number since.
	closeOnce sync.Once
	closeErr  error
}

// Cred is the caller a new inode belongs to.
type Cred struct{ Uid, Gid uint32 }

// New opens the layers described by opts.
func New(opts Options) (*FS, error) {
	work := opts.Work
	if opts.Lower == nil {
		work.Close()
		return nil, errors.New("cow: no lower layer")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	workLock := -1
	if work != nil {
		workLock = work.lock
	}
	up, err := openUpper(opts.UpperDir, opts.WorkDir, workLock)
	if err != nil {
		work.Close()
		return nil, err
	}
	// The work directory's lock is the upper's now.
	var mounted bool
	if work != nil {
		work.lock, mounted = -1, work.mounted
	} else {
		// Before the metadata is made: its presence tells an upper
		// that a mount has had from one that is new.
		_, metaErr := os.Stat(opts.MetaDir)
		mounted = metaErr == nil
	}
	if err := up.choosePrefix(mounted); err != nil {
		work.Close()
		up.close()
		return nil, err
	}
	// Once per mount: where the identities are is what an operator
	// needs to know when one mount of an upper refuses what another made.
	log.Info("upper xattr namespace", "upper", opts.UpperDir, "prefix", up.prefix, "why", up.prefixFrom)
	if err := up.cleanWork(); err != nil {
		work.Close()
		up.close()
		return nil, fmt.Errorf("clean work dir: %w", err)
	}
	reserve := reserveOf(opts)
	var meta *metaStore
	if work != nil {
		meta, work.meta = work.meta, nil
	} else if meta, err = openMetaRoom(opts.MetaDir, reserve); err != nil {
		up.close()
		return nil, err
	}
	lst, err := opts.Lower.Lstat("")
	if err != nil {
		meta.close()
		up.close()
		return nil, fmt.Errorf("lower root: %w", err)
	}
	if lst.Mode&unix.S_IFMT != unix.S_IFDIR {
		meta.close()
		up.close()
		return nil, fmt.Errorf("lower root is not a directory")
	}
	f := &FS{lo: opts.Lower, up: up, meta: meta, log: log, sameDev: lst.Dev == up.dev, umask: processUmask(), euid: os.Geteuid(), egid: os.Getegid(), keepMtime: opts.WritesKeepMtime, kept: new(atomic.Int64)}
	if reserve > 0 {
		f.space = &space{fd: up.root, reserve: reserve}
	}
	rootID, err := up.identityAt(up.root, "")
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("upper root identity: %w", err)
	}
	f.root = &Node{Type: unix.S_IFDIR, Ino: lst.Ino, Gen: 1, hasLower: true, upper: true, id: rootID.ID}
	dm, err := meta.dir(rootID.ID)
	if err != nil {
		f.Close()
		return nil, err
	}
	if dm.Opaque {
		f.root.hasLower = false
	}
	return f, nil
}

// Close releases the layers and flushes the metadata. A later Close does
// nothing and returns what the first returned.
func (f *FS) Close() error {
	f.closeOnce.Do(func() {
		f.closeErr = f.meta.close()
		f.up.close()
	})
	return f.closeErr
}

// Root returns the root directory node.
func (f *FS) Root() *Node { return f.root }

// rootPath returns the path of the root.
func (f *FS) rootPath() Path { return Path{Nodes: []*Node{f.root}} }

// Sync makes every metadata change durable.
func (f *FS) Sync() error { return f.meta.sync() }

// upperIno maps an upper inode's own number into the merged inode space.
// When upper and lower share a filesystem their numbers never collide; when
// they do not, the top bit keeps upper numbers apart from lower ones.
func (f *FS) upperIno(ino uint64) uint64 {
	if f.sameDev {
		return ino
	}
	return ino | 1<<63
}

func isNotExist(err error) bool { return errors.Is(err, syscall.ENOENT) }

// Lookup finds name in directory dir.
func (f *FS) Lookup(dir Path, name string) (*Node, unix.Stat_t, error) {
	if err := names.Valid(name); err != nil {
		return nil, unix.Stat_t{}, err
	}
	f.mu.RLock()
	n, st, err := f.lookup(dir, name)
	f.mu.RUnlock()
	if err != nil || n.upper || n.Type != unix.S_IFREG || st.Nlink < 2 {
		return n, st, err
	}
	// A lower name of a file with several names: if another of its
	// names was copied up, this one must show that inode, so it is
	// brought up now, as a link to it.
	if _, ok, err := f.meta.index(n.Ino); err != nil || !ok {
		return n, st, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n, st, err = f.lookup(dir, name); err != nil || n.upper {
		return n, st, err
	}
	p := dir.child(name, n)
	if err := f.copyUpLocked(p); err != nil {
		return nil, st, err
	}
	st, err = f.attr(p)
	return n, st, err
}

func (f *FS) lookup(dir Path, name string) (*Node, unix.Stat_t, error) {
	d := dir.node()
	p := names.Join(dir.Rel(), name)
	if d.upper {
		st, gen, err := f.up.stat(p)
		if err == nil {
			n, err := f.upperNode(d, p, name, &st, gen)
			if err == nil {
				f.linkCount(n, &st)
			}
			return n, st, err
		}
		if !isNotExist(err) {
			return nil, st, err
		}
	}
	if !d.hasLower {
		return nil, unix.Stat_t{}, errNotFound
	}
	if wh, err := f.meta.whiteout(d.id, name); err != nil || wh {
		if err == nil {
			err = errNotFound
		}
		return nil, unix.Stat_t{}, err
	}
	lp := names.Join(d.lower, name)
	st, err := f.lo.Lstat(lp)
	if err != nil {
		return nil, st, err
	}
	n := &Node{Type: st.Mode & unix.S_IFMT, Ino: st.Ino, Gen: 1, lower: lp, hasLower: true}
	return n, st, nil
}

// upperNode builds the node for an entry found in the upper at path p.
func (f *FS) upperNode(parent *Node, p, name string, st *unix.Stat_t, gen uint64) (*Node, error) {
	var ident identity
	err := f.up.at(p, func(dirfd int, name string) (err error) {
		ident, err = f.identityAt(dirfd, name, st.Mode&unix.S_IFMT, st.Ino, gen)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("identity of %s: %w", p, err)
	}
	n := &Node{Type: st.Mode & unix.S_IFMT, upper: true, id: ident.ID}
	if ident.Ino != 0 {
		n.Ino, n.Gen = ident.Ino, 1
	} else {
		n.Ino, n.Gen = f.upperIno(st.Ino), gen
	}
	st.Ino = n.Ino
	if n.Type == unix.S_IFDIR {
		dm, err := f.meta.dir(n.id)
		if err != nil {
			return nil, err
		}
		switch {
		case dm.Redirect != "":
			n.lower, n.hasLower = dm.Redirect, true
		case dm.Opaque || !parent.hasLower:
		default:
			lp := names.Join(parent.lower, name)
			if lst, err := f.lo.Lstat(lp); err == nil && lst.Mode&unix.S_IFMT == unix.S_IFDIR {
				n.lower, n.hasLower = lp, true
			}
		}
		if n.hasLower {
			// A merged directory's link count would need a full
			// merge to compute; 1 tells find(1) and friends not to
			// rely on it, as btrfs does.
			st.Nlink = 1
		}
	}
	return n, nil
}

// Attr returns the attributes of the node at p.
func (f *FS) Attr(p Path) (unix.Stat_t, error) {
	n := p.node()
	n.mu.Lock()
	if d := n.data; d != nil && d.upper != nil {
		var st unix.Stat_t
		err := unix.Fstat(int(d.upper.Fd()), &st)
		n.mu.Unlock()
		st.Ino = n.Ino
		f.linkCount(n, &st)
		return st, err
	}
	n.mu.Unlock()
	if p.detached {
		return unix.Stat_t{}, errDetached
	}
	f.mu.RLock()
	st, err := f.attr(p)
	f.mu.RUnlock()
	if f.retryLinked(p, err) {
		f.mu.RLock()
		st, err = f.attr(p)
		f.mu.RUnlock()
	}
	return st, err
}

func (f *FS) attr(p Path) (unix.Stat_t, error) {
	n := p.node()
	var st unix.Stat_t
	var err error
	if n.upper {
		st, _, err = f.up.stat(p.Rel())
		if err == nil && n.Type == unix.S_IFDIR && n.hasLower {
			st.Nlink = 1
		}
		if err == nil {
			f.linkCount(n, &st)
		}
	} else {
		st, err = f.lo.Lstat(n.lower)
	}
	st.Ino = n.Ino
	return st, err
}

// ReadDir lists the merged directory at p: its upper entries, then the lower
// entries that are neither whited out nor shadowed by an upper entry. The
// order is fixed for the life of the listing, so directory offsets stay
// valid.
func (f *FS) ReadDir(p Path) ([]lower.DirEntry, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.readDir(p)
}

// ReadDirKnown is ReadDir for a caller that keeps one Node per directory
// for as long as it uses it (package fs), and already knows the inode
// numbers of some entries: known returns the inode number of the entry
// name when it knows it, and the upper entry's own is then not read (an
// xattr each). A directory only the upper has keeps its listing on its
// Node (dirlist.go).
//
// held[i] says that the caller holds entry i's node, as far as FS can
// tell: known said so when the upper directory was read, or the entry was
// made or moved here through FS since. A node the caller let go of since
// stays marked; an entry not marked may be held all the same.
func (f *FS) ReadDirKnown(p Path, known func(name string) (ino uint64, ok bool)) (ents []lower.DirEntry, held []bool, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.readDirKnown(p, known, true)
}

// readDir lists p without keeping the listing: its callers walk Nodes of
// their own, which no change goes through.
func (f *FS) readDir(p Path) ([]lower.DirEntry, error) {
	ents, _, err := f.readDirKnown(p, nil, false)
	return ents, err
}

func (f *FS) readDirKnown(p Path, known func(string) (uint64, bool), keep bool) ([]lower.DirEntry, []bool, error) {
	d := p.node()
	if d.upper && !d.hasLower {
		if out, held := f.keptList(d); out != nil {
			return out, held, nil
		}
	} else {
		keep = false
	}
	var out []lower.DirEntry
	var held []bool // of the upper's entries, when known is set
	// Names the upper listed, which the lower's listing must not repeat:
	// only a merged directory has both.
	var seen map[string]bool
	if d.upper && d.hasLower {
		seen = map[string]bool{}
	}
	if d.upper {
		fd, err := fsio.OpenBeneath(f.up.root, p.Rel(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("open upper dir %q: %w", p.Rel(), err)
		}
		ents, err := fsio.ReadDir(fd)
		if err != nil {
			unix.Close(fd)
			return nil, nil, fmt.Errorf("read upper dir %q: %w", p.Rel(), err)
		}
		for _, e := range ents {
			if known != nil {
				ino, ok := known(e.Name)
				held = append(held, ok)
				if ok {
					e.Ino = ino
					if seen != nil {
						seen[e.Name] = true
					}
					out = append(out, e)
					continue
				}
			}
			ident, err := f.identityAt(fd, e.Name, e.Mode&unix.S_IFMT, e.Ino, 0)
			if err != nil && !isNotExist(err) {
				unix.Close(fd)
				return nil, nil, fmt.Errorf("identity of %q: %w", names.Join(p.Rel(), e.Name), err)
			}
			if ident.Ino != 0 {
				e.Ino = ident.Ino
			} else {
				e.Ino = f.upperIno(e.Ino)
			}
			if seen != nil {
				seen[e.Name] = true
			}
			out = append(out, e)
		}
		unix.Close(fd)
		if keep {
			f.keepList(d, out, held)
		}
	}
	if d.hasLower {
		wh, err := f.meta.whiteouts(d.id)
		if err != nil {
			return nil, nil, err
		}
		ents, err := f.lo.ReadDir(d.lower)
		if err != nil && d.upper && isNotExist(err) {
			// The lower changed under the mount, which it must not:
			// its directory is gone, so it has nothing to add. An
			// error here would hide the upper's entries too: the
			// kernel passes ENOENT from a listing on, and glibc
			// reads it as the end of the directory.
			if !f.lowerGone.Swap(true) {
				f.log.Warn("a lower directory was removed while mounted; its entries are gone from the workspace", "dir", "/"+d.lower, "err", err)
			}
			ents, err = nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if out == nil && len(wh) == 0 {
			// A directory only the lower has, with nothing removed:
			// its listing as it is.
			return ents, nil, nil
		}
		for _, e := range ents {
			if !seen[e.Name] && !wh[e.Name] {
				out = append(out, e)
			}
		}
	}
	return out, held, nil
}

// Readlink returns the target of the symlink at p.
func (f *FS) Readlink(p Path) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.readlink(p)
}

func (f *FS) readlink(p Path) (string, error) {
	n := p.node()
	if !n.upper {
		return f.lo.Readlink(n.lower)
	}
	var target string
	err := f.up.at(p.Rel(), func(dirfd int, name string) error {
		buf := make([]byte, unix.PathMax)
		k, err := unix.Readlinkat(dirfd, name, buf)
		target = string(buf[:max(k, 0)])
		return err
	})
	return target, err
}

// Statfs describes the filesystem that holds the upper layer: that is where
// new data goes.
func (f *FS) Statfs() (unix.Statfs_t, error) {
	var st unix.Statfs_t
	err := unix.Fstatfs(f.up.root, &st)
	f.space.hide(&st)
	return st, err
}

// lowerHas reports whether the lower directory merged under dir has an
// entry name, i.e. whether removing name from dir needs a whiteout.
func (f *FS) lowerHas(dir *Node, name string) (bool, error) {
	if !dir.hasLower {
		return false, nil
	}
	_, err := f.lo.Lstat(names.Join(dir.lower, name))
	if isNotExist(err) {
		return false, nil
	}
	return err == nil, err
}

// ensureID gives the upper directory or file at p a metadata id.
func (f *FS) ensureID(p Path) error {
	n := p.node()
	if n.id != 0 {
		return nil
	}
	id := newID()
	return f.up.at(p.Rel(), func(dirfd int, name string) error {
		ident, err := f.up.identityAt(dirfd, name)
		if err != nil {
			return err
		}
		ident.ID = id
		if err := f.up.setIdentityAt(dirfd, name, ident); err != nil {
			return fmt.Errorf("set identity of %q: %w", p.Rel(), err)
		}
		n.id = id
		return nil
	})
}

// whiteout hides the lower entry name of directory dir, if there is one.
// dir must be in the upper.
func (f *FS) whiteout(dir Path, name string) error {
	has, err := f.lowerHas(dir.node(), name)
	if err != nil || !has {
		return err
	}
	if err := f.ensureID(dir); err != nil {
		return err
	}
	return f.meta.setWhiteout(dir.node().id, name)
}

// SyncDir makes the directory at p durable: its upper entries, and the
// whiteouts and other records that live in badger.
func (f *FS) SyncDir(p Path) error {
	if p.detached {
		return errDetached
	}
	f.mu.RLock()
	upper := p.node().upper
	f.mu.RUnlock()
	if upper {
		fd, err := fsio.OpenBeneath(f.up.root, p.Rel(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return fmt.Errorf("fsyncdir %q: %w", p.Rel(), err)
		}
		err = unix.Fsync(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("fsyncdir %q: %w", p.Rel(), err)
		}
	}
	return f.meta.sync()
}

// processUmask reads the process umask without changing it (umask(2) can
// only swap it, which would race with other goroutines creating files).
// When it cannot be read, every permission bit a umask could mask counts
// as masked: own then sets modes explicitly, which is always right.
func processUmask() uint32 {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return uint32(m)
				}
			}
		}
	}
	return 0o777
}
