package cowfs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/statedir"
)

// The workspaces under a state directory: mounts/<key>/ and
// restores/<key>/, each an upper and a work directory left from a mount
// of one mountpoint (decision 0054). A mount records its mountpoint
// beside them (statedir.MountpointRecord) and touches that record when it
// starts and when it ends, so that the record's time, or the newest of
// the workspace's own directories and log, is its last use.

// WorkspaceInfo is one workspace under a state directory.
type WorkspaceInfo struct {
	// Kind is "mount" (mounts/<key>) or "restore" (restores/<key>).
	Kind string `json:"kind"`
	Key  string `json:"key"`
	// Dir holds the workspace's upper and work directories.
	Dir string `json:"dir"`
	// Mountpoint is where it was last mounted; "" for a workspace made
	// before cowfs recorded it.
	Mountpoint string `json:"mountpoint"`
	// Mounted is whether a process holds the work directory's lock:
	// a mount is using it now (Pid, when the kernel says).
	Mounted bool      `json:"mounted"`
	Pid     int       `json:"pid,omitempty"`
	Bytes   int64     `json:"bytes"`
	LastUse time.Time `json:"last_use"`
}

// recordMountpoint records beside a workspace's upper which mountpoint it
// belongs to, and returns what touches the record again when the mount
// ends. The key is a hash; the record is what lets cowfs workspaces say
// where a workspace was mounted.
func recordMountpoint(upper, mountpoint string) (touch func(), err error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	dir := filepath.Dir(upper)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("record the mountpoint: %w", err)
	}
	p := filepath.Join(dir, statedir.MountpointRecord)
	if err := os.WriteFile(p, []byte(abs+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("record the mountpoint: %w", err)
	}
	return func() {
		now := time.Now()
		os.Chtimes(p, now, now)
	}, nil
}

// ListWorkspaces returns the workspaces under state, mounts first, each
// kind by key.
func ListWorkspaces(state string) ([]WorkspaceInfo, error) {
	held, err := heldFlocks()
	if err != nil {
		return nil, err
	}
	var out []WorkspaceInfo
	for _, kind := range []string{"mount", "restore"} {
		parent := filepath.Join(state, kind+"s")
		ents, err := os.ReadDir(parent)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list workspaces: %w", err)
		}
		for _, e := range ents {
			if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			w := WorkspaceInfo{Kind: kind, Key: e.Name(), Dir: filepath.Join(parent, e.Name())}
			if b, err := os.ReadFile(filepath.Join(w.Dir, statedir.MountpointRecord)); err == nil {
				w.Mountpoint = strings.TrimSpace(string(b))
			}
			if pid, ok := held[fileID(filepath.Join(w.Dir, "work"))]; ok {
				w.Mounted, w.Pid = true, pid
			}
			w.Bytes = diskUsage(w.Dir)
			w.LastUse = lastUse(w.Dir)
			out = append(out, w)
		}
	}
	return out, nil
}

// PruneWorkspaces removes the workspaces under state last used before
// now minus olderThan, unless mounted; with
// dryRun it only says which it would remove. It returns those it removed
// (or would). A workspace is removed holding the locks a mount takes of
// its upper and work directories, so a mount of it and its removal
// exclude each other: the mount fails as "in use", or the prune skips it.
func PruneWorkspaces(state string, olderThan time.Duration, dryRun bool) ([]WorkspaceInfo, error) {
	if olderThan < 0 {
		return nil, fmt.Errorf("prune: a negative age %s", olderThan)
	}
	all, err := ListWorkspaces(state)
	if err != nil {
		return nil, err
	}
	cutoff := time.Now().Add(-olderThan)
	var pruned []WorkspaceInfo
	for _, w := range all {
		if w.Mounted || !w.LastUse.Before(cutoff) {
			continue
		}
		if dryRun {
			pruned = append(pruned, w)
			continue
		}
		ok, err := removeWorkspace(w, cutoff)
		if err != nil {
			return pruned, err
		}
		if ok {
			pruned = append(pruned, w)
		}
	}
	return pruned, nil
}

// removeWorkspace removes w's directory if it is not in use and still
// older than cutoff, and reports whether it did. The directory is renamed
// aside first, under the locks, so that a mount starting now finds either
// the whole workspace (and its locks taken) or none, never half of one.
func removeWorkspace(w WorkspaceInfo, cutoff time.Time) (bool, error) {
	var locks []int
	defer func() {
		for _, fd := range locks {
			unix.Close(fd)
		}
	}()
	for _, d := range []string{"upper", "work"} {
		fd, err := unix.Open(filepath.Join(w.Dir, d), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("prune %s: %w", w.Dir, err)
		}
		locks = append(locks, fd)
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			if errors.Is(err, unix.EWOULDBLOCK) {
				return false, nil // mounted since it was listed
			}
			return false, fmt.Errorf("prune %s: lock %s: %w", w.Dir, d, err)
		}
	}
	// A mount that began and ended since the listing touched its record.
	if !lastUse(w.Dir).Before(cutoff) {
		return false, nil
	}
	aside := filepath.Join(filepath.Dir(w.Dir), fmt.Sprintf(".prune-%s-%d", w.Key, os.Getpid()))
	if err := os.Rename(w.Dir, aside); err != nil {
		return false, fmt.Errorf("prune %s: %w", w.Dir, err)
	}
	if err := os.RemoveAll(aside); err != nil {
		return true, fmt.Errorf("prune %s: %w", w.Dir, err)
	}
	return true, nil
}

// lastUse is the newest modification time of a workspace's mountpoint
// record, log, upper and work directories and metadata directory.
func lastUse(dir string) time.Time {
	var t time.Time
	for _, p := range []string{"", statedir.MountpointRecord, "mount.log", "remote.json", "upper", "work", "work/meta"} {
		if fi, err := os.Lstat(filepath.Join(dir, p)); err == nil && fi.ModTime().After(t) {
			t = fi.ModTime()
		}
	}
	return t
}

// diskUsage is the space dir's files take on disk, each inode once.
func diskUsage(dir string) int64 {
	var n int64
	seen := map[uint64]bool{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		n += st.Blocks * 512
		return nil
	})
	return n
}

// lockID names a file as /proc/locks does: device and inode number.
type lockID struct {
	major, minor uint32
	ino          uint64
}

func fileID(p string) lockID {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return lockID{}
	}
	return lockID{unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino}
}

// heldFlocks returns the files a flock is held on, with the holder's pid,
// from /proc/locks: a listing must not take a mount's lock itself, even
// for an instant, or a mount starting then would fail as "in use".
func heldFlocks() (map[lockID]int, error) {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return nil, fmt.Errorf("read the held locks: %w", err)
	}
	defer f.Close()
	held := map[lockID]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 1234 00:2f:5678 0 EOF"; a waiter
		// has "->" after the number.
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && fields[1] == "->" {
			continue
		}
		if len(fields) < 6 || fields[1] != "FLOCK" {
			continue
		}
		pid, _ := strconv.Atoi(fields[4])
		parts := strings.Split(fields[5], ":")
		if len(parts) != 3 {
			continue
		}
		major, err1 := strconv.ParseUint(parts[0], 16, 32)
		minor, err2 := strconv.ParseUint(parts[1], 16, 32)
		ino, err3 := strconv.ParseUint(parts[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		held[lockID{uint32(major), uint32(minor), ino}] = pid
	}
	return held, sc.Err()
}
