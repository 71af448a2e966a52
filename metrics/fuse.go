package metrics

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
)

// FUSE measures the requests of one mount: how many of each operation and
// how long each took, from the moment go-fuse hands it to the
// filesystem to its answer (waits for cowfs's locks included), and the
// bytes read and written. Reads and writes the kernel passes through to
// a backing file (--passthrough, --passthrough-lower) never arrive, and
// are not counted.
//
// It wraps the raw filesystem go-fuse serves: one place that sees every
// request, whatever node or handle answers it; go-fuse's node API has no
// hook per request, and its server's latency map is gone. On the hot path
// a request pays two clock reads and one histogram observation, with no
// lookup of the operation's series: each method goes straight to its own.
type FUSE struct {
	ops           [numOps]opTimer
	read, written prometheus.Counter
}

type opTimer struct{ prometheus.Observer }

func (o opTimer) since(start time.Time) { o.Observe(time.Since(start).Seconds()) }

// NewFUSE registers a mount's request metrics with reg.
func NewFUSE(reg prometheus.Registerer) (*FUSE, error) { return newFUSE(reg.Register) }

func newFUSE(register func(prometheus.Collector) error) (*FUSE, error) {
	ops := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cowfs_fuse_request_duration_seconds",
		Help:    "FUSE requests served, by operation, and how long each took.",
		Buckets: durationBuckets,
	}, []string{"op"})
	f := &FUSE{
		read: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cowfs_fuse_read_bytes_total", Help: "Bytes returned by FUSE read requests.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cowfs_fuse_written_bytes_total", Help: "Bytes accepted by FUSE write requests.",
		}),
	}
	// Every operation's series exists from the start, at zero, so that
	// a rate over it is defined before its first request.
	for i := range f.ops {
		f.ops[i] = opTimer{ops.WithLabelValues(opNames[i])}
	}
	for _, c := range []prometheus.Collector{ops, f.read, f.written} {
		if err := register(c); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// Wrap returns raw with every request measured.
func (f *FUSE) Wrap(raw fuse.RawFileSystem) fuse.RawFileSystem {
	return &measured{RawFileSystem: raw, FUSE: f}
}

// measured is a RawFileSystem whose requests are measured. String,
// SetDebug, Init and OnUnmount are not requests and pass through.
type measured struct {
	fuse.RawFileSystem
	*FUSE
}

func (m *measured) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	defer m.ops[opRead].since(time.Now())
	r, st := m.RawFileSystem.Read(cancel, input, buf)
	if st.Ok() && r != nil {
		m.read.Add(float64(r.Size()))
	}
	return r, st
}

func (m *measured) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	defer m.ops[opWrite].since(time.Now())
	n, st := m.RawFileSystem.Write(cancel, input, data)
	m.written.Add(float64(n))
	return n, st
}

// Writev is tried first for every write; a filesystem without it answers
// ENOSYS and go-fuse calls Write, which counts the request.
func (m *measured) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	start := time.Now()
	n, st := m.RawFileSystem.Writev(cancel, input, data)
	if st != fuse.ENOSYS {
		m.ops[opWrite].since(start)
		m.written.Add(float64(n))
	}
	return n, st
}

// The operations measured, one label value each: the FUSE request's name
// as go-fuse's RawFileSystem names it, in lower case.
const (
	opLookup = iota
	opGetAttr
	opSetAttr
	opMknod
	opMkdir
	opUnlink
	opRmdir
	opRename
	opLink
	opSymlink
	opReadlink
	opAccess
	opGetXAttr
	opListXAttr
	opSetXAttr
	opRemoveXAttr
	opCreate
	opTmpfile
	opOpen
	opLseek
	opGetLk
	opSetLk
	opSetLkw
	opRelease
	opCopyFileRange
	opIoctl
	opFlush
	opFsync
	opFallocate
	opOpenDir
	opReadDir
	opReadDirPlus
	opReleaseDir
	opFsyncDir
	opStatFs
	opStatx
	opForget
	opRead
	opWrite
	numOps
)

var opNames = [numOps]string{
	opLookup:        "lookup",
	opGetAttr:       "getattr",
	opSetAttr:       "setattr",
	opMknod:         "mknod",
	opMkdir:         "mkdir",
	opUnlink:        "unlink",
	opRmdir:         "rmdir",
	opRename:        "rename",
	opLink:          "link",
	opSymlink:       "symlink",
	opReadlink:      "readlink",
	opAccess:        "access",
	opGetXAttr:      "getxattr",
	opListXAttr:     "listxattr",
	opSetXAttr:      "setxattr",
	opRemoveXAttr:   "removexattr",
	opCreate:        "create",
	opTmpfile:       "tmpfile",
	opOpen:          "open",
	opLseek:         "lseek",
	opGetLk:         "getlk",
	opSetLk:         "setlk",
	opSetLkw:        "setlkw",
	opRelease:       "release",
	opCopyFileRange: "copyfilerange",
	opIoctl:         "ioctl",
	opFlush:         "flush",
	opFsync:         "fsync",
	opFallocate:     "fallocate",
	opOpenDir:       "opendir",
	opReadDir:       "readdir",
	opReadDirPlus:   "readdirplus",
	opReleaseDir:    "releasedir",
	opFsyncDir:      "fsyncdir",
	opStatFs:        "statfs",
	opStatx:         "statx",
	opForget:        "forget",
	opRead:          "read",
	opWrite:         "write",
}

func (m *measured) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer m.ops[opLookup].since(time.Now())
	return m.RawFileSystem.Lookup(cancel, header, name, out)
}

func (m *measured) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer m.ops[opGetAttr].since(time.Now())
	return m.RawFileSystem.GetAttr(cancel, input, out)
}

func (m *measured) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer m.ops[opSetAttr].since(time.Now())
	return m.RawFileSystem.SetAttr(cancel, input, out)
}

func (m *measured) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	defer m.ops[opMknod].since(time.Now())
	return m.RawFileSystem.Mknod(cancel, input, name, out)
}

func (m *measured) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	defer m.ops[opMkdir].since(time.Now())
	return m.RawFileSystem.Mkdir(cancel, input, name, out)
}

func (m *measured) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	defer m.ops[opUnlink].since(time.Now())
	return m.RawFileSystem.Unlink(cancel, header, name)
}

func (m *measured) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	defer m.ops[opRmdir].since(time.Now())
	return m.RawFileSystem.Rmdir(cancel, header, name)
}

func (m *measured) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) fuse.Status {
	defer m.ops[opRename].since(time.Now())
	return m.RawFileSystem.Rename(cancel, input, oldName, newName)
}

func (m *measured) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) fuse.Status {
	defer m.ops[opLink].since(time.Now())
	return m.RawFileSystem.Link(cancel, input, filename, out)
}

func (m *measured) Symlink(cancel <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) fuse.Status {
	defer m.ops[opSymlink].since(time.Now())
	return m.RawFileSystem.Symlink(cancel, header, pointedTo, linkName, out)
}

func (m *measured) Readlink(cancel <-chan struct{}, header *fuse.InHeader) ([]byte, fuse.Status) {
	defer m.ops[opReadlink].since(time.Now())
	return m.RawFileSystem.Readlink(cancel, header)
}

func (m *measured) Access(cancel <-chan struct{}, input *fuse.AccessIn) fuse.Status {
	defer m.ops[opAccess].since(time.Now())
	return m.RawFileSystem.Access(cancel, input)
}

func (m *measured) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	defer m.ops[opGetXAttr].since(time.Now())
	return m.RawFileSystem.GetXAttr(cancel, header, attr, dest)
}

func (m *measured) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	defer m.ops[opListXAttr].since(time.Now())
	return m.RawFileSystem.ListXAttr(cancel, header, dest)
}

func (m *measured) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	defer m.ops[opSetXAttr].since(time.Now())
	return m.RawFileSystem.SetXAttr(cancel, input, attr, data)
}

func (m *measured) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) fuse.Status {
	defer m.ops[opRemoveXAttr].since(time.Now())
	return m.RawFileSystem.RemoveXAttr(cancel, header, attr)
}

func (m *measured) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer m.ops[opCreate].since(time.Now())
	return m.RawFileSystem.Create(cancel, input, name, out)
}

func (m *measured) Tmpfile(cancel <-chan struct{}, input *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	defer m.ops[opTmpfile].since(time.Now())
	return m.RawFileSystem.Tmpfile(cancel, input, out)
}

func (m *measured) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer m.ops[opOpen].since(time.Now())
	return m.RawFileSystem.Open(cancel, input, out)
}

func (m *measured) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	defer m.ops[opLseek].since(time.Now())
	return m.RawFileSystem.Lseek(cancel, in, out)
}

func (m *measured) GetLk(cancel <-chan struct{}, input *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	defer m.ops[opGetLk].since(time.Now())
	return m.RawFileSystem.GetLk(cancel, input, out)
}

func (m *measured) SetLk(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	defer m.ops[opSetLk].since(time.Now())
	return m.RawFileSystem.SetLk(cancel, input)
}

func (m *measured) SetLkw(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	defer m.ops[opSetLkw].since(time.Now())
	return m.RawFileSystem.SetLkw(cancel, input)
}

func (m *measured) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	defer m.ops[opRelease].since(time.Now())
	m.RawFileSystem.Release(cancel, input)
}

func (m *measured) CopyFileRange(cancel <-chan struct{}, input *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	defer m.ops[opCopyFileRange].since(time.Now())
	return m.RawFileSystem.CopyFileRange(cancel, input)
}

func (m *measured) Ioctl(cancel <-chan struct{}, input *fuse.IoctlIn, inbuf []byte, output *fuse.IoctlOut, outbuf []byte) fuse.Status {
	defer m.ops[opIoctl].since(time.Now())
	return m.RawFileSystem.Ioctl(cancel, input, inbuf, output, outbuf)
}

func (m *measured) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	defer m.ops[opFlush].since(time.Now())
	return m.RawFileSystem.Flush(cancel, input)
}

func (m *measured) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	defer m.ops[opFsync].since(time.Now())
	return m.RawFileSystem.Fsync(cancel, input)
}

func (m *measured) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) fuse.Status {
	defer m.ops[opFallocate].since(time.Now())
	return m.RawFileSystem.Fallocate(cancel, input)
}

func (m *measured) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer m.ops[opOpenDir].since(time.Now())
	return m.RawFileSystem.OpenDir(cancel, input, out)
}

func (m *measured) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer m.ops[opReadDir].since(time.Now())
	return m.RawFileSystem.ReadDir(cancel, input, out)
}

func (m *measured) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer m.ops[opReadDirPlus].since(time.Now())
	return m.RawFileSystem.ReadDirPlus(cancel, input, out)
}

func (m *measured) ReleaseDir(input *fuse.ReleaseIn) {
	defer m.ops[opReleaseDir].since(time.Now())
	m.RawFileSystem.ReleaseDir(input)
}

func (m *measured) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	defer m.ops[opFsyncDir].since(time.Now())
	return m.RawFileSystem.FsyncDir(cancel, input)
}

func (m *measured) StatFs(cancel <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	defer m.ops[opStatFs].since(time.Now())
	return m.RawFileSystem.StatFs(cancel, input, out)
}

func (m *measured) Statx(cancel <-chan struct{}, input *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	defer m.ops[opStatx].since(time.Now())
	return m.RawFileSystem.Statx(cancel, input, out)
}

func (m *measured) Forget(nodeid, nlookup uint64) {
	defer m.ops[opForget].since(time.Now())
	m.RawFileSystem.Forget(nodeid, nlookup)
}
