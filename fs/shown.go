package fs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Shown, when set in Options, changes the owner and mode every file is
// shown with (cowfs mount --uid, --gid, --umask), as the options of those
// names of vfat or sshfs do: a task running as another user than the
// files' owners can then use them. The files keep their owners and modes
// in the upper and in snapshots; only what the kernel is told changes,
// and with default_permissions the kernel checks access against that.
type Shown struct {
	// Uid and Gid, when not nil, are every file's owner and group.
	Uid, Gid *uint32
	// Umask is cleared from every file's permission bits (0 to 0777).
	Umask uint32
}

// shownAttrs answers the kernel with the attributes Shown asks for. It
// wraps every request that returns attributes; READDIRPLUS, whose entries
// carry them too, is turned off for such a mount (fuseOptions).
type shownAttrs struct {
	fuse.RawFileSystem
	s Shown
}

func (w *shownAttrs) attr(a *fuse.Attr) {
	if w.s.Uid != nil {
		a.Uid = *w.s.Uid
	}
	if w.s.Gid != nil {
		a.Gid = *w.s.Gid
	}
	a.Mode &^= w.s.Umask & 0o777
}

func (w *shownAttrs) entry(st fuse.Status, out *fuse.EntryOut) fuse.Status {
	if st == fuse.OK {
		w.attr(&out.Attr)
	}
	return st
}

func (w *shownAttrs) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	return w.entry(w.RawFileSystem.Lookup(cancel, h, name, out), out)
}

func (w *shownAttrs) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	st := w.RawFileSystem.GetAttr(cancel, in, out)
	if st == fuse.OK {
		w.attr(&out.Attr)
	}
	return st
}

func (w *shownAttrs) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	st := w.RawFileSystem.SetAttr(cancel, in, out)
	if st == fuse.OK {
		w.attr(&out.Attr)
	}
	return st
}

func (w *shownAttrs) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	st := w.RawFileSystem.Statx(cancel, in, out)
	if st == fuse.OK {
		if w.s.Uid != nil {
			out.Uid = *w.s.Uid
		}
		if w.s.Gid != nil {
			out.Gid = *w.s.Gid
		}
		out.Mode &^= uint16(w.s.Umask & 0o777)
	}
	return st
}

func (w *shownAttrs) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return w.entry(w.RawFileSystem.Mknod(cancel, in, name, out), out)
}

func (w *shownAttrs) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return w.entry(w.RawFileSystem.Mkdir(cancel, in, name, out), out)
}

func (w *shownAttrs) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return w.entry(w.RawFileSystem.Link(cancel, in, name, out), out)
}

func (w *shownAttrs) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return w.entry(w.RawFileSystem.Symlink(cancel, h, target, name, out), out)
}

func (w *shownAttrs) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return w.entry(w.RawFileSystem.Create(cancel, in, name, out), &out.EntryOut)
}
