package cowfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// learnExport is a small spider for the learned-prefetch tests: a
// package tree of small files and a data file of a few chunks, the
// files in the order a task reads them.
type learnExport struct {
	dir   string
	names []string
	files map[string][]byte
}

func newLearnExport(t *testing.T) *learnExport {
	e := &learnExport{dir: t.TempDir(), files: map[string][]byte{}}
	add := func(name string, b []byte) {
		writeFile(t, filepath.Join(e.dir, name), b, 0o644)
		e.names = append(e.names, name)
		e.files[name] = b
	}
	// Read from the last package to the first, the data file between:
	// not the order of the export's names.
	for p := 3; p >= 0; p-- {
		for m := range 10 {
			name := fmt.Sprintf("spider/pkg%d/m%02d.py", p, m)
			add(name, append([]byte(name+"\n"), randBytes(2000+100*m)...))
		}
		if p == 2 {
			add("spider/data.bin", randBytes(3<<20+4096))
		}
	}
	return e
}

// set writes b as name's content, to change the export.
func (e *learnExport) set(t *testing.T, name string, b []byte) {
	writeFile(t, filepath.Join(e.dir, name), b, 0o644)
	e.files[name] = b
}

// read reads every file through the mount at mnt, in order, and checks
// its bytes.
func (e *learnExport) read(t *testing.T, mnt string) {
	t.Helper()
	for _, name := range e.names {
		b, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(b, e.files[name]) {
			t.Fatalf("%s: %d bytes, %v; want its %d bytes", name, len(b), err, len(e.files[name]))
		}
	}
}

// chunks returns the digests of the chunks of the files, in order.
func (e *learnExport) chunks(t *testing.T) []object.Digest {
	var ds []object.Digest
	for _, name := range e.names {
		ds = append(ds, e.fileChunks(t, name)...)
	}
	return ds
}

// fileChunks returns the digests of the chunks of file name.
func (e *learnExport) fileChunks(t *testing.T, name string) []object.Digest {
	var ds []object.Digest
	b := e.files[name]
	for off := 0; off < len(b); off += object.ChunkSize {
		enc, err := object.EncodeBlob(b[off:min(off+object.ChunkSize, len(b))])
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, object.Sum(enc))
	}
	return ds
}

// learnMaster serves dir and counts the fetches of one object the workers'
// readers make (readerFetches).
func learnMaster(t *testing.T, dir string) (*remotetest.Master, *atomic.Int64) {
	var gets atomic.Int64
	return remotetest.StartMaster(t, dir, remote.ServerConfig{ServerOptions: []grpc.ServerOption{readerFetches(&gets)}}), &gets
}

// openLearn mounts the master at addr with state, directory prefetch off
// (so that what comes ahead of the task is the trace's doing).
func openLearn(t *testing.T, addr, state string, off bool) *cowfs.Workspace {
	t.Helper()
	mnt := newMountpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: state,
		Lower: cowfs.Lower{Remote: &cowfs.Remote{Addr: addr, NoDirPrefetch: true, NoLearnedPrefetch: off, IOTimeout: 10 * time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// traceOf returns the path of the one trace kept under state, "" if none.
// recordTrace mounts the export on a fresh state, reads its files and
// unmounts, and returns that state and the path of the trace it kept.
func recordTrace(t *testing.T, addr string, e *learnExport) (state, path string) {
	t.Helper()
	state = t.TempDir()
	ws := openLearn(t, addr, state, false)
	e.read(t, ws.Dir())
	if err := ws.Close(); err != nil {
		t.Fatal(err)
	}
	if path = traceOf(t, state); path == "" {
		t.Fatal("no trace kept after a mount's task read its files")
	}
	return state, path
}

func traceOf(t *testing.T, state string) string {
	t.Helper()
	ents, err := os.ReadDir(statedir.TracesDir(state))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Fatalf("%d files in %s; want one trace", len(ents), statedir.TracesDir(state))
	}
	return filepath.Join(statedir.TracesDir(state), ents[0].Name())
}

// copyTrace puts the trace at from under state, where a mount of the same
// export finds it.
func copyTrace(t *testing.T, from, state string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(statedir.TracesDir(state), filepath.Base(from)), b, 0o600)
}

// A mount records what its task read, in order, at unmount; a later mount
// of the same export on a fresh worker fetches all of it in the
// background before its task asks, so that the task then asks the master
// for nothing.
func TestLearnedPrefetch(t *testing.T) {
	e := newLearnExport(t)
	ms, gets := learnMaster(t, e.dir)
	_, path := recordTrace(t, ms.Addr, e)
	tr, err := remote.ReadTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	at := map[object.Digest]int{}
	for i, en := range tr.Entries {
		at[en.Object] = i
	}
	// File by file in the order read (the kernel reads a file's
	// chunks ahead, not always in order).
	last := -1
	for _, name := range e.names {
		lo, hi := len(tr.Entries), -1
		for _, d := range e.fileChunks(t, name) {
			i, ok := at[d]
			if !ok {
				t.Fatalf("a chunk of %s, read, is not in the trace", name)
			}
			lo, hi = min(lo, i), max(hi, i)
		}
		if lo <= last {
			t.Fatalf("%s is entries %d to %d of the trace, the file read before it up to %d; want the order read", name, lo, hi, last)
		}
		last = hi
	}

	second := t.TempDir()
	copyTrace(t, path, second)
	ws := openLearn(t, ms.Addr, second, false)
	waitChunks(t, second, e.chunks(t), 30*time.Second, "a fresh worker with the trace", "the last task", "fetched ahead of its task")
	checkTraceStatus(t, ws, "worker")
	g0 := gets.Load()
	e.read(t, ws.Dir())
	if n := gets.Load() - g0; n != 0 {
		t.Errorf("the task of a mount that replayed its trace asked the master for %d objects one by one; want none", n)
	}
}

// A trace never changes what a read returns and never fails a mount: one
// damaged, one of other objects, and one of an older version of the
// export each leave the reads right; the mount then keeps a good trace.
func TestLearnedPrefetchBadTrace(t *testing.T) {
	e := newLearnExport(t)
	ms, _ := learnMaster(t, e.dir)
	_, good := recordTrace(t, ms.Addr, e)
	whole, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	wrong := &remote.Trace{Version: object.Sum([]byte("no such version"))}
	for i := range 300 {
		// Objects the master lacks, sizes that lie, then some it has.
		wrong.Entries = append(wrong.Entries, remote.TraceEntry{Object: object.Sum([]byte{byte(i), byte(i >> 8)}), Size: int64(i)})
	}
	for _, d := range e.chunks(t)[:5] {
		wrong.Entries = append(wrong.Entries, remote.TraceEntry{Object: d, Size: 1})
	}
	traces := map[string]func(path string){
		"damaged": func(path string) {
			b := bytes.Clone(whole)
			b[len(b)/2] ^= 0x55
			os.WriteFile(path, b, 0o600)
		},
		"cut short": func(path string) { os.WriteFile(path, whole[:len(whole)/3], 0o600) },
		"garbage":   func(path string) { os.WriteFile(path, randBytes(10000), 0o600) },
		"wrong": func(path string) {
			if err := remote.WriteTrace(path, wrong); err != nil {
				t.Fatal(err)
			}
		},
		"a directory": func(path string) { os.Mkdir(path, 0o700) },
	}
	for name, make := range traces {
		t.Run(name, func(t *testing.T) {
			state := t.TempDir()
			path := filepath.Join(statedir.TracesDir(state), filepath.Base(good))
			os.MkdirAll(filepath.Dir(path), 0o700)
			make(path)
			ws := openLearn(t, ms.Addr, state, false)
			e.read(t, ws.Dir())
			if err := ws.Close(); err != nil {
				t.Fatal(err)
			}
			if name == "a directory" {
				return // nothing can be kept there; the mount went on
			}
			if tr, err := remote.ReadTrace(path); err != nil || len(tr.Entries) < len(e.chunks(t)) {
				t.Errorf("after a mount over a %s trace: %v; want the mount's own, good trace kept", name, err)
			}
		})
	}

	// An older version's trace: the files changed since; the reads see
	// the new bytes.
	for _, name := range e.names[:3] {
		e.set(t, name, append([]byte("changed "+name+"\n"), randBytes(3000)...))
	}
	e.set(t, "spider/data.bin", randBytes(2<<20+100))
	state := t.TempDir()
	copyTrace(t, good, state)
	ws := openLearn(t, ms.Addr, state, false)
	e.read(t, ws.Dir())
}

// --no-learned-prefetch (Remote.NoLearnedPrefetch): a trace kept is not
// replayed, and the mount keeps none of its own.
func TestLearnedPrefetchOff(t *testing.T) {
	e := newLearnExport(t)
	ms, gets := learnMaster(t, e.dir)
	_, good := recordTrace(t, ms.Addr, e)

	state := t.TempDir()
	copyTrace(t, good, state)
	before, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	ws := openLearn(t, ms.Addr, state, true)
	g0 := gets.Load()
	e.read(t, ws.Dir())
	// The small files' chunks and file objects, one by one (read-ahead
	// batches the data file's).
	if n := gets.Load() - g0; n < int64(len(e.names)) {
		t.Errorf("with the trace off, reading %d files asked for %d objects one by one; want each fetched as read", len(e.names), n)
	}
	if err := ws.Close(); err != nil {
		t.Fatal(err)
	}
	if after, err := os.ReadFile(traceOf(t, state)); err != nil || !bytes.Equal(after, before) {
		t.Errorf("a mount with the trace off changed the trace kept (%v)", err)
	}

	state = t.TempDir()
	ws = openLearn(t, ms.Addr, state, true)
	e.read(t, ws.Dir())
	ws.Close()
	if p := traceOf(t, state); p != "" {
		t.Errorf("a mount with the trace off kept a trace, %s", p)
	}
}

// A worker with no trace of its own starts from the one another worker's
// mount gave the master at unmount (decision 0070): all of it is fetched
// before its task asks, which then asks the master for nothing one by
// one. With the trace off, a fresh worker neither takes the master's
// trace nor gives one.
func TestLearnedPrefetchFromMaster(t *testing.T) {
	e := newLearnExport(t)
	ms, gets := learnMaster(t, e.dir)
	_, path := recordTrace(t, ms.Addr, e)
	local, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kept := filepath.Join(ms.Config.Traces, remote.TraceKey("", ""))
	if b, err := os.ReadFile(kept); err != nil || !bytes.Equal(b, local) {
		t.Fatalf("the master's trace after a worker's unmount: %d bytes, %v; want the worker's, %d bytes", len(b), err, len(local))
	}

	fresh := t.TempDir()
	ws := openLearn(t, ms.Addr, fresh, false)
	waitChunks(t, fresh, e.chunks(t), 30*time.Second, "a fresh worker", "another worker's task", "fetched by the master's trace")
	checkTraceStatus(t, ws, "master")
	g0 := gets.Load()
	e.read(t, ws.Dir())
	if n := gets.Load() - g0; n != 0 {
		t.Errorf("the task of a mount that replayed the master's trace asked the master for %d objects one by one; want none", n)
	}
	if err := ws.Close(); err != nil {
		t.Fatal(err)
	}

	st0, err := os.Stat(kept)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(kept)
	off := openLearn(t, ms.Addr, t.TempDir(), true)
	g0 = gets.Load()
	e.read(t, off.Dir())
	if n := gets.Load() - g0; n < int64(len(e.names)) {
		t.Errorf("with the trace off, a fresh worker reading %d files asked for %d objects one by one; want each fetched as read, none ahead", len(e.names), n)
	}
	if tr := off.Status().Remote.Trace; tr != nil {
		t.Errorf("status of a mount with the trace off: trace %+v; want none", *tr)
	}
	if err := off.Close(); err != nil {
		t.Fatal(err)
	}
	st1, err := os.Stat(kept)
	after, _ := os.ReadFile(kept)
	if err != nil || !os.SameFile(st0, st1) || !bytes.Equal(before, after) {
		t.Errorf("a mount with the trace off changed the master's trace (%v)", err)
	}
}

// checkTraceStatus checks that ws's status says it replays a trace from
// source that fetched objects without a failed batch.
func checkTraceStatus(t *testing.T, ws *cowfs.Workspace, source string) {
	t.Helper()
	tr := ws.Status().Remote.Trace
	if tr == nil || tr.Source != source || tr.Objects == 0 || tr.Fetched == 0 || tr.Fetched > tr.Objects || tr.Errors != 0 {
		t.Errorf("status of a mount replaying a trace: %+v; want one from the %s, objects fetched, no errors", tr, source)
	}
}

// A bucket keeps traces as a master does (decision 0070): a fresh
// worker's mount of a bucket replays the one another worker's mount put
// at unmount, and its task then asks the bucket for nothing.
func TestLearnedPrefetchFromBucket(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	url := "s3://" + srv.Bucket(t) + "/spiders"
	e := newLearnExport(t)
	publishTo(t, srv, url, e.dir)
	open := func(state string) *cowfs.Workspace {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: newMountpoint(t), State: state,
			Lower: cowfs.Lower{Remote: &cowfs.Remote{Addr: url, S3Endpoint: srv.Endpoint, NoDirPrefetch: true, IOTimeout: 30 * time.Second}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		return ws
	}
	first := open(t.TempDir())
	e.read(t, first.Dir())
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	fresh := t.TempDir()
	ws := open(fresh)
	waitChunks(t, fresh, e.chunks(t), 60*time.Second, "a fresh worker of the bucket", "another worker's task", "fetched by the bucket's trace")
	checkTraceStatus(t, ws, "bucket")
	g0 := ws.Status().Remote.Bucket.Gets
	e.read(t, ws.Dir())
	if n := ws.Status().Remote.Bucket.Gets - g0; n != 0 {
		t.Errorf("the task of a mount that replayed the bucket's trace made %d GETs; want none", n)
	}
}

// waitChunks waits up to d for the store of state to hold every chunk of
// want, fetched in the background; who holds them, whose task read
// them, and why they should all be there say what failed.
func waitChunks(t *testing.T, state string, want []object.Digest, d time.Duration, who, whose, why string) {
	t.Helper()
	store, err := object.OpenDirStore(statedir.ObjectsDir(state))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		n := 0
		for _, c := range want {
			if ok, _ := store.Has(context.Background(), c); ok {
				n++
			}
		}
		if n == len(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d of the %d chunks %s read %v after mounting; want all, %s", who, n, len(want), whose, d, why)
		}
	}
}
