package cow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
)

// upperLayer is the writable layer: a directory that mirrors the merged namespace,
// and a work directory on the same filesystem where new inodes are prepared
// before an atomic rename puts them in place.
type upperLayer struct {
	root, work int
	// locks are the upper and work directories opened for their flocks,
	// held while the upper is open: see openUpper.
	locks    [2]int
	rootPath string
	workPath string
	// xattr is the name of the identity attribute, prefix the start of
	// the names of all of cowfs's own: see ownPrefix.
	xattr  string
	prefix string
	// prefixFrom says how ownPrefix found prefix, for the mount's log.
	prefixFrom string
	dev        uint64
}

// identity is what an upper inode carries in its identity xattr.
type identity struct {
	// Ino is the merged inode number when it is not the upper inode's
	// own: the number of the lower file it was copied up from.
	Ino uint64
	// ID keys the inode's records in metaStore; 0 if it has none.
	ID uint64
}

// openUpper opens and locks the upper and work directories. workLock, if
// not -1, is the work directory's flock, already held (OpenWork);
// openUpper then takes the upper's alone, and keeps workLock only if it
// succeeds.
func openUpper(upperDir, workDir string, workLock int) (*upperLayer, error) {
	root, err := unix.Open(upperDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open upper %s: %w", upperDir, err)
	}
	work, err := unix.Open(workDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(root)
		return nil, fmt.Errorf("open work dir %s: %w", workDir, err)
	}
	var a, b unix.Stat_t
	if err = unix.Fstat(root, &a); err == nil {
		err = unix.Fstat(work, &b)
	}
	switch {
	case err != nil:
	case a.Dev != b.Dev:
		err = fmt.Errorf("upper %s and work dir %s are on different filesystems; copy-up renames from one to the other", upperDir, workDir)
	case a.Ino == b.Ino:
		err = fmt.Errorf("the work dir %s is the upper itself; give a directory of its own beside it", workDir)
	}
	if err != nil {
		unix.Close(root)
		unix.Close(work)
		return nil, err
	}
	// One FS at a time over an upper or a work directory, and the check
	// comes before anything is written: a second one used to clear the
	// work directory's temporary files (a live mount's copy-ups in
	// progress) before the metadata's own lock stopped it
	// (TestUpperInUseUntouched); two mounts with one upper and two work
	// directories would each keep metadata of their own for it.
	locks := [2]int{-1, workLock}
	for i, dir := range []string{upperDir, workDir} {
		if locks[i] != -1 {
			continue
		}
		if locks[i], err = lockDir(dir); err != nil {
			if i == 1 {
				unix.Close(locks[0])
			}
			unix.Close(root)
			unix.Close(work)
			return nil, err
		}
	}
	return &upperLayer{root: root, work: work, locks: locks, rootPath: upperDir, workPath: workDir, dev: a.Dev}, nil
}

// The two namespaces cowfs's own attributes may live in. trusted.* is
// the better one: no process without CAP_SYS_ADMIN in the initial user
// namespace can read or forge it from the upper, and it can be set on
// symlinks and special files. user.* is what is left where that
// capability is missing: a non-root process, or root inside a user
// namespace (rootless podman, Docker with userns-remap, Kubernetes'
// hostUsers: false).
const (
	trustedPrefix = "trusted.cowfs."
	userPrefix    = "user.cowfs."
)

// xattrRecord, in the work directory, names the namespace of the upper's
// own attributes: every mount of the upper must read its identities
// where the first one wrote them, whatever this process may use.
const xattrRecord = "xattrs"

// OwnXattr reports whether name is one of the attributes cowfs keeps on
// upper inodes for itself, in either namespace: no copy of attributes may
// carry one over, since it would be taken for the identity of the inode
// it lands on.
func OwnXattr(name string) bool {
	return strings.HasPrefix(name, trustedPrefix) || strings.HasPrefix(name, userPrefix)
}

// choosePrefix sets the namespace of the upper's own attributes, before
// anything reads or writes one, and records it: see ownPrefix. mounted
// says whether a cowfs mount has had the upper before (its metadata
// exists).
func (u *upperLayer) choosePrefix(mounted bool) error {
	prefix, from, err := u.ownPrefix(mounted)
	if err != nil {
		return err
	}
	u.prefix, u.prefixFrom, u.xattr = prefix, from, prefix+"id"
	return nil
}

// ownPrefix finds the namespace of the upper's own attributes and says
// how: the one its record names; for an upper without a record that a
// mount has had (before there was one), the one its identities are found
// in, else the one cowfs used then (trusted.* as root); for a new upper,
// even one with files put in it, trusted.* if this process may set it,
// else user.*. It records the choice, and refuses an upper whose
// namespace this process may not use: the identities in it would be
// unreadable, and new ones could not be set.
func (u *upperLayer) ownPrefix(mounted bool) (prefix, from string, err error) {
	prefix, err = u.readXattrRecord()
	if err != nil {
		return "", "", err
	}
	if prefix != "" {
		if err := u.probeXattr(prefix); err != nil {
			return "", "", fmt.Errorf("upper %s keeps cowfs's identities in %s* xattrs, which this process may not use: %w%s",
				u.rootPath, prefix, err, prefixHint(prefix))
		}
		return prefix, "recorded with the upper", nil
	}
	prefix, from, err = u.inferPrefix(mounted)
	if err != nil {
		return "", "", err
	}
	if prefix != "" {
		if err := u.probeXattr(prefix); err != nil {
			return "", "", fmt.Errorf("upper %s (%s) keeps cowfs's identities in %s* xattrs, which this process may not use: %w%s",
				u.rootPath, from, prefix, err, prefixHint(prefix))
		}
	} else {
		terr := u.probeXattr(trustedPrefix)
		switch {
		case terr == nil:
			prefix, from = trustedPrefix, "new upper; trusted.* xattrs allowed"
		case !xattrRefused(terr):
			return "", "", terr
		default:
			uerr := u.probeXattr(userPrefix)
			if uerr != nil {
				return "", "", fmt.Errorf("the filesystem of upper %s takes neither trusted.* xattrs (%v) nor user.* ones (%w), and cowfs keeps each upper inode's identity in one: put the upper on a filesystem that does (ext4, xfs, btrfs; tmpfs since Linux 6.6)",
					u.rootPath, terr, uerr)
			}
			prefix, from = userPrefix, fmt.Sprintf("new upper; trusted.* xattrs refused (%v)", terr)
		}
	}
	if err := u.writeXattrRecord(prefix); err != nil {
		return "", "", err
	}
	return prefix, from, nil
}

func prefixHint(prefix string) string {
	if prefix == trustedPrefix {
		return "; trusted.* needs root with CAP_SYS_ADMIN outside any user namespace: mount this upper from there, or start a new upper"
	}
	return ""
}

// xattrRefused reports whether a set of an xattr failed because the
// namespace is not open to this process or not kept by the filesystem.
func xattrRefused(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOTSUP)
}

// probeXattr sets and removes an attribute of the namespace of prefix on
// the work directory, which is on the upper's filesystem and its own.
func (u *upperLayer) probeXattr(prefix string) error {
	name := prefix + "probe"
	if err := unix.Fsetxattr(u.locks[1], name, []byte{1}, 0); err != nil {
		return fmt.Errorf("set %s on %s: %w", name, u.workPath, err)
	}
	if err := unix.Fremovexattr(u.locks[1], name); err != nil {
		return fmt.Errorf("remove %s from %s: %w", name, u.workPath, err)
	}
	return nil
}

// inferPrefix is the namespace of an upper without a record: the one the
// identity of its root or of an entry of the root is in (a copy-up gives
// one to the top directory it is in); else, for an upper a mount has
// had, trusted.* if this process is root, as cowfs chose before it kept
// a record; "" for a new upper.
func (u *upperLayer) inferPrefix(mounted bool) (prefix, from string, err error) {
	fd, err := fsio.OpenBeneath(u.root, "", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return "", "", fmt.Errorf("read upper %s: %w", u.rootPath, err)
	}
	ents, err := fsio.ReadDir(fd)
	unix.Close(fd)
	if err != nil {
		return "", "", fmt.Errorf("read upper %s: %w", u.rootPath, err)
	}
	names := []string{""}
	for _, e := range ents {
		names = append(names, e.Name)
	}
	var buf [16]byte
	for _, name := range names {
		for _, p := range []string{trustedPrefix, userPrefix} {
			// Unseen here if this process may not read the namespace:
			// then the rule below decides, and the probe refuses.
			if _, err := fsio.XattrGetInto(u.root, name, p+"id", buf[:]); err == nil {
				return p, "identities found in " + p + "*", nil
			}
		}
	}
	switch {
	case !mounted:
		return "", "", nil
	case os.Geteuid() == 0:
		return trustedPrefix, "made without a record by root", nil
	default:
		return userPrefix, "made without a record by a non-root user", nil
	}
}

func (u *upperLayer) readXattrRecord() (string, error) {
	fd, err := unix.Openat(u.work, xattrRecord, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if errors.Is(err, unix.ENOENT) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s/%s: %w", u.workPath, xattrRecord, err)
	}
	defer unix.Close(fd)
	var buf [64]byte
	n, err := unix.Read(fd, buf[:])
	if err != nil {
		return "", fmt.Errorf("read %s/%s: %w", u.workPath, xattrRecord, err)
	}
	switch rec := strings.TrimSpace(string(buf[:max(n, 0)])); rec {
	case trustedPrefix, userPrefix:
		return rec, nil
	default:
		return "", fmt.Errorf("%s/%s holds %q, neither %s nor %s: %w", u.workPath, xattrRecord, rec, trustedPrefix, userPrefix, ErrCorrupt)
	}
}

// writeXattrRecord writes the record whole or not at all: a crash before
// the rename leaves a temporary file, which the next mount removes.
func (u *upperLayer) writeXattrRecord(prefix string) error {
	tmp := tmpName()
	err := func() error {
		fd, err := unix.Openat(u.work, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if _, err := unix.Write(fd, []byte(prefix+"\n")); err != nil {
			return err
		}
		if err := unix.Fsync(fd); err != nil {
			return err
		}
		return unix.Renameat(u.work, tmp, u.work, xattrRecord)
	}()
	if err != nil {
		unix.Unlinkat(u.work, tmp, 0)
		return fmt.Errorf("record the xattr namespace in %s/%s: %w", u.workPath, xattrRecord, err)
	}
	return nil
}

func (u *upperLayer) close() {
	unix.Close(u.root)
	unix.Close(u.work)
	unix.Close(u.locks[0])
	unix.Close(u.locks[1])
}

// lockDir takes an exclusive flock of dir: EWOULDBLOCK if another open
// upper holds it. The lock goes with the descriptor, so a mount process
// that dies lets go of it.
//
// A lock is also held, for a moment, by a child that another thread of
// this process forks: its copy of the descriptor lives until it execs
// (close-on-exec acts only then). An upper closed and opened again in a
// process that starts other programs (a platform that embeds cowfs and
// runs its spiders, a test binary) may find it held so; lockDir tries
// again for up to lockWait before it says another upper holds it.
func lockDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("lock %s: %w", dir, err)
	}
	deadline := time.Now().Add(lockWait)
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EWOULDBLOCK || time.Now().After(deadline) {
			break
		}
		time.Sleep(pause)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("lock %s: %w", dir, err)
	}
	return fd, nil
}

// lockWait bounds how long lockDir waits out a forked child's copy of a
// lock: far longer than a fork takes to exec, short enough that a
// second mount of an upper in use is told so at once to a person.
const lockWait = time.Second

// statx returns the entry's attributes and a generation for it: its birth
// time, which tells a reused inode number from the one it replaced.
func statx(dirfd int, path string) (unix.Stat_t, uint64, error) {
	var sx unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_SYNC_AS_STAT
	if path == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if err := unix.Statx(dirfd, path, flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx); err != nil {
		return unix.Stat_t{}, 0, err
	}
	st := unix.Stat_t{
		Dev:     unix.Mkdev(sx.Dev_major, sx.Dev_minor),
		Ino:     sx.Ino,
		Nlink:   uint64(sx.Nlink),
		Mode:    uint32(sx.Mode),
		Uid:     sx.Uid,
		Gid:     sx.Gid,
		Rdev:    unix.Mkdev(sx.Rdev_major, sx.Rdev_minor),
		Size:    int64(sx.Size),
		Blksize: int64(sx.Blksize),
		Blocks:  int64(sx.Blocks),
		Atim:    unix.Timespec{Sec: sx.Atime.Sec, Nsec: int64(sx.Atime.Nsec)},
		Mtim:    unix.Timespec{Sec: sx.Mtime.Sec, Nsec: int64(sx.Mtime.Nsec)},
		Ctim:    unix.Timespec{Sec: sx.Ctime.Sec, Nsec: int64(sx.Ctime.Nsec)},
	}
	gen := uint64(1)
	if sx.Mask&unix.STATX_BTIME != 0 {
		gen = uint64(sx.Btime.Sec)*1e9 + uint64(sx.Btime.Nsec)
	}
	return st, gen, nil
}

func (u *upperLayer) stat(path string) (unix.Stat_t, uint64, error) {
	dirfd, name := u.root, path
	if len(path) > fsio.LongPath {
		fd, base, done, err := fsio.Beneath(u.root, path)
		if err != nil {
			return unix.Stat_t{}, 0, &os.PathError{Op: "stat upper", Path: path, Err: err}
		}
		defer done()
		dirfd, name = fd, base
	}
	st, gen, err := statx(dirfd, name)
	if err != nil {
		return st, 0, &os.PathError{Op: "stat upper", Path: path, Err: err}
	}
	return st, gen, nil
}

// dir opens the upper directory path for *at calls.
func (u *upperLayer) dir(path string) (int, error) {
	fd, err := fsio.OpenBeneath(u.root, path, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open upper dir", Path: path, Err: err}
	}
	return fd, nil
}

// at runs fn with a descriptor of path's parent directory and path's name.
func (u *upperLayer) at(path string, fn func(dirfd int, name string) error) error {
	dir, name := fsio.SplitPath(path)
	fd, err := u.dir(dir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return fn(fd, name)
}

func decodeIdentity(b []byte) (identity, error) {
	if len(b) != 16 {
		return identity{}, fmt.Errorf("identity xattr of %d bytes: %w", len(b), ErrCorrupt)
	}
	return identity{Ino: binary.LittleEndian.Uint64(b), ID: binary.LittleEndian.Uint64(b[8:])}, nil
}

func (id identity) encode() []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, id.Ino)
	binary.LittleEndian.PutUint64(b[8:], id.ID)
	return b
}

// identityAt reads the identity of dirfd/name; an inode without one has the
// zero identity.
func (u *upperLayer) identityAt(dirfd int, name string) (identity, error) {
	var buf [16]byte
	n, err := fsio.XattrGetInto(dirfd, name, u.xattr, buf[:])
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return identity{}, nil
	}
	if err != nil {
		return identity{}, err
	}
	return decodeIdentity(buf[:n])
}

func (u *upperLayer) setIdentityAt(dirfd int, name string, id identity) error {
	return fsio.XattrSet(dirfd, name, u.xattr, id.encode(), 0)
}

// ownXattr reports whether name is one of cowfs's own attributes, which the
// mount neither shows nor lets a process set.
func (u *upperLayer) ownXattr(name string) bool {
	return len(name) >= len(u.prefix) && name[:len(u.prefix)] == u.prefix
}

// tmpName returns a fresh name in the work directory.
func tmpName() string { return fmt.Sprintf("tmp.%016x", newID()) }

// install renames a prepared inode from the work directory to path.
func (u *upperLayer) install(tmp, path string) error {
	return u.at(path, func(dirfd int, name string) error {
		if err := unix.Renameat2(u.work, tmp, dirfd, name, unix.RENAME_NOREPLACE); err != nil {
			return &os.PathError{Op: "install copy-up", Path: path, Err: err}
		}
		return nil
	})
}

// discard removes a prepared inode that was not installed.
func (u *upperLayer) discard(tmp string, dir bool) {
	flags := 0
	if dir {
		flags = unix.AT_REMOVEDIR
	}
	unix.Unlinkat(u.work, tmp, flags)
}

// cleanWork removes what a crash left in the work directory: prepared
// inodes that were never installed.
func (u *upperLayer) cleanWork() error {
	// The index of hard-linked lower files lives beside the leftovers.
	if err := unix.Mkdirat(u.work, "index", 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	fd, err := fsio.OpenBeneath(u.work, "", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ents, err := fsio.ReadDir(fd)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if len(e.Name) > 4 && e.Name[:4] == "tmp." {
			u.discard(e.Name, e.Mode == syscall.S_IFDIR)
		}
	}
	return nil
}

// restoreTimes sets the access and modification times of the upper entry
// at path back to those in st. Best effort: a failure leaves a newer mtime,
// which is harmless.
func (u *upperLayer) restoreTimes(path string, st *unix.Stat_t) {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if path == "" {
		unix.UtimesNanoAt(u.root, "", ts, unix.AT_EMPTY_PATH)
		return
	}
	u.at(path, func(dirfd int, name string) error {
		return unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}
