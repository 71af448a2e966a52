package cowfs_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/pb"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// remoteMount is a live mount of a version of an export.
type remoteMount struct {
	dir     string
	m       *fs.Mount
	cache   *remote.Cache
	client  *remote.Client
	store   *object.DirStore
	refs    *refs.Dir
	root    object.Entry
	version object.Digest
}

// push sends snapshot name to the master, as cowfs.Workspace.Push does.
func (rm *remoteMount) push(ctx context.Context, name string) (int, error) {
	snap, err := rm.refs.Get(name)
	if err != nil {
		return 0, err
	}
	return rm.client.Push(ctx, rm.store, snap)
}

// mountRemote opens the export's current version (or o.Version) on w
// and mounts it, as cowfs.Open does for a remote lower but with the
// test's own client and cache; the unmount (under a deadline) and the
// pin's release are registered for cleanup.
func mountRemote(w *remotetest.Worker, addr string, o remotetest.ViewOptions) *remoteMount {
	w.T.Helper()
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	vw := w.View(addr, o)
	dir := filepath.Join(w.T.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		w.T.Fatal(err)
	}
	rd, err := refs.Open(statedir.RefsDir(w.State))
	if err != nil {
		w.T.Fatal(err)
	}
	// As cowfs.Open does: the version stays in the store while mounted.
	pinKey := statedir.RemotePinKey(dir)
	if err := rd.PinWhileAlive(pinKey, vw.Version); err != nil {
		w.T.Fatal(err)
	}
	w.T.Cleanup(func() { rd.UnpinMine(pinKey) })
	upper, work := statedir.MountDirs(w.State, dir)
	m, err := fs.New(dir, fs.Options{Lower: vw.Lower, Upper: upper, Work: work, Store: vw.Store, Refs: rd,
		Fetch: vw.Cache, IOTimeout: o.Timeout, Logger: o.Log})
	if err != nil {
		w.T.Fatalf("mount: %v", err)
	}
	rm := &remoteMount{dir: dir, m: m, cache: vw.Cache, client: vw.Client, store: vw.Store, refs: rd, root: vw.Root, version: vw.Version}
	w.T.Cleanup(func() { unmountT(w.T, dir, m) })
	return rm
}

func unmountT(t testing.TB, dir string, m *fs.Mount) {
	done := make(chan error, 1)
	go func() { done <- m.Unmount() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	case <-time.After(30 * time.Second):
		unix.Unmount(dir, unix.MNT_DETACH)
		t.Errorf("unmount %s: timed out; detached", dir)
	}
}

// The helpers remote's and the root package's tests share.
var (
	within    = remotetest.Within
	writeFile = remotetest.WriteFile
	randBytes = remotetest.RandBytes
)

func sha(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// warmSha is sha of a file read through a remote mount while its master
// is up, for a test that gives the mount a short --io-timeout for what
// it does once the master is gone: on a loaded machine, under -race, a
// fetch can take longer than that timeout with the master up, so a read
// that fails is tried again, for up to two minutes.
func warmSha(t testing.TB, path string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			h := sha256.Sum256(b)
			return hex.EncodeToString(h[:])
		}
		if time.Now().After(deadline) {
			t.Fatalf("read %s with the master up: %v", path, err)
		}
	}
}

// blobGets sums, over every blob in m's store, how often it was sent, and
// returns the most any one blob was sent.
func blobGets(t testing.TB, m *remotetest.Master) (total, most int64) {
	store, err := object.OpenDirStore(m.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	store.Each(func(o object.StoredObject) error {
		if k, _ := store.Kind(o.Digest); k == object.KindBlob {
			n := m.Server.Gets(o.Digest)
			total += n
			most = max(most, n)
		}
		return nil
	})
	return total, most
}

// proxy is a real gRPC server in front of a master that can damage what it
// forwards: what a worker must survive on the wire.
type proxy struct {
	pb.UnimplementedExportServer
	up      pb.ExportClient
	addr    string
	mu      sync.Mutex
	damaged map[object.Digest]bool
	// lie, when set, makes every piece forwarded claim a negative
	// size, intact otherwise: a master broken in its framing, not its
	// bytes.
	lie atomic.Bool
}

func startProxy(t testing.TB, upstream string) *proxy {
	t.Helper()
	c, err := remote.Dial(remote.ClientConfig{Addr: upstream})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := &proxy{up: remote.ExportClientOf(c), damaged: map[object.Digest]bool{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = l.Addr().String()
	s := grpc.NewServer()
	pb.RegisterExportServer(s, p)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return p
}

func (p *proxy) Resolve(ctx context.Context, r *pb.ResolveRequest) (*pb.ResolveResponse, error) {
	return p.up.Resolve(ctx, r)
}

func (p *proxy) Has(ctx context.Context, r *pb.HasRequest) (*pb.HasResponse, error) {
	return p.up.Has(ctx, r)
}

// GetMany flips a bit of every object the first time it passes.
func (p *proxy) GetMany(r *pb.GetManyRequest, s pb.Export_GetManyServer) error {
	st, err := p.up.GetMany(s.Context(), r)
	if err != nil {
		return err
	}
	var d, followed object.Digest
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// A chunk sent along with a file object names itself on its
		// first piece; its other pieces follow it.
		switch {
		case len(m.GetDigest()) > 0:
			copy(followed[:], m.GetDigest())
			d = followed
		case int(m.GetIndex()) < len(r.GetDigests()):
			copy(d[:], r.GetDigests()[m.GetIndex()])
		default:
			d = followed
		}
		if p.lie.Load() {
			m.Size = -1
		} else {
			p.mu.Lock()
			damage := !p.damaged[d] && len(m.Data) > 0
			p.damaged[d] = true
			p.mu.Unlock()
			if damage {
				m.Data[len(m.Data)/2] ^= 0x40
			}
		}
		if err := s.Send(m); err != nil {
			return err
		}
	}
}

// Get flips a bit of every object the first time it passes.
func (p *proxy) Get(r *pb.GetRequest, s pb.Export_GetServer) error {
	st, err := p.up.Get(s.Context(), r)
	if err != nil {
		return err
	}
	var d object.Digest
	copy(d[:], r.GetDigest())
	p.mu.Lock()
	damage := !p.damaged[d]
	p.damaged[d] = true
	p.mu.Unlock()
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if p.lie.Load() {
			m.Size = -1
		} else if damage && len(m.Data) > 0 {
			m.Data[len(m.Data)/2] ^= 0x40
			damage = false
		}
		if err := s.Send(m); err != nil {
			return err
		}
	}
}

func runWithin(t *testing.T, cmd *exec.Cmd) ([]byte, error) {
	var out []byte
	err := within(t, 20*time.Second, "run "+cmd.Path, func() error {
		var err error
		out, err = cmd.Output()
		return err
	})
	return out, err
}

func storeSize(t *testing.T, state string) int64 {
	store, err := object.OpenDirStore(filepath.Join(state, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	store.Each(func(o object.StoredObject) error { n += o.Size; return nil })
	return n
}

func dropCaches(t *testing.T, dir string) {
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if f, err := os.Open(p); err == nil {
				unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
				f.Close()
			}
		}
		return nil
	})
}

// newMountpoint makes an empty directory to mount on, removed on cleanup.
func newMountpoint(t testing.TB) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	return mnt
}

// sumsOfEach reads every file beneath each of dirs, all at once, and
// returns their checksums (sums) by dir.
func sumsOfEach(t *testing.T, dirs []string) []map[string]string {
	t.Helper()
	var wg sync.WaitGroup
	got := make([]map[string]string, len(dirs))
	for i, dir := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = sums(t, dir)
		}()
	}
	wg.Wait()
	return got
}

// readerFetches counts in n the fetches a reader makes for itself, one
// object each: a Get, or the GetMany of an open, which asks for the file's
// first chunk along (follow). Batches (read-ahead, prefetch) are not
// counted.
func readerFetches(n *atomic.Int64) grpc.ServerOption {
	return grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		switch {
		case strings.HasSuffix(info.FullMethod, "/Get"):
			n.Add(1)
		case strings.HasSuffix(info.FullMethod, "/GetMany"):
			ss = followCounter{ss, n}
		}
		return h(srv, ss)
	})
}

type followCounter struct {
	grpc.ServerStream
	n *atomic.Int64
}

func (s followCounter) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if r, ok := m.(*pb.GetManyRequest); ok && err == nil && r.GetFollow() > 0 {
		s.n.Add(1)
	}
	return err
}

// agePacks dates every pack of the object store in dir an hour back. A
// packed object's age is its pack's last write (decisions 0056, 0068),
// and a master writes a new version into the pack that holds the old
// one: without this, gc with no grace right after finds every object in
// that pack too young to remove, whether or not anything reaches it.
func agePacks(t *testing.T, dir string) {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	hourAgo := time.Now().Add(-time.Hour)
	for _, p := range packs {
		if err := os.Chtimes(p, hourAgo, hourAgo); err != nil {
			t.Fatal(err)
		}
	}
}
