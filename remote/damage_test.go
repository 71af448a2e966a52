package remote_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/object/objecttest"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// openView is what a worker's mount reads through, without the mount:
// the version of the export, through a cache over w's store.
func openView(w *remotetest.Worker, addr string, timeout time.Duration, log *slog.Logger) (*remote.Cache, *lower.Objects) {
	w.T.Helper()
	c, lo, _ := openViewAt(w, addr, object.Zero, timeout, log)
	return c, lo
}

// openViewAt is openView of version v, or of the export as it is now if v
// is zero; it returns the version opened.
func openViewAt(w *remotetest.Worker, addr string, v object.Digest, timeout time.Duration, log *slog.Logger) (*remote.Cache, *lower.Objects, object.Digest) {
	w.T.Helper()
	vw := w.View(addr, remotetest.ViewOptions{Version: v, Timeout: timeout, Log: log})
	return vw.Cache, vw.Lower, vw.Version
}

// readAll reads path of lo whole, failing the test if it takes longer
// than limit.
func readAll(t *testing.T, lo *lower.Objects, path string, limit time.Duration) ([]byte, error) {
	t.Helper()
	var b []byte
	err := within(t, limit, "read "+path, func() (err error) {
		b, err = readLower(lo, path)
		return err
	})
	return b, err
}

func readLower(lo *lower.Objects, path string) ([]byte, error) {
	f, err := lo.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.NewSectionReader(f, 0, 1<<40))
}

// damageBlob flips a byte in the middle of one chunk (blob) object of the
// store in dir and returns its digest.
func damageBlob(t *testing.T, dir string) object.Digest {
	t.Helper()
	return damageKind(t, dir, object.KindBlob, 1)[0]
}

// damageKind flips a byte in the middle of up to n objects of kind k in
// the store in dir (all, if n < 0) and returns their digests.
func damageKind(t *testing.T, dir string, k object.Kind, n int) []object.Digest {
	t.Helper()
	store, err := object.OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ds []object.Digest
	store.Each(func(o object.StoredObject) error {
		if kind, err := store.Kind(o.Digest); err == nil && kind == k && len(ds) != n {
			ds = append(ds, o.Digest)
		}
		return nil
	})
	if len(ds) == 0 {
		t.Fatalf("no object of kind %c to damage", k)
	}
	for _, d := range ds {
		objecttest.DamageFile(t, dir, d)
	}
	return ds
}

// A chunk damaged in the master's store is caught by the first worker
// that reads it: the master checks its copy, quarantines it, logs it, and
// stores it again from the export, and the worker's read succeeds.
func TestMasterDamageRepaired(t *testing.T) {
	exp := t.TempDir()
	data := randBytes(3<<20 + 5)
	writeFile(t, filepath.Join(exp, "f"), data, 0o644)
	var mlog remotetest.LogBuffer
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{Logger: mlog.Logger()})
	openView(remotetest.NewWorker(t), ms.Addr, 10*time.Second, nil) // the master scans the export
	d := damageBlob(t, ms.Config.Objects)

	// Workers at once: each gets the chunk whole.
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range cap(errs) {
		_, lo := openView(remotetest.NewWorker(t), ms.Addr, 10*time.Second, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := readLower(lo, "f")
			if err == nil && !bytes.Equal(b, data) {
				err = errors.New("wrong bytes")
			}
			errs <- err
		}()
	}
	within(t, time.Minute, "reads", func() error { wg.Wait(); return nil })
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("read of a file with a chunk damaged on the master: %v", err)
		}
	}
	if mlog.ErrorLine(d.String()) == "" {
		t.Errorf("the master logged no error naming %s:\n%s", d, mlog.String())
	}
	store, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(context.Background(), d); err != nil {
		t.Errorf("the master's copy was not repaired: %v", err)
	}
}

// Trees (the version object among them) and file objects damaged in the
// master's store are restored as chunks are.
func TestMasterDamageRepairedTreesFiles(t *testing.T) {
	for _, k := range []object.Kind{object.KindTree, object.KindFile} {
		t.Run(string(rune(k)), func(t *testing.T) {
			exp := t.TempDir()
			data := randBytes(1<<20 + 5)
			writeFile(t, filepath.Join(exp, "d/f"), data, 0o644)
			writeFile(t, filepath.Join(exp, "g"), []byte("g"), 0o644)
			var mlog remotetest.LogBuffer
			ms := remotetest.StartMaster(t, exp, remote.ServerConfig{Logger: mlog.Logger()})
			_, _, v := openViewAt(remotetest.NewWorker(t), ms.Addr, object.Zero, 10*time.Second, nil)
			ds := damageKind(t, ms.Config.Objects, k, -1)

			// The version as it was, not resolved again: a scan
			// for a resolve would store the trees again.
			_, lo, _ := openViewAt(remotetest.NewWorker(t), ms.Addr, v, 10*time.Second, nil)
			if b, err := readAll(t, lo, "d/f", time.Minute); err != nil || !bytes.Equal(b, data) {
				t.Fatalf("read of d/f: %d bytes, %v", len(b), err)
			}
			if b, err := readAll(t, lo, "g", time.Minute); err != nil || string(b) != "g" {
				t.Fatalf("read of g: %q, %v", b, err)
			}
			store, err := object.OpenDirStore(ms.Config.Objects)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range ds {
				if _, err := store.Get(context.Background(), d); err != nil {
					t.Errorf("not repaired: %v", err)
				}
			}
			if mlog.ErrorLine("restoring it from the export") == "" {
				t.Errorf("the master logged no damage:\n%s", mlog.String())
			}
		})
	}
}

// A chunk damaged in the master's store whose file in the export changed
// since cannot be repaired: the worker's read fails at once, saying so,
// and does not wait out its timeout.
func TestMasterDamageUnrepairable(t *testing.T) {
	exp := t.TempDir()
	data := randBytes(3<<20 + 5)
	writeFile(t, filepath.Join(exp, "f"), data, 0o644)
	var mlog, wlog remotetest.LogBuffer
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{Logger: mlog.Logger()})
	const timeout = 15 * time.Second
	cache, lo := openView(remotetest.NewWorker(t), ms.Addr, timeout, wlog.Logger())
	d := damageBlob(t, ms.Config.Objects)
	writeFile(t, filepath.Join(exp, "f"), randBytes(len(data)), 0o644)

	start := time.Now()
	_, err := readAll(t, lo, "f", 3*timeout)
	took := time.Since(start)
	if err == nil {
		t.Fatal("read of a chunk damaged on the master, and gone from its export, succeeded")
	}
	if took > timeout {
		t.Errorf("the read failed after %v; the timeout is %v", took, timeout)
	}
	for _, w := range []string{d.Short(), "master's copy", "damaged", "could not be restored from its export"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not say %q: %v", w, err)
		}
	}
	if wlog.ErrorLine(d.String(), "master's copy") == "" {
		t.Errorf("the worker logged no error naming %s and the master's copy:\n%s", d, wlog.String())
	}
	if mlog.ErrorLine(d.String()) == "" {
		t.Errorf("the master logged no error naming %s:\n%s", d, mlog.String())
	}
	if cache.Stats().Errors == 0 {
		t.Error("the failed read was not counted")
	}

	// Asked again, the master answers at once from what it learned.
	start = time.Now()
	if _, err := readAll(t, lo, "f", 3*timeout); err == nil || !strings.Contains(err.Error(), "master's copy") {
		t.Errorf("second read: %v", err)
	}
	if took := time.Since(start); took > timeout/2 {
		t.Errorf("the second read failed after %v", took)
	}
	if n := strings.Count(mlog.String(), "restoring it from the export"); n != 1 {
		t.Errorf("the master tried %d times to restore the lost object; want once:\n%s", n, mlog.String())
	}
}

// A repair whose scan of the export failed (a file kept changing) fails
// the read, saying why, and a later read tries again.
func TestMasterDamageScanFails(t *testing.T) {
	t.Cleanup(func() { remote.SetRepairRetry(remote.SetRepairRetry(0)) })
	remote.SetRepairRetry(200 * time.Millisecond)
	exp := t.TempDir()
	data := randBytes(2<<20 + 5)
	writeFile(t, filepath.Join(exp, "f"), data, 0o644)
	// Scanned before f: a scan that fails on it never gets to f.
	writeFile(t, filepath.Join(exp, "a.log"), randBytes(8<<20), 0o644)
	var mlog remotetest.LogBuffer
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{Logger: mlog.Logger()})
	_, lo := openView(remotetest.NewWorker(t), ms.Addr, 15*time.Second, nil)
	blob, err := object.EncodeBlob(data[:1<<20])
	if err != nil {
		t.Fatal(err)
	}
	d := object.Sum(blob)
	objecttest.DamageFile(t, ms.Config.Objects, d)

	// From here every read of the log sees it grow, so every scan of it
	// the repair makes fails; its first line is written now, so that
	// the repair's scan does not find the log as the first scan left it
	// and reads it.
	stopWriter := appendOnRead(t, filepath.Join(exp, "a.log"))
	t.Cleanup(stopWriter)

	_, err = readAll(t, lo, "f", time.Minute)
	if err == nil || !strings.Contains(err.Error(), "master's copy") {
		t.Fatalf("read while the repair cannot scan: %v\n%s", err, mlog.String())
	}
	if mlog.ErrorLine(d.String(), "changed while being read") == "" {
		t.Errorf("the master did not log why it could not restore %s:\n%s", d, mlog.String())
	}
	stopWriter()
	time.Sleep(300 * time.Millisecond) // past the failed repair's repairRetry
	if b, err := readAll(t, lo, "f", time.Minute); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read once the export held still: %d bytes, %v", len(b), err)
	}
}

// appendOnRead appends a line to the file at path now, and again during
// every read of it until the returned stop (which may be called more
// than once): each read waits, before it reads, until its line is
// written, so a scan of the file sees it change every time, whatever the
// scheduling. A fanotify permission event holds each read until the
// listener here answers it.
func appendOnRead(t *testing.T, path string) (stop func()) {
	t.Helper()
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte("line\n")
	if _, err := w.Write(line); err != nil {
		w.Close()
		t.Fatal(err)
	}
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
	if err != nil {
		w.Close()
		t.Fatalf("fanotify_init: %v", err)
	}
	fan := os.NewFile(uintptr(fd), "fanotify")
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD, unix.FAN_ACCESS_PERM, unix.AT_FDCWD, path); err != nil {
		fan.Close()
		w.Close()
		t.Fatalf("fanotify_mark %s: %v", path, err)
	}
	var (
		wg     sync.WaitGroup
		failed error
	)
	wg.Go(func() {
		buf := make([]byte, 4096)
		for {
			n, err := fan.Read(buf)
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					failed = fmt.Errorf("read fanotify events: %w", err)
				}
				return
			}
			for b := buf[:n]; len(b) >= unix.FAN_EVENT_METADATA_LEN; {
				var ev unix.FanotifyEventMetadata
				if _, err := binary.Decode(b, binary.NativeEndian, &ev); err != nil || ev.Event_len < unix.FAN_EVENT_METADATA_LEN || int(ev.Event_len) > len(b) {
					failed = fmt.Errorf("fanotify event %x: %v", b, err)
					return
				}
				b = b[ev.Event_len:]
				if ev.Fd < 0 {
					continue // the queue overflowed: no read waits on this
				}
				if _, err := w.Write(line); err != nil && failed == nil {
					failed = fmt.Errorf("append to %s: %w", path, err)
				}
				// Answered even when the append failed: the read must
				// not wait forever.
				resp := binary.NativeEndian.AppendUint32(binary.NativeEndian.AppendUint32(nil, uint32(ev.Fd)), unix.FAN_ALLOW)
				if _, err := fan.Write(resp); err != nil && failed == nil {
					failed = fmt.Errorf("answer fanotify: %w", err)
				}
				unix.Close(int(ev.Fd))
			}
		}
	})
	return sync.OnceFunc(func() {
		// Closing the group answers the reads still waiting, allowing
		// them.
		fan.Close()
		wg.Wait()
		w.Close()
		if failed != nil {
			t.Error(failed)
		}
	})
}

// Asking the master to verify an object it holds whole costs it a hash,
// and nothing more: no quarantine, no scan, no error.
func TestMasterVerifyGood(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), randBytes(1<<20), 0o644)
	var mlog remotetest.LogBuffer
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{Logger: mlog.Logger()})
	openView(remotetest.NewWorker(t), ms.Addr, 10*time.Second, nil)
	store, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	c, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	err = store.Each(func(o object.StoredObject) error {
		b, err := c.GetVerified(ctx, o.Digest)
		if err == nil && object.Sum(b) != o.Digest {
			err = errors.New("wrong bytes")
		}
		n++
		return err
	})
	if err != nil || n == 0 {
		t.Fatalf("verified get of %d objects: %v", n, err)
	}
	if strings.Contains(mlog.String(), "level=ERROR") || strings.Contains(mlog.String(), "restored") {
		t.Errorf("the master acted on good objects:\n%s", mlog.String())
	}
	if _, err := os.Stat(filepath.Join(ms.Config.Objects, object.QuarantineDir)); err == nil {
		t.Error("the master quarantined something")
	}
}

// A master started again over a store with a damaged chunk stores the
// chunk again when it scans the export, and serves it whole.
func TestMasterRestartRepairs(t *testing.T) {
	exp := t.TempDir()
	data := randBytes(3<<20 + 5)
	writeFile(t, filepath.Join(exp, "f"), data, 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	openView(remotetest.NewWorker(t), ms.Addr, 10*time.Second, nil)
	d := damageBlob(t, ms.Config.Objects)
	ms.Restart()

	_, lo := openView(remotetest.NewWorker(t), ms.Addr, 10*time.Second, nil)
	b, err := readAll(t, lo, "f", time.Minute)
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read after a restart of a master with a damaged chunk: %d bytes, %v", len(b), err)
	}
	store, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(context.Background(), d); err != nil {
		t.Errorf("the master's copy was not repaired: %v", err)
	}
}

// A chunk damaged in the worker's own cache is quarantined, logged with
// its digest, counted, and fetched again.
func TestCacheDamageLogged(t *testing.T) {
	exp := t.TempDir()
	data := randBytes(3<<20 + 5)
	writeFile(t, filepath.Join(exp, "f"), data, 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	var wlog remotetest.LogBuffer
	w := remotetest.NewWorker(t)
	_, lo := openView(w, ms.Addr, 10*time.Second, wlog.Logger())
	if b, err := readAll(t, lo, "f", time.Minute); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("first read: %d bytes, %v", len(b), err)
	}
	d := damageBlob(t, filepath.Join(w.State, "objects"))
	cache, lo := openView(w, ms.Addr, 10*time.Second, wlog.Logger()) // no chunk kept in memory
	if b, err := readAll(t, lo, "f", time.Minute); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read after a cached chunk was damaged: %d bytes, %v", len(b), err)
	}
	if !strings.Contains(wlog.String(), d.String()) || !strings.Contains(wlog.String(), "damaged") {
		t.Errorf("the worker did not log the damaged %s:\n%s", d, wlog.String())
	}
	if _, err := os.Stat(filepath.Join(w.State, "objects", object.QuarantineDir, strings.TrimPrefix(d.String(), "sha256-"))); err != nil {
		t.Errorf("the damaged chunk was not quarantined: %v", err)
	}
	if c := cache.Stats().Corrupt; c != 1 {
		t.Errorf("corrupt counter %d after one damaged chunk was fetched again", c)
	}
}

// A crash can leave the cache's pack index ahead of the pack's bytes
// (the index reached the disk, the bytes did not). The next mount reads
// right bytes: each chunk whose bytes are gone is found damaged by its
// digest and fetched again.
func TestCachePackCutByCrash(t *testing.T) {
	exp := t.TempDir()
	data := randBytes(5<<20 + 7)
	writeFile(t, filepath.Join(exp, "f"), data, 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	_, lo := openView(w, ms.Addr, 10*time.Second, nil)
	if b, err := readAll(t, lo, "f", time.Minute); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("first read: %d bytes, %v", len(b), err)
	}
	cutPacks(t, filepath.Join(w.State, "objects"))
	cache, lo := openView(w, ms.Addr, 10*time.Second, nil)
	if b, err := readAll(t, lo, "f", time.Minute); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read after the crash: %d bytes, %v", len(b), err)
	}
	if s := cache.Stats(); s.Corrupt == 0 || s.BytesFetched < 3<<20 {
		t.Errorf("%d damaged chunks found and %d bytes fetched again after two thirds of the pack were cut off",
			s.Corrupt, s.BytesFetched)
	}
}

// A master keeps what it scans in packs, not a file per object (0068),
// and serves it from there.
func TestMasterPacksWhatItScans(t *testing.T) {
	exp := t.TempDir()
	files := map[string][]byte{"big": randBytes(3<<20 + 5)}
	for i := range 30 {
		files[fmt.Sprintf("d%d/f%d", i%3, i)] = randBytes(100 + i*997)
	}
	for p, b := range files {
		writeFile(t, filepath.Join(exp, p), b, 0o644)
	}
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	_, lo := openView(remotetest.NewWorker(t), ms.Addr, 10*time.Second, nil)
	for p, want := range files {
		if b, err := readAll(t, lo, p, time.Minute); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("read %s: %d bytes, %v", p, len(b), err)
		}
	}
	ents, err := os.ReadDir(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if len(e.Name()) == 2 {
			t.Errorf("the master stored objects as files, in %s", e.Name())
		}
	}
	if p, _ := filepath.Glob(filepath.Join(ms.Config.Objects, "packs", "*.pack")); len(p) == 0 {
		t.Error("the master wrote no pack")
	}
}

// A crash can leave a master's pack index ahead of the pack's bytes (an
// index that reached the disk before a Sync, bytes that did not). A
// master started again stores what it finds cut short again when it
// scans, and workers read right bytes.
func TestMasterPackCutByCrash(t *testing.T) {
	exp := t.TempDir()
	files := map[string][]byte{"big": randBytes(5<<20 + 7)}
	for i := range 20 {
		files[fmt.Sprintf("d/f%d", i)] = randBytes(2000 + i)
	}
	for p, b := range files {
		writeFile(t, filepath.Join(exp, p), b, 0o644)
	}
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	openView(remotetest.NewWorker(t), ms.Addr, 10*time.Second, nil)
	ms.Stop()
	cutPacks(t, ms.Config.Objects)
	ms.Start(ms.Addr)
	_, lo := openView(remotetest.NewWorker(t), ms.Addr, 10*time.Second, nil)
	for p, want := range files {
		if b, err := readAll(t, lo, p, time.Minute); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("read %s after the master's pack was cut: %d bytes, %v", p, len(b), err)
		}
	}
}

// cutPacks cuts every pack of the store in dir to a third of its bytes,
// leaving the indexes whole: what a crash that lost written bytes leaves.
func cutPacks(t *testing.T, dir string) {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	if len(packs) == 0 {
		t.Fatal("no pack in " + dir)
	}
	for _, p := range packs {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, fi.Size()/3); err != nil {
			t.Fatal(err)
		}
	}
}
