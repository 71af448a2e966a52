package fs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/internal/childproc"
)

// The crash test runs its write workload in a child process (this test
// binary again, running TestCrashChild) that mounts the workspace itself,
// so SIGKILL takes the whole mount down mid-write, as kill -9 of a cowfs
// mount process does.
const (
	crashDirEnv  = "COWFS_CRASH_DIR"
	crashIterEnv = "COWFS_CRASH_ITER"
	crashSeedEnv = "COWFS_CRASH_SEED"
	crashWBEnv   = "COWFS_CRASH_WRITEBACK"
)

// The workload's writers. Each owns its file; the appenders print where
// each fsync'd record lies.
var crashAppendFiles = []string{"log0", "dir/log1", "new/log2", "dir/log3"} // the first two come from the lower

const (
	crashSlotWriter = 4                   // after the appenders (crashAppendFiles); overwrites slots of the lower file "big"
	crashFileWriter = crashSlotWriter + 1 // creates whole files under "files"
	crashSlotLen    = 5000
)

// crashSlots are the offsets in "big" that get overwritten, some across
// chunk boundaries.
var crashSlots = []int64{0, 200000, mib - 2500, mib + 70000, 2*mib - 2500, 3*mib - crashSlotLen}

// crashRecord is the deterministic content of record seq of writer g in
// iteration it.
func crashRecord(it, g, seq int) []byte {
	r := rand.New(rand.NewSource(int64(it)<<40 | int64(g)<<32 | int64(seq)))
	n := 40 + r.Intn(12000)
	if r.Intn(20) == 0 {
		n += r.Intn(300000)
	}
	if g == crashSlotWriter {
		n = crashSlotLen
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(r.Intn(26))
	}
	h := fmt.Sprintf("<%d/%d/%d:", it, g, seq)
	if len(h)+2 <= n {
		copy(b, h)
		b[n-2], b[n-1] = '>', '\n'
	}
	return b
}

// TestCrashChild is the child half of TestCrash; alone it does nothing.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("the child process of TestCrash; runs only when TestCrash starts it")
	}
	it, _ := strconv.Atoi(os.Getenv(crashIterEnv))
	seed, _ := strconv.ParseInt(os.Getenv(crashSeedEnv), 10, 64)
	mnt := filepath.Join(dir, "mnt")
	m, err := newT(t, mnt, testSpec{Lower: filepath.Join(dir, "lower"), Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"),
		Options: Options{WritebackCache: os.Getenv(crashWBEnv) == "1"}})
	if err != nil {
		t.Fatalf("child mount: %v", err)
	}
	// Killed long before this, normally; the cap keeps an orphan from
	// running forever.
	defer m.Unmount()
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...) + "\n"
		outMu.Lock()
		os.Stdout.Write([]byte(line)) // one write per line: the parent may kill us at any time
		outMu.Unlock()
	}
	fail := func(format string, args ...any) {
		say("FAIL "+format, args...)
		select {}
	}
	for _, d := range []string{"new", "files"} {
		if err := os.MkdirAll(filepath.Join(mnt, d), 0o755); err != nil {
			fail("mkdir %s: %v", d, err)
		}
	}
	say("MOUNTED")
	for g, name := range crashAppendFiles {
		go func() {
			r := rand.New(rand.NewSource(seed + int64(g)))
			f, err := os.OpenFile(filepath.Join(mnt, name), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				fail("open %s: %v", name, err)
			}
			fi, err := f.Stat()
			if err != nil {
				fail("fstat %s: %v", name, err)
			}
			off := fi.Size()
			var pending []string
			for seq := 0; ; seq++ {
				rec := crashRecord(it, g, seq)
				if _, err := f.Write(rec); err != nil {
					fail("append to %s: %v", name, err)
				}
				pending = append(pending, fmt.Sprintf("ACK A %d %d %d %d %d", g, it, seq, off, len(rec)))
				off += int64(len(rec))
				if r.Intn(3) == 0 {
					if err := f.Sync(); err != nil {
						fail("fsync %s: %v", name, err)
					}
					for _, p := range pending {
						say("%s", p)
					}
					pending = pending[:0]
				}
			}
		}()
	}
	go func() {
		r := rand.New(rand.NewSource(seed + crashSlotWriter))
		f, err := os.OpenFile(filepath.Join(mnt, "big"), os.O_WRONLY, 0)
		if err != nil {
			fail("open big: %v", err)
		}
		for seq := 0; ; seq++ {
			slot := r.Intn(len(crashSlots))
			say("W %d %d %d", slot, it, seq)
			if _, err := f.WriteAt(crashRecord(it, crashSlotWriter, seq), crashSlots[slot]); err != nil {
				fail("write big: %v", err)
			}
			if err := f.Sync(); err != nil {
				fail("fsync big: %v", err)
			}
			say("ACK S %d %d %d", slot, it, seq)
		}
	}()
	go func() {
		d, err := os.Open(filepath.Join(mnt, "files"))
		if err != nil {
			fail("open files: %v", err)
		}
		for seq := 0; ; seq++ {
			name := filepath.Join(mnt, "files", fmt.Sprintf("%d-%d", it, seq))
			f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				fail("create %s: %v", name, err)
			}
			if _, err := f.Write(crashRecord(it, crashFileWriter, seq)); err != nil {
				fail("write %s: %v", name, err)
			}
			if err := f.Sync(); err != nil {
				fail("fsync %s: %v", name, err)
			}
			f.Close()
			if err := d.Sync(); err != nil {
				fail("fsync files/: %v", err)
			}
			say("ACK F %d %d", it, seq)
		}
	}()
	time.Sleep(60 * time.Second)
}

// crashState is what the parent learned from the children's output.
type crashState struct {
	appends []crashAppend
	slots   [][]crashSlotWrite // per slot, in order
	files   [][2]int           // it, seq
	acks    int
}

type crashAppend struct{ g, it, seq, off, n int }

type crashSlotWrite struct {
	it, seq int
	acked   bool
}

func (s *crashState) parse(line string) error {
	f := strings.Fields(line)
	num := func(i int) int {
		if i >= len(f) {
			return -1
		}
		v, err := strconv.Atoi(f[i])
		if err != nil {
			return -1
		}
		return v
	}
	switch {
	case len(f) == 7 && f[0] == "ACK" && f[1] == "A":
		s.appends = append(s.appends, crashAppend{num(2), num(3), num(4), num(5), num(6)})
		s.acks++
	case len(f) == 4 && f[0] == "W":
		slot := num(1)
		s.slots[slot] = append(s.slots[slot], crashSlotWrite{it: num(2), seq: num(3)})
	case len(f) == 5 && f[0] == "ACK" && f[1] == "S":
		ws := s.slots[num(2)]
		if len(ws) == 0 || ws[len(ws)-1].it != num(3) || ws[len(ws)-1].seq != num(4) {
			return fmt.Errorf("slot ack without its write: %q", line)
		}
		ws[len(ws)-1].acked = true
		s.acks++
	case len(f) == 4 && f[0] == "ACK" && f[1] == "F":
		s.files = append(s.files, [2]int{num(2), num(3)})
		s.acks++
	case len(f) > 0 && f[0] == "FAIL":
		return errors.New(line)
	}
	return nil
}

// TestCrash kills a mount process with SIGKILL in the middle of a write
// workload, several times over one upper, and after each kill mounts the
// upper again and checks that every write fsync'd before the kill is
// there, that the whole tree reads without error, and that the lower is
// unchanged.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: kills a mount process mid-workload, several times over (runs without -short)")
	}
	if err := needFusectl(); err != nil {
		t.Skipf("the FUSE control filesystem is needed to abort a killed mount that has requests in flight, and %s cannot be mounted: %v", fusectl, err)
	}
	t.Run("default", func(t *testing.T) { runCrash(t, false) })
	// With the writeback cache, what was written but not fsync'd may die
	// with the mount; what was fsync'd must not.
	t.Run("writeback", func(t *testing.T) { runCrash(t, true) })
}

func runCrash(t *testing.T, writeback bool) {
	seed := testSeed(t)
	rnd := rand.New(rand.NewSource(seed))
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	mnt := filepath.Join(base, "mnt")
	for _, d := range []string{filepath.Join(lower, "dir"), mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	orig := map[string][]byte{}
	for name, n := range map[string]int{"log0": 10000, "dir/log1": mib + 100, "big": 3*mib + 100} {
		b := make([]byte, n)
		rnd.Read(b)
		orig[name] = b
		if err := os.WriteFile(filepath.Join(lower, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lowerBefore := readTree(t, lower)
	st := &crashState{slots: make([][]crashSlotWrite, len(crashSlots))}
	for it := 0; it < 5; it++ {
		crashOnce(t, base, it, seed+int64(it)*1000, 20+rnd.Intn(400), time.Duration(rnd.Intn(30))*time.Millisecond, st, writeback)
		tm := &testMount{Dir: mnt, Lower: lower, Upper: filepath.Join(base, "upper"), Work: filepath.Join(base, "work")}
		m, err := newT(t, mnt, testSpec{Lower: tm.Lower, Upper: tm.Upper, Work: tm.Work})
		if err != nil {
			t.Fatalf("iteration %d (seed %d): mount after the kill: %v", it, seed, err)
		}
		tm.m = m
		t.Cleanup(func() { tm.unmount(t) })
		verifyCrash(t, tm, orig, st, fmt.Sprintf("iteration %d (seed %d)", it, seed))
		tm.unmount(t)
		if d := diffTrees(lowerBefore, readTree(t, lower)); d != "" {
			t.Fatalf("iteration %d (seed %d): the lower changed: %s", it, seed, d)
		}
		t.Logf("iteration %d: %d acknowledged writes so far, all there", it, st.acks)
	}
}

// crashOnce runs one child until it has acknowledged at least want
// writes, waits a little more, kills it and detaches its dead mount.
func crashOnce(t *testing.T, base string, it int, seed int64, want int, extra time.Duration, st *crashState, writeback bool) {
	mnt := filepath.Join(base, "mnt")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+base, crashIterEnv+"="+strconv.Itoa(it), crashSeedEnv+"="+strconv.FormatInt(seed, 10))
	if writeback {
		cmd.Env = append(cmd.Env, crashWBEnv+"=1")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := childproc.Start(cmd); err != nil { // dies with the test binary
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		waited <- cmd.Wait()
	}()
	// A process that serves a mount and also uses it cannot die while
	// one of its threads waits in a FUSE request: the kernel waits for
	// the answer, and the answer would come from the dying process. So
	// after SIGKILL the connection is aborted through fusectl, which is
	// what the kernel does by itself when a separate server dies.
	// Connection numbers are reused once a mount is gone, so the abort
	// is written once, and only while the child's mount is still there.
	abort, dev := "", ""
	kill := func() {
		cmd.Process.Signal(syscall.SIGKILL)
		if abort != "" {
			if d, _ := mountDev(mnt); d == dev {
				os.WriteFile(abort, []byte("1"), 0o200)
			}
			abort = ""
		}
	}
	// However this ends, the child is dead and its mount detached.
	t.Cleanup(func() {
		kill()
		unix.Unmount(mnt, unix.MNT_DETACH)
	})
	var other []string // the child's output that is not part of the protocol
	fatal := func(format string, args ...any) {
		kill()
		t.Fatalf("iteration %d (seed %d): %s\nchild output:\n%s\nchild stderr:\n%s", it, seed, fmt.Sprintf(format, args...),
			strings.Join(other, "\n"), stderr.String())
	}
	deadline := time.After(60 * time.Second)
	start := st.acks
	var killAt <-chan time.Time
	killed := false
	for lines != nil {
		select {
		case l, ok := <-lines:
			if !ok {
				lines = nil
				break
			}
			if err := st.parse(l); err != nil {
				fatal("child: %v", err)
			}
			if !strings.HasPrefix(l, "ACK ") && !strings.HasPrefix(l, "W ") && len(other) < 50 {
				other = append(other, l)
			}
			if l == "MOUNTED" {
				if abort, dev, err = fuseAbortFile(mnt); err != nil {
					fatal("%v", err)
				}
			}
			if !killed && killAt == nil && st.acks-start >= want {
				killAt = time.After(extra)
			}
		case <-killAt:
			killAt = nil
			killed = true
			kill()
		case <-deadline:
			fatal("no %d acknowledged writes from the child, or it did not die", want)
		}
	}
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
		fatal("the killed child did not exit")
	}
	if !killed {
		fatal("the child exited before it was killed")
	}
	if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		t.Fatalf("detach the dead mount: %v", err)
	}
}

// mountDev returns the device ("major:minor") of the last mount at mnt.
func mountDev(mnt string) (string, error) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	dev := ""
	for _, l := range strings.Split(string(info), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == mnt {
			dev = f[2]
		}
	}
	if dev == "" {
		return "", fmt.Errorf("no mount at %s in /proc/self/mountinfo", mnt)
	}
	return dev, nil
}

const fusectl = "/sys/fs/fuse/connections"

// needFusectl mounts the FUSE control filesystem if it is not mounted
// (systemd mounts it at boot; containers often lack it).
func needFusectl() error {
	var sfs unix.Statfs_t
	if err := unix.Statfs(fusectl, &sfs); err != nil {
		return err
	}
	const fusectlMagic = 0x65735543
	if sfs.Type == fusectlMagic {
		return nil
	}
	return unix.Mount("fusectl", fusectl, "fusectl", 0, "")
}

// fuseAbortFile returns the fusectl file that aborts the FUSE connection
// of the mount at mnt, and the mount's device.
func fuseAbortFile(mnt string) (abort, dev string, err error) {
	if dev, err = mountDev(mnt); err != nil {
		return "", "", err
	}
	_, minor, _ := strings.Cut(dev, ":")
	abort = filepath.Join(fusectl, minor, "abort")
	if _, err := os.Stat(abort); err != nil {
		return "", "", fmt.Errorf("the mount's FUSE connection: %v", err)
	}
	return abort, dev, nil
}

// verifyCrash reads the whole tree and checks every acknowledged write.
func verifyCrash(t *testing.T, tm *testMount, orig map[string][]byte, st *crashState, when string) {
	tree := readTree(t, tm.Dir) // every file read through: no EIO anywhere
	data := func(name string) []byte {
		e, ok := tree[name]
		if !ok || e.kind != 'f' {
			t.Fatalf("%s: %s is missing", when, name)
		}
		return e.data
	}
	for _, name := range []string{"log0", "dir/log1"} {
		if b := data(name); len(b) < len(orig[name]) || !bytes.Equal(b[:len(orig[name])], orig[name]) {
			t.Fatalf("%s: the lower bytes of %s did not survive the appends", when, name)
		}
	}
	for _, a := range st.appends {
		name := crashAppendFiles[a.g]
		b := data(name)
		if a.off+a.n > len(b) || !bytes.Equal(b[a.off:a.off+a.n], crashRecord(a.it, a.g, a.seq)) {
			t.Fatalf("%s: fsync'd record %d/%d of %s at %d+%d is lost (file size %d)", when, a.it, a.seq, name, a.off, a.n, len(b))
		}
	}
	big := data("big")
	if len(big) != len(orig["big"]) {
		t.Fatalf("%s: big has size %d, want %d", when, len(big), len(orig["big"]))
	}
	outside := append([]byte(nil), big...)
	for slot, ws := range st.slots {
		off := crashSlots[slot]
		got := big[off : off+crashSlotLen]
		// The last acknowledged write, or the lower bytes, and any
		// write after it, which may have landed in part.
		cands := [][]byte{orig["big"][off : off+crashSlotLen]}
		for _, w := range ws {
			if w.acked {
				cands = cands[:0]
			}
			cands = append(cands, crashRecord(w.it, crashSlotWriter, w.seq))
		}
		for i := range got {
			ok := false
			for _, c := range cands {
				ok = ok || c[i] == got[i]
			}
			if !ok {
				t.Fatalf("%s: big slot %d at +%d holds a byte no acknowledged or later write put there", when, slot, i)
			}
		}
		copy(outside[off:], orig["big"][off:off+crashSlotLen])
	}
	if !bytes.Equal(outside, orig["big"]) {
		t.Fatalf("%s: big changed outside its written slots at %d", when, firstDiff(outside, orig["big"]))
	}
	for _, f := range st.files {
		name := fmt.Sprintf("files/%d-%d", f[0], f[1])
		if !bytes.Equal(data(name), crashRecord(f[0], crashFileWriter, f[1])) {
			t.Fatalf("%s: fsync'd file %s does not hold its bytes", when, name)
		}
	}
}
