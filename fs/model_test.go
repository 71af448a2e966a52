package fs

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	modelOps  = flag.Int("model.ops", 1500, "operations per randomized model test (file model; the tree model runs 4/3 as many)")
	modelSeed = flag.Int64("seed", 0, "seed of the randomized model and crash tests; 0 picks one from the clock")
)

// testSeed returns the seed to use and logs it, so any run can be
// repeated with -seed.
func testSeed(t testing.TB) int64 {
	s := *modelSeed
	if s == 0 {
		s = time.Now().UnixNano()
	}
	t.Logf("seed %d (repeat with -seed=%d)", s, s)
	return s
}

// opLog keeps every step of a random run so a failure can show the steps
// that led to it.
type opLog struct {
	seed  int64
	steps []string
}

func (l *opLog) add(format string, args ...any) {
	l.steps = append(l.steps, fmt.Sprintf("%5d ", len(l.steps))+fmt.Sprintf(format, args...))
}

func (l *opLog) fatalf(t testing.TB, format string, args ...any) {
	t.Helper()
	tail := l.steps
	if len(tail) > 40 {
		tail = tail[len(tail)-40:]
	}
	t.Fatalf("%s\nseed %d (repeat with -seed=%d); last steps:\n%s",
		fmt.Sprintf(format, args...), l.seed, l.seed, strings.Join(tail, "\n"))
}

const mib = 1 << 20

// fileModel drives one file in a mount through random operations and
// holds what its bytes must be.
type fileModel struct {
	t       *testing.T
	remount func(testing.TB)
	rnd     *rand.Rand
	log     opLog
	path    string
	f       *os.File
	want    []byte
	skip    map[string]bool // operation kinds the mount does not support
	maxSize int64
	memfd   int // staging for mapped bytes; -1 until needed
}

// TestModelFile runs fsx-style random operations on one file, checking
// size and bytes against an in-memory model after every step: a dense
// lower file over several chunks, a sparse lower file, and a file born in
// the mount.
func TestModelFile(t *testing.T) {
	seed := testSeed(t)
	variants := []struct {
		name string
		make func(rnd *rand.Rand) []byte // nil: no lower file
	}{
		{"dense", func(rnd *rand.Rand) []byte {
			b := make([]byte, 3*mib+12345)
			rnd.Read(b)
			return b
		}},
		{"sparse", func(rnd *rand.Rand) []byte {
			b := make([]byte, 4*mib+777)
			// Data islands around chunk boundaries and in the middle;
			// the rest stays a hole in the lower file.
			for _, off := range []int{0, mib - 3000, 2*mib + 5000, 3*mib - 100, 4 * mib} {
				n := 4096 + rnd.Intn(20000)
				if off+n > len(b) {
					n = len(b) - off
				}
				rnd.Read(b[off : off+n])
			}
			return b
		}},
		{"new", nil},
	}
	for i, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			runFileModel(t, seed+int64(i), v.make, inProcess)
		})
	}
	// With the kernel's writeback cache, writes reach cowfs late and in
	// batches, and SEEK_DATA is the kernel's own. The mount is served by
	// another process, as a real one is (see childMount).
	for i, v := range variants {
		t.Run(v.name+"-writeback", func(t *testing.T) {
			runFileModel(t, seed+int64(i), v.make, func(t testing.TB, lower string) (string, func(testing.TB)) {
				c := mountChild(t, lower, true)
				return c.cfg.Dir, c.remount
			})
		})
	}
}

// inProcess mounts in the test's own process.
func inProcess(t testing.TB, lower string) (string, func(testing.TB)) {
	tm := mountT(t, lower, Options{})
	return tm.Dir, tm.remount
}

// runFileModel runs the file model on a mount made by mount, which
// returns the mountpoint and a function that mounts the same upper again.
func runFileModel(t *testing.T, seed int64, mk func(*rand.Rand) []byte, mount func(testing.TB, string) (string, func(testing.TB))) {
	rnd := rand.New(rand.NewSource(seed))
	lower := filepath.Join(t.TempDir(), "lower")
	if err := os.Mkdir(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	var orig []byte
	if mk != nil {
		orig = mk(rnd)
		if err := writeSparse(filepath.Join(lower, "file"), orig); err != nil {
			t.Fatal(err)
		}
	}
	dir, remount := mount(t, lower)
	m := &fileModel{
		t: t, remount: remount, rnd: rnd, log: opLog{seed: seed},
		path:    filepath.Join(dir, "file"),
		want:    append([]byte(nil), orig...),
		skip:    map[string]bool{},
		maxSize: 6 * mib,
		memfd:   -1,
	}
	flags := os.O_RDWR
	if mk == nil {
		flags |= os.O_CREATE | os.O_EXCL
	}
	m.open(flags)
	t.Cleanup(func() {
		if m.f != nil {
			m.f.Close()
		}
	})
	ops := *modelOps
	if testing.Short() || raceEnabled {
		// The fast loop runs a fifth of the sequence, and so does the
		// suite's -race stage, which must end within its timeout on a
		// loaded machine; the suite's plain stage runs it all.
		ops /= 5
	}
	for i := 0; i < ops; i++ {
		m.step()
		if i%50 == 49 {
			m.checkAll("every 50 steps")
		}
	}
	m.checkAll("end")
	m.f.Close()
	m.f = nil
	remount(t)
	got, err := os.ReadFile(m.path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, m.want) {
		m.log.fatalf(t, "after the final remount the file differs from the model at %d", firstDiff(got, m.want))
	}
	if mk == nil {
		if _, err := os.Lstat(filepath.Join(lower, "file")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a file born in the mount reached the lower: %v", err)
		}
	} else if l, err := os.ReadFile(filepath.Join(lower, "file")); err != nil || !bytes.Equal(l, orig) {
		t.Fatalf("lower file changed (err %v)", err)
	}
	for k := range m.skip {
		t.Logf("operation %s skipped: the mount answered EOPNOTSUPP", k)
	}
}

// writeSparse writes b to path leaving every all-zero 4 KiB block a hole.
func writeSparse(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zero := make([]byte, 4096)
	for off := 0; off < len(b); off += 4096 {
		end := min(off+4096, len(b))
		if bytes.Equal(b[off:end], zero[:end-off]) {
			continue
		}
		if _, err := f.WriteAt(b[off:end], int64(off)); err != nil {
			return err
		}
	}
	if err := f.Truncate(int64(len(b))); err != nil {
		return err
	}
	return f.Close()
}

func (m *fileModel) open(flags int) {
	f, err := os.OpenFile(m.path, flags, 0o644)
	if err != nil {
		m.log.fatalf(m.t, "open: %v", err)
	}
	m.f = f
}

// offset picks an offset, biased to chunk boundaries and the end of file.
func (m *fileModel) offset() int64 {
	size := int64(len(m.want))
	switch m.rnd.Intn(4) {
	case 0: // near a chunk boundary
		c := int64(m.rnd.Intn(int(m.maxSize/mib)+1)) * mib
		return max(0, c+int64(m.rnd.Intn(8193))-4096)
	case 1: // near the end
		return max(0, size+int64(m.rnd.Intn(16385))-8192)
	default:
		return m.rnd.Int63n(max(size, 1) + 65536)
	}
}

func (m *fileModel) length() int64 {
	switch r := m.rnd.Intn(20); {
	case r < 12:
		return 1 + int64(m.rnd.Intn(4096))
	case r < 19:
		return 1 + int64(m.rnd.Intn(256<<10))
	default:
		return 1 + int64(m.rnd.Intn(3*mib/2))
	}
}

// clip limits [off, off+n) to the size the model allows.
func (m *fileModel) clip(off, n int64) (int64, int64) {
	if off >= m.maxSize {
		off = m.rnd.Int63n(m.maxSize)
	}
	return off, min(n, m.maxSize-off)
}

// resize sets the model's size, zero-filling growth.
func (m *fileModel) resize(size int64) {
	if size <= int64(len(m.want)) {
		m.want = m.want[:size]
		return
	}
	m.want = append(m.want, make([]byte, size-int64(len(m.want)))...)
}

func (m *fileModel) step() {
	t := m.t
	fd := int(m.f.Fd())
	r := m.rnd.Intn(100)
	switch {
	case r < 25: // pwrite
		off, n := m.clip(m.offset(), m.length())
		buf := make([]byte, n)
		m.rnd.Read(buf)
		m.log.add("pwrite off=%d len=%d", off, n)
		if k, err := m.f.WriteAt(buf, off); err != nil || int64(k) != n {
			m.log.fatalf(t, "pwrite: wrote %d of %d: %v", k, n, err)
		}
		if off+n > int64(len(m.want)) {
			m.resize(off + n)
		}
		copy(m.want[off:], buf)
		m.check(off, n)
	case r < 40: // pread
		off, n := m.offset(), m.length()
		m.log.add("pread off=%d len=%d", off, n)
		m.check(off, n)
	case r < 48: // truncate
		size := int64(len(m.want))
		var ns int64
		switch m.rnd.Intn(3) {
		case 0:
			ns = m.rnd.Int63n(size + 1)
		case 1:
			ns = size + m.rnd.Int63n(2*mib)
		default:
			ns = max(0, int64(m.rnd.Intn(int(m.maxSize/mib)+1))*mib+int64(m.rnd.Intn(8193))-4096)
		}
		ns = min(ns, m.maxSize)
		m.log.add("truncate %d -> %d", size, ns)
		if err := m.f.Truncate(ns); err != nil {
			m.log.fatalf(t, "ftruncate: %v", err)
		}
		m.resize(ns)
		m.check(max(0, min(size, ns)-4096), 8192)
	case r < 54: // fallocate, mode 0 or KEEP_SIZE
		off, n := m.clip(m.offset(), m.length())
		mode := uint32(0)
		if m.rnd.Intn(2) == 0 {
			mode = unix.FALLOC_FL_KEEP_SIZE
		}
		m.fallocate("fallocate", mode, off, n, func() {
			if mode == 0 && off+n > int64(len(m.want)) {
				m.resize(off + n)
			}
		})
	case r < 62: // punch hole
		off, n := m.clip(m.offset(), m.length())
		m.fallocate("punch", unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n, func() {
			end := min(off+n, int64(len(m.want)))
			for i := off; i < end; i++ {
				m.want[i] = 0
			}
		})
	case r < 68: // mmap read
		m.mmapRead()
	case r < 74: // shared mmap write + msync
		m.mmapWrite()
	case r < 80: // SEEK_DATA: the bytes it skips must be zeros
		off := m.offset()
		m.log.add("seek_data %d", off)
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		size := int64(len(m.want))
		switch {
		case errors.Is(err, unix.ENXIO):
			if off < size && !allZero(m.want[off:]) {
				m.log.fatalf(t, "SEEK_DATA from %d: ENXIO, but the model has data after it", off)
			}
		case err != nil:
			m.log.fatalf(t, "SEEK_DATA from %d: %v", off, err)
		case d < off || d > size || !allZero(m.want[off:d]):
			m.log.fatalf(t, "SEEK_DATA from %d = %d (size %d) skips data", off, d, size)
		}
	case r < 88: // fsync or fdatasync
		m.log.add("fsync")
		if err := m.f.Sync(); err != nil {
			m.log.fatalf(t, "fsync: %v", err)
		}
		if err := unix.Fdatasync(fd); err != nil {
			m.log.fatalf(t, "fdatasync: %v", err)
		}
	case r < 97: // close and reopen
		m.log.add("close+reopen")
		if err := m.f.Close(); err != nil {
			m.log.fatalf(t, "close: %v", err)
		}
		m.open(os.O_RDWR)
		m.check(0, 0)
	default: // remount
		m.log.add("remount")
		m.f.Close()
		m.f = nil
		m.remount(t)
		m.open(os.O_RDWR)
		m.checkAll("after remount")
	}
}

func (m *fileModel) fallocate(kind string, mode uint32, off, n int64, apply func()) {
	if m.skip[kind] {
		return
	}
	m.log.add("%s mode=%#x off=%d len=%d", kind, mode, off, n)
	err := unix.Fallocate(int(m.f.Fd()), mode, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) {
		m.skip[kind] = true
		m.t.Logf("%s (mode %#x): EOPNOTSUPP; no more of them in this run", kind, mode)
		return
	}
	if err != nil {
		m.log.fatalf(m.t, "%s mode %#x off %d len %d: %v", kind, mode, off, n, err)
	}
	apply()
	m.check(max(0, off-4096), n+8192)
}

const pageSize = 4096

// The mapped bytes are only ever touched inside system calls (pwrite and
// pread against a memfd): a page fault on a cowfs mapping in user code
// blocks its thread outside any system call, and the Go runtime, unable to
// stop that thread, stops every other one, the FUSE server's included.
// Faulting the pages in from inside the kernel keeps the runtime free.

// mmapRead maps part of the file read-only and compares it.
func (m *fileModel) mmapRead() {
	size := int64(len(m.want))
	if size == 0 {
		return
	}
	off := m.rnd.Int63n(size) &^ (pageSize - 1)
	n := min(m.length(), size-off)
	m.log.add("mmap read off=%d len=%d", off, n)
	b, err := unix.Mmap(int(m.f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		m.log.fatalf(m.t, "mmap: %v", err)
	}
	defer unix.Munmap(b)
	got := m.throughKernel(b, nil)
	if !bytes.Equal(got, m.want[off:off+n]) {
		m.log.fatalf(m.t, "mmap read at %d differs from the model at +%d", off, firstDiff(got, m.want[off:off+n]))
	}
}

// mmapWrite writes through a shared mapping and msyncs it.
func (m *fileModel) mmapWrite() {
	size := int64(len(m.want))
	if size == 0 {
		return
	}
	start := m.rnd.Int63n(size)
	n := min(m.length(), size-start)
	moff := start &^ (pageSize - 1)
	m.log.add("mmap write off=%d len=%d", start, n)
	b, err := unix.Mmap(int(m.f.Fd()), moff, int(start-moff+n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		m.log.fatalf(m.t, "mmap: %v", err)
	}
	buf := make([]byte, n)
	m.rnd.Read(buf)
	m.throughKernel(b[start-moff:], buf)
	if err := unix.Msync(b, unix.MS_SYNC); err != nil {
		unix.Munmap(b)
		m.log.fatalf(m.t, "msync: %v", err)
	}
	if err := unix.Munmap(b); err != nil {
		m.log.fatalf(m.t, "munmap: %v", err)
	}
	copy(m.want[start:], buf)
	m.check(start, n)
}

// throughKernel copies between a mapping and Go memory inside system
// calls only: with data nil it returns a copy of mapped, otherwise it
// stores data into mapped.
func (m *fileModel) throughKernel(mapped, data []byte) []byte {
	if m.memfd < 0 {
		fd, err := unix.MemfdCreate("cowfs-model", unix.MFD_CLOEXEC)
		if err != nil {
			m.log.fatalf(m.t, "memfd_create: %v", err)
		}
		m.memfd = fd
		m.t.Cleanup(func() { unix.Close(fd) })
	}
	full := func(op string, k int, err error) {
		if err != nil || k != len(mapped) {
			m.log.fatalf(m.t, "%s through the mapping: %d of %d bytes: %v", op, k, len(mapped), err)
		}
	}
	if data == nil {
		k, err := unix.Pwrite(m.memfd, mapped, 0)
		full("pwrite from", k, err)
		out := make([]byte, len(mapped))
		k, err = unix.Pread(m.memfd, out, 0)
		full("pread back", k, err)
		return out
	}
	k, err := unix.Pwrite(m.memfd, data, 0)
	full("pwrite to memfd", k, err)
	k, err = unix.Pread(m.memfd, mapped, 0)
	full("pread into", k, err)
	return nil
}

// check compares the size and the bytes of [off, off+n) with the model.
func (m *fileModel) check(off, n int64) {
	t := m.t
	var st unix.Stat_t
	if err := unix.Fstat(int(m.f.Fd()), &st); err != nil {
		m.log.fatalf(t, "fstat: %v", err)
	}
	size := int64(len(m.want))
	if st.Size != size {
		m.log.fatalf(t, "fstat size %d, model %d", st.Size, size)
	}
	if fi, err := os.Stat(m.path); err != nil || fi.Size() != size {
		m.log.fatalf(t, "stat of the path: %v, %v; model size %d", fi, err, size)
	}
	if n == 0 {
		return
	}
	buf := make([]byte, n)
	k, err := m.f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		m.log.fatalf(t, "pread off %d len %d: %v", off, n, err)
	}
	want := []byte{}
	if off < size {
		want = m.want[off:min(off+n, size)]
	}
	if !bytes.Equal(buf[:k], want) {
		if k != len(want) {
			m.log.fatalf(t, "pread off %d len %d: %d bytes, model %d (err %v)", off, n, k, len(want), err)
		}
		m.log.fatalf(t, "pread off %d len %d differs from the model at %d", off, n, off+int64(firstDiff(buf[:k], want)))
	}
}

// checkAll compares the whole file with the model.
func (m *fileModel) checkAll(when string) {
	got := make([]byte, len(m.want)+1)
	k, err := m.f.ReadAt(got, 0)
	if k != len(m.want) {
		m.log.fatalf(m.t, "full read %s: %d bytes, model %d (%v)", when, k, len(m.want), err)
	}
	if !bytes.Equal(got[:k], m.want) {
		m.log.fatalf(m.t, "full compare %s: differs from the model at %d", when, firstDiff(got[:k], m.want))
	}
	m.check(0, 0)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
