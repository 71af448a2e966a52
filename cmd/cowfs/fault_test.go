package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/statedir"
)

// serveAt runs cowfs serve with state dir state on addr (a free port if
// empty), logging to logPath, until stop or the test's end.
func serveAt(t *testing.T, state, root, addr, logPath string) (string, func()) {
	t.Helper()
	if addr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr().String()
		l.Close()
	}
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--state", state, "serve", "--root", root, "--listen", addr)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); cmd.Wait(); log.Close() }) }
	t.Cleanup(stop)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, stop
		}
		if time.Now().After(deadline) {
			t.Fatalf("cowfs serve did not listen on %s", addr)
		}
	}
}

// faultTree writes a spider project of small files and multi-chunk files
// under dir and returns each file's content by path.
func faultTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	want := map[string][]byte{}
	r := rand.New(rand.NewPCG(1, 2))
	add := func(p string, n int) {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
		want[p] = b
	}
	for i := range 4 {
		add(fmt.Sprintf("data/big%d.bin", i), 2*object.ChunkSize+object.ChunkSize/2+i)
	}
	for i := range 40 {
		add(fmt.Sprintf("crawlab_project/spiders/s%02d/spider.py", i), 1000+97*i)
	}
	return want
}

// objectFiles lists the object files of the store under state, and the
// packs of a worker's cache: not its temporary files, locks or
// quarantine.
func objectFiles(state string) []string {
	dir := statedir.ObjectsDir(state)
	out, _ := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	fans, _ := os.ReadDir(dir)
	for _, fan := range fans {
		if !fan.IsDir() || len(fan.Name()) != 2 {
			continue
		}
		ents, _ := os.ReadDir(filepath.Join(dir, fan.Name()))
		for _, e := range ents {
			out = append(out, filepath.Join(dir, fan.Name(), e.Name()))
		}
	}
	return out
}

// damage flips a byte of, truncates or deletes object file p, as a bad
// disk or a careless operator would.
func damage(p string, r *rand.Rand) (string, error) {
	switch r.IntN(3) {
	case 0:
		if strings.HasSuffix(p, ".pack") {
			// Many objects: one byte of one, in place.
			fi, err := os.Stat(p)
			if err != nil || fi.Size() == 0 {
				return "", err
			}
			os.Chmod(p, 0o600)
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return "", err
			}
			defer f.Close()
			var b [1]byte
			at := r.Int64N(fi.Size())
			f.ReadAt(b[:], at)
			b[0] ^= byte(1 + r.IntN(255))
			_, err = f.WriteAt(b[:], at)
			return "flip", err
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			return "", err
		}
		b[r.IntN(len(b))] ^= byte(1 + r.IntN(255))
		os.Chmod(p, 0o600)
		return "flip", os.WriteFile(p, b, 0o400)
	case 1:
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		return "truncate", os.Truncate(p, fi.Size()/2)
	default:
		return "delete", os.Remove(p)
	}
}

// readChecked reads path with the page cache dropped first, so that the
// bytes come from the filesystem, not from an earlier read; it fails the
// test if the read does not end within the deadline.
func readChecked(t *testing.T, path string) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := os.Open(path)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		b, err := io.ReadAll(f)
		ch <- result{b, err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-time.After(40 * time.Second):
		t.Fatalf("read of %s did not end in 40 s", path)
		return nil, nil
	}
}

// TestFaultInjection damages objects at random in a local store, a
// master's store and a worker's cache while readers read through a local
// mount over a snapshot, a worker's mount and a restore. A read may fail
// (EIO), but never return wrong bytes; every object found damaged is
// quarantined and logged; afterwards `verify --repair` restores the
// local snapshot from the files it was taken of, and a restarted master
// serves every file whole again.
func TestFaultInjection(t *testing.T) {
	// Not parallel: four mounts, a master and damaging loops, whose
	// readers each get a 5 s --io-timeout; with other mounts on the same
	// CPUs a slow read fails as a timeout, not as the damage it tests.
	if testing.Short() {
		t.Skip("slow: damages objects under a master, a worker and readers (runs without -short)")
	}
	base := t.TempDir()
	src := filepath.Join(base, "src")
	want := faultTree(t, src)

	master, worker, local := filepath.Join(base, "master"), filepath.Join(base, "worker"), filepath.Join(base, "local")
	masterLog := filepath.Join(base, "serve.log")
	addr, stopMaster := serveAt(t, master, src, "", masterLog)

	lmnt, rmnt, wmnt := filepath.Join(base, "lmnt"), filepath.Join(base, "rmnt"), filepath.Join(base, "wmnt")
	for _, m := range []string{lmnt, wmnt} {
		os.Mkdir(m, 0o755)
		unmountOnCleanup(t, m)
	}
	cli(t, local, "mount", lmnt, "--lower", src)
	cli(t, local, "snapshot", lmnt, "f0")
	unmountCLI(t, lmnt)
	// A restore reads its files from the snapshot's objects in the local
	// store; the worker's mount from its cache, filled from the master's
	// store as it reads.
	restoreAt(t, local, "f0", rmnt)
	cli(t, worker, "mount", wmnt, "--remote", addr, "--io-timeout", "5s")
	mnts := []string{rmnt, wmnt}

	runFaults(t, []string{local, master, worker}, mnts, want, 4*time.Second)
	if t.Failed() {
		return
	}
	for _, state := range []string{local, worker, master} {
		checkQuarantineLogged(t, state, masterLog)
	}

	// The local snapshot's source is unchanged: everything is repaired.
	unmountCLI(t, rmnt)
	if out, code := run(t, "--state", local, "verify", "f0", "--repair"); code != 0 {
		t.Errorf("verify --repair f0: exit %d: %s", code, out)
	}
	verifyOK(t, local, "f0")
	restoreAt(t, local, "f0", lmnt)
	readAll(t, "in a restore after repair", want, lmnt)

	// A master restarted over its damaged store re-reads its export and
	// serves every file whole again, to the worker mounted before and to
	// a new one.
	stopMaster()
	serveAt(t, master, src, addr, masterLog)
	fresh := filepath.Join(base, "fresh")
	os.Mkdir(fresh, 0o755)
	unmountOnCleanup(t, fresh)
	cli(t, filepath.Join(base, "worker2"), "mount", fresh, "--remote", addr, "--io-timeout", "20s")
	readAll(t, "after the master's restart", want, wmnt, fresh)
}

// readAll reads every file of want through each mount and fails the test
// for each that does not read whole.
func readAll(t *testing.T, when string, want map[string][]byte, mnts ...string) {
	t.Helper()
	for p, w := range want {
		for _, m := range mnts {
			if b, err := readChecked(t, filepath.Join(m, p)); err != nil || !bytes.Equal(b, w) {
				t.Errorf("%s %s: %d bytes, %v", filepath.Join(m, p), when, len(b), err)
			}
		}
	}
}

// runFaults damages random objects of the stores under states while two
// readers read random files of want through mnts, for d. A read must give
// the file's bytes or EIO.
func runFaults(t *testing.T, states, mnts []string, want map[string][]byte, d time.Duration) {
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	injected := map[string]int{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(3, 4))
		for i := 0; i < 60 && !stop.Load(); i++ {
			state := states[r.IntN(len(states))]
			if objs := objectFiles(state); len(objs) > 0 {
				if how, err := damage(objs[r.IntN(len(objs))], r); err == nil && how != "" {
					mu.Lock()
					injected[filepath.Base(state)+" "+how]++
					mu.Unlock()
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	// The kernel keeps what it read of a file, and FADV_DONTNEED does not
	// drop a FUSE file's pages while the mount says they stay valid: so
	// that reads reach the stores, drop every clean page now and then.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
			time.Sleep(200 * time.Millisecond)
		}
	}()
	var reads, failed atomic.Int64
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(5, uint64(g)))
			for !stop.Load() {
				rel := paths[r.IntN(len(paths))]
				p := filepath.Join(mnts[r.IntN(len(mnts))], rel)
				b, err := readChecked(t, p)
				reads.Add(1)
				switch w := want[rel]; {
				case err == nil && !bytes.Equal(b, w):
					t.Errorf("%s: wrong bytes served (%d bytes, want %d)", p, len(b), len(w))
				case err != nil && !errors.Is(err, syscall.EIO):
					t.Errorf("%s: %v, want the bytes or EIO", p, err)
				case err != nil:
					failed.Add(1)
				}
			}
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	t.Logf("faults %v; %d reads, %d failed with EIO", injected, reads.Load(), failed.Load())
}

// checkQuarantineLogged fails the test for each object quarantined in the
// store under state that no log of its owner names.
func checkQuarantineLogged(t *testing.T, state, masterLog string) {
	t.Helper()
	quarantined, _ := os.ReadDir(filepath.Join(statedir.ObjectsDir(state), object.QuarantineDir))
	logs := []string{masterLog}
	filepath.WalkDir(state, func(p string, d iofs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".log") && d.Type().IsRegular() {
			logs = append(logs, p)
		}
		return nil
	})
	var all []byte
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		all = append(all, b...)
	}
	for _, q := range quarantined {
		if short := q.Name()[:12]; !bytes.Contains(all, []byte(short)) {
			t.Errorf("%s quarantined %s, but no log of it names it", filepath.Base(state), short)
		}
	}
}
