package remote_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// callCounter counts a master's streaming calls by method (Get, GetMany),
// and holds GetMany calls while hold is set.
type callCounter struct {
	get, getMany atomic.Int64
	mu           sync.Mutex
	hold         chan struct{} // nil: none held
}

func (c *callCounter) option() grpc.ServerOption {
	return grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		switch {
		case strings.HasSuffix(info.FullMethod, "/GetMany"):
			c.getMany.Add(1)
			c.mu.Lock()
			hold := c.hold
			c.mu.Unlock()
			if hold != nil {
				select {
				case <-hold:
				case <-ss.Context().Done():
					return ss.Context().Err()
				}
			}
		case strings.HasSuffix(info.FullMethod, "/Get"):
			c.get.Add(1)
		}
		return h(srv, ss)
	})
}

// smallFiles writes n files of a few KiB, each its own bytes, in dir
// beneath root, and returns their contents by name.
func smallFiles(t *testing.T, root, dir string, n int) map[string][]byte {
	files := map[string][]byte{}
	for i := range n {
		b := append([]byte(fmt.Sprintf("%s file %d\n", dir, i)), remotetest.RandBytes(1000+i*7)...)
		name := fmt.Sprintf("f%04d.py", i)
		remotetest.WriteFile(t, filepath.Join(root, dir, name), b, 0o644)
		files[name] = b
	}
	return files
}

// servedSmallFiles writes n small files in dir of a fresh export, serves
// it, and returns the files, the master, a fresh worker and its view of
// the export.
func servedSmallFiles(t *testing.T, dir string, n int) (map[string][]byte, *remotetest.Master, *remotetest.Worker, *remotetest.View) {
	t.Helper()
	exp := t.TempDir()
	files := smallFiles(t, exp, dir, n)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	return files, ms, w, w.View(ms.Addr, remotetest.ViewOptions{})
}

// held reports whether the store holds every file object and chunk of
// the files of dir.
func held(t *testing.T, v *remotetest.View, dir string, names map[string][]byte) bool {
	for name := range names {
		f, _, err := v.Lower.FileObjectFrom(v.Store, dir+"/"+name)
		if err != nil {
			return false
		}
		for _, d := range f.Chunks {
			if ok, _ := v.Store.Has(context.Background(), d); !ok {
				return false
			}
		}
	}
	return true
}

// listAndCrawl lists dir and reads two of its files: what starts the
// background fetch of its files. It returns the names it read.
func listAndCrawl(t *testing.T, v *remotetest.View, dir string, files map[string][]byte) map[string]bool {
	t.Helper()
	if _, err := v.Lower.ReadDir(dir); err != nil {
		t.Fatal(err)
	}
	read := map[string]bool{}
	for name, want := range files {
		b, err := readAll(t, v.Lower, dir+"/"+name, 30*time.Second)
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: %d bytes, %v; want its %d bytes", name, len(b), err, len(want))
		}
		if read[name] = true; len(read) == 2 {
			break
		}
	}
	return read
}

func waitHeld(t *testing.T, v *remotetest.View, dir string, names map[string][]byte) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !held(t, v, dir, names) {
		if time.Now().After(deadline) {
			t.Fatalf("the files of %s were not fetched in the background within 30 s (%+v)", dir, v.Cache.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Listing a directory of small files and reading two of them fetches
// their file objects in the background, each with its chunk, in a few
// batched calls: the crawl that opens them finds them cached, where it
// made two calls a file before.
func TestDirPrefetchBatches(t *testing.T) {
	const n = 200
	exp := t.TempDir()
	files := smallFiles(t, exp, "spider", n)
	var cc callCounter
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{ServerOptions: []grpc.ServerOption{cc.option()}})
	v := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{})
	v.Cache.SetDirPrefetch(true)
	get0, many0 := cc.get.Load(), cc.getMany.Load()

	listAndCrawl(t, v, "spider", files)
	waitHeld(t, v, "spider", files)
	for name, want := range files {
		b, err := readAll(t, v.Lower, "spider/"+name, 30*time.Second)
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: %d bytes, %v; want its %d bytes", name, len(b), err, len(want))
		}
	}
	gets, manys := cc.get.Load()-get0, cc.getMany.Load()-many0
	again := remote.DirFetchedAgain(v.Cache)
	t.Logf("listing and reading %d files: %d Get and %d GetMany calls, %d second tries", n, gets, manys, again)
	// The first two files read make a call each, their file object and
	// chunk; the other file objects come in batches of 64, each small
	// file's chunk right after its file object in the same call. The
	// second reader races the batches for one object (one more call),
	// and a batch that finds an object's lock stripe held by that reader
	// asks for it again after a pause (one more call each time).
	if gets+manys > 2+(n+63)/64+1+again {
		t.Errorf("listing and reading %d small files made %d Get and %d GetMany calls (%d second tries); want them in a few batches", n, gets, manys, again)
	}
	if st := v.Cache.Stats(); st.DirPrefetchErrors != 0 {
		t.Errorf("%d background errors", st.DirPrefetchErrors)
	}
}

// A directory whose files a worker fetched before is noted by no later
// mount that looks into it: a warm walk has nothing to fetch ahead.
func TestDirPrefetchWarmNotesNothing(t *testing.T) {
	files, ms, w, v := servedSmallFiles(t, "spider", 50)
	v.Cache.SetDirPrefetch(true)
	if _, err := v.Lower.ReadDir("spider"); err != nil {
		t.Fatal(err)
	}
	if n := remote.DirWaiting(v.Cache); n != len(files) {
		t.Fatalf("a cold listing noted %d file objects, want %d", n, len(files))
	}
	listAndCrawl(t, v, "spider", files)
	waitHeld(t, v, "spider", files)

	warm := w.View(ms.Addr, remotetest.ViewOptions{})
	warm.Cache.SetDirPrefetch(true)
	if _, err := warm.Lower.ReadDir("spider"); err != nil {
		t.Fatal(err)
	}
	if n := remote.DirWaiting(warm.Cache); n != 0 {
		t.Errorf("a warm listing noted %d file objects, want none", n)
	}
	for name, want := range files {
		b, err := readAll(t, warm.Lower, "spider/"+name, 30*time.Second)
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: %d bytes, %v; want its %d bytes", name, len(b), err, len(want))
		}
	}
	if st := warm.Cache.Stats(); st.Misses != 0 {
		t.Errorf("the warm crawl missed the cache %d times", st.Misses)
	}
}

// Without dir prefetch (a cache's default, a mount's --dir-prefetch=false)
// listing a directory fetches nothing but its tree.
func TestDirPrefetchOff(t *testing.T) {
	exp := t.TempDir()
	smallFiles(t, exp, "spider", 20)
	var cc callCounter
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{ServerOptions: []grpc.ServerOption{cc.option()}})
	v := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{})
	many0 := cc.getMany.Load() // the version's root, and the trees that come with it
	if _, err := v.Lower.ReadDir("spider"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := cc.getMany.Load() - many0; n != 0 {
		t.Errorf("listing with dir prefetch off made %d GetMany calls", n)
	}
}

// A crawl reading the files while they are fetched in the background gets
// their bytes, and the master sends each object once: a read of an object
// under way waits for that fetch instead of asking again.
func TestDirPrefetchReadDuring(t *testing.T) {
	const n = 300
	files, ms, _, v := servedSmallFiles(t, "spider", n)
	v.Cache.SetDirPrefetch(true)
	ents, err := v.Lower.ReadDir("spider")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(ents); i += 4 {
				name := ents[i].Name
				b, err := readAll(t, v.Lower, "spider/"+name, 30*time.Second)
				if err != nil || !bytes.Equal(b, files[name]) {
					errs <- fmt.Errorf("%s: %d bytes, %v; want its %d bytes", name, len(b), err, len(files[name]))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for name := range files {
		// A file object that came with its first chunk is stored once
		// the chunk is (getFollowing), in the background: its reader
		// may be done before.
		var f *object.File
		deadline := time.Now().Add(30 * time.Second)
		for {
			if f, _, err = v.Lower.FileObjectFrom(v.Store, "spider/"+name); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		e, _ := v.Lower.Entry("spider/" + name)
		for _, d := range append([]object.Digest{e.Object}, f.Chunks...) {
			if g := ms.Server.Gets(d); g != 1 {
				t.Errorf("%s: object %s sent %d times; want once", name, d.Short(), g)
			}
		}
	}
}

// The master gone while a directory is fetched in the background: files
// fetched before read on, the others fail within the read timeout.
func TestDirPrefetchMasterGone(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out --io-timeout with the master down; the full suite runs it")
	}
	exp := t.TempDir()
	a := smallFiles(t, exp, "a", 20)
	b := smallFiles(t, exp, "b", 20)
	var cc callCounter
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{ServerOptions: []grpc.ServerOption{cc.option()}})
	const timeout = 5 * time.Second
	v := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{Timeout: timeout})
	v.Cache.SetDirPrefetch(true)
	listAndCrawl(t, v, "a", a)
	waitHeld(t, v, "a", a)
	// b's background fetch is held on the master, which then goes.
	hold := make(chan struct{})
	cc.mu.Lock()
	cc.hold = hold
	cc.mu.Unlock()
	many := cc.getMany.Load()
	// The second read of b starts the background fetch, which may take
	// in that read's own chunk: the read then waits for the held call,
	// and ends with it. So the crawl runs aside, and a read that failed
	// counts as not read.
	crawled := make(chan map[string]bool, 1)
	go func() {
		read := map[string]bool{}
		if _, err := v.Lower.ReadDir("b"); err == nil {
			for name, want := range b {
				got, err := readLower(v.Lower, "b/"+name)
				read[name] = err == nil && bytes.Equal(got, want)
				if len(read) == 2 {
					break
				}
			}
		}
		crawled <- read
	}()
	if err := remotetest.Within(t, 30*time.Second, "the background fetch of b", func() error {
		for cc.getMany.Load() == many {
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ms.Stop()
	close(hold)
	var readB map[string]bool
	select {
	case readB = <-crawled:
	case <-time.After(30 * time.Second):
		t.Fatal("the crawl of b did not end within 30 s of the master's going")
	}
	for name, want := range a {
		got, err := readAll(t, v.Lower, "a/"+name, 30*time.Second)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("a/%s with the master gone: %d bytes, %v; want its %d bytes", name, len(got), err, len(want))
		}
	}
	for name := range b {
		if readB[name] {
			continue
		}
		// Slack for a loaded machine, short of the 2x a second wait
		// would take.
		bound := timeout*3/2 + time.Second
		start := time.Now()
		_, err := readAll(t, v.Lower, "b/"+name, bound)
		took := time.Since(start)
		if !errors.Is(err, remote.ErrUnavailable) {
			t.Fatalf("b/%s with the master gone: %v; want ErrUnavailable", name, err)
		}
		if took > bound {
			t.Fatalf("b/%s failed after %v; want within the %v timeout", name, took, timeout)
		}
		break
	}
}

// A task that reads one file of a directory pays for nothing else: the
// directory's files are fetched once a second one is read.
func TestDirPrefetchOneFile(t *testing.T) {
	files, _, _, v := servedSmallFiles(t, "spider", 50)
	v.Cache.SetDirPrefetch(true)
	if _, err := v.Lower.ReadDir("spider"); err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(t, v.Lower, "spider/f0000.py", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	n := 0
	for name := range files {
		e, _ := v.Lower.Entry("spider/" + name)
		if ok, _ := v.Store.Has(context.Background(), e.Object); ok {
			n++
		}
	}
	if n != 1 {
		t.Errorf("reading one of 50 files fetched %d file objects; want its own", n)
	}
}

// TestDirPrefetchStripeBusy: an object whose lock stripe another process
// holds, fetching an object that shares the stripe, is fetched in the
// background once the stripe is free; left to its reader, it was never
// fetched at all when that fetch was not its own.
func TestDirPrefetchStripeBusy(t *testing.T) {
	files, _, _, v := servedSmallFiles(t, "spider", 20)
	var chunks []object.Digest
	for name := range files {
		// Through the cache: the tree and the file object, no chunk.
		f, _, err := v.Lower.FileObjectFrom(v.Cache, "spider/"+name)
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, f.Chunks...)
	}
	// Another object in the first chunk's stripe, fetched meanwhile by
	// another mount process on the same store.
	other := chunks[0]
	other[31] ^= 1
	c2, err := remote.NewCache(v.Store, &memFetcher{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c2.Close)
	release := remote.HoldLock(c2, other)
	released := make(chan struct{})
	go func() {
		time.Sleep(100 * time.Millisecond)
		release()
		close(released)
	}()
	done := make(chan bool, 1)
	go func() { done <- remote.FetchBackground(v.Cache, chunks) }()
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("background fetch failed")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("background fetch still running after 30 s")
	}
	<-released
	for i, d := range chunks {
		if ok, _ := v.Store.Has(context.Background(), d); !ok {
			t.Errorf("chunk %d (%s) not fetched", i, d.Short())
		}
	}
}

// A crawl's directory fetches keep one directory ahead of it: reading two
// files of the first directory listed fetches the next one's files too,
// and the first read there the one after; a directory two ahead is not
// fetched.
func TestDirPrefetchAhead(t *testing.T) {
	exp := t.TempDir()
	dirs := []string{"a", "b", "c", "d"}
	files := map[string]map[string][]byte{}
	for _, dir := range dirs {
		files[dir] = smallFiles(t, exp, dir, 20)
	}
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	v := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{})
	v.Cache.SetDirPrefetch(true)
	for _, dir := range dirs {
		if _, err := v.Lower.ReadDir(dir); err != nil {
			t.Fatal(err)
		}
	}
	listAndCrawl(t, v, "a", files["a"])
	waitHeld(t, v, "a", files["a"])
	waitHeld(t, v, "b", files["b"])
	if held(t, v, "c", files["c"]) {
		t.Fatal("c, two directories ahead of the crawl, was fetched")
	}
	for name, want := range files["b"] {
		b, err := readAll(t, v.Lower, "b/"+name, 30*time.Second)
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("b/%s: %d bytes, %v; want its %d bytes", name, len(b), err, len(want))
		}
		break
	}
	waitHeld(t, v, "c", files["c"])
	if held(t, v, "d", files["d"]) {
		t.Fatal("d, two directories ahead of the crawl, was fetched")
	}
}
