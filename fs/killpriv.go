package fs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow"
)

// cowfs takes FUSE_HANDLE_KILLPRIV_V2: the kernel then leaves it to cowfs
// to drop privileges when a file is written, truncated or chowned, instead
// of asking for security.capability before every write. That halves the
// round trips of a small write (4 KiB writes: 33-36 MiB/s without it,
// 52-75 with it).
//
// What cowfs must do, and where it happens:
//   - security.capability goes on every write, truncate and chown. cowfs
//     does each of these to the upper file itself, and the upper's
//     filesystem drops the attribute then, whoever writes.
//   - On chown the set-ID bits go; the upper's filesystem drops them
//     there too (chown clears them even for root).
//   - On a write or truncate by a caller without CAP_FSETID the set-ID
//     bits go. cowfs writes as root, so the upper keeps them: cowfs drops
//     them before the write (dropSetID) or with the truncate (the kernel
//     flags that SETATTR with FATTR_KILL_SUIDGID).
//   - Writes through a passed-through open (--passthrough) never reach
//     cowfs, and the kernel writes the backing file with the mount
//     process's credentials, so the upper keeps the bits there too: such
//     an open for writing drops them when it is made (dropSetIDAtOpen).
const killPrivCaps = fuse.CAP_HANDLE_KILLPRIV_V2

// setIDToDrop returns the set-ID bits of mode that a write by caller c
// removes, as the kernel decides for filesystems it handles itself: the
// set-user-ID bit, and the set-group-ID bit if group execute is set or the
// caller is not in the file's group. go-fuse does not pass the kernel's
// FUSE_WRITE_KILL_SUIDGID flag to a write, so CAP_FSETID is taken to mean
// uid 0, and group membership to mean the caller's primary group.
func setIDToDrop(mode uint32, fileGid uint32, c *fuse.Caller) uint32 {
	if c == nil || c.Uid == 0 {
		return 0
	}
	return setIDBits(mode, c.Gid != fileGid)
}

// setIDBits returns the set-ID bits of mode that go when a file is written
// or truncated without CAP_FSETID: set-user-ID, and set-group-ID if group
// execute is set or the writer is outside the file's group.
func setIDBits(mode uint32, outsideGroup bool) uint32 {
	drop := mode & unix.S_ISUID
	if mode&unix.S_ISGID != 0 && (mode&unix.S_IXGRP != 0 || outsideGroup) {
		drop |= unix.S_ISGID
	}
	return drop
}

// dropSetIDForTruncate removes the set-ID bits before a truncate the kernel
// flagged with FATTR_KILL_SUIDGID (a caller without CAP_FSETID).
func (n *node) dropSetIDForTruncate(ctx context.Context, p cow.Path) syscall.Errno {
	st, err := n.m.fs.Attr(p)
	if err != nil {
		return 0 // the setattr that follows reports it
	}
	drop := setIDBits(st.Mode, false)
	if drop == 0 {
		return 0
	}
	mode := st.Mode &^ drop & 07777
	if _, err := n.m.fs.Setattr(p, cow.SetAttr{Mode: &mode}); err != nil {
		return n.errno(ctx, "setattr", p, err)
	}
	return 0
}

// dropSetID removes the set-ID bits a write by the caller in ctx must
// remove from the file of h, before the write, so that no one can run the
// file with its new bytes and its old privileges. It reports whether it
// removed any. treeHeld tells whether the caller holds mount.tree, as a
// request that takes a path does (treelock.go); a write does not.
func (h *handle) dropSetID(ctx context.Context, treeHeld bool) (bool, syscall.Errno) {
	c, _ := fuse.FromContext(ctx)
	if c == nil || c.Uid == 0 {
		return false, 0
	}
	st, err := h.h.Stat()
	if err != nil {
		return false, 0 // a file with no upper descriptor is not being written
	}
	drop := setIDToDrop(st.Mode, st.Gid, c)
	if drop == 0 {
		return false, 0
	}
	mode := st.Mode &^ drop & 07777
	setattr := func(p cow.Path) error {
		_, err := h.n.m.fs.Setattr(p, cow.SetAttr{Mode: &mode})
		return err
	}
	if treeHeld {
		err = setattr(h.n.path())
	} else {
		err = h.n.withPath(setattr)
	}
	if err != nil {
		return false, h.errno(ctx, "drop set-ID bits", err)
	}
	return true, 0
}

// dropSetIDAtOpen drops, for an open for writing that the kernel passes
// through, the set-ID bits the caller's writes would drop: they will not
// reach cowfs. This is earlier than ext4, which drops them at the first
// write; an open for writing is taken as the intent to write. The kernel
// is then told its attributes of the file are stale: it keeps the mode
// from before, and nothing else would refresh it before the attribute
// timeout if no write followed.
func (h *ptHandle) dropSetIDAtOpen(ctx context.Context) syscall.Errno {
	dropped, errno := h.dropSetID(ctx, true)
	if dropped {
		// Offset -1: attributes only, no page cache.
		h.n.NotifyContent(-1, 0)
	}
	return errno
}
