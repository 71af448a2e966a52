package cowfs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
)

// master is a real server on loopback that a test can stop and start again
// on the same address.
type master struct {
	t    testing.TB
	cfg  remote.ServerConfig
	addr string
	srv  *remote.Server
}

func startMaster(t testing.TB, root string, cfg remote.ServerConfig) *master {
	t.Helper()
	state := t.TempDir()
	cfg.Root = root
	cfg.Objects, cfg.Refs = filepath.Join(state, "objects"), filepath.Join(state, "refs")
	m := &master{t: t, cfg: cfg}
	m.start("127.0.0.1:0")
	t.Cleanup(m.stop)
	return m
}

func (m *master) start(addr string) {
	m.t.Helper()
	srv, err := remote.NewServer(m.cfg)
	if err != nil {
		m.t.Fatal(err)
	}
	var l net.Listener
	for i := 0; ; i++ {
		if l, err = net.Listen("tcp", addr); err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond) // the old listener's port
	}
	if err != nil {
		m.t.Fatal(err)
	}
	m.addr, m.srv = l.Addr().String(), srv
	go srv.Serve(l)
}

func (m *master) stop() {
	if m.srv != nil {
		m.srv.Stop()
		m.srv = nil
	}
}

func (m *master) restart() {
	m.stop()
	m.start(m.addr)
}

// worker is one machine's state directory: its object store is the cache
// every mount of the worker shares.
type worker struct {
	t     testing.TB
	state string
}

func newWorker(t testing.TB) *worker { return &worker{t: t, state: t.TempDir()} }

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

type mountOpts struct {
	path    string
	token   string
	caFile  string
	timeout time.Duration
	version object.Digest // mount this version instead of resolving
	log     *slog.Logger  // the mount's and its cache's; nil: slog.Default()
}

// mount resolves the export's current version and mounts it, with an
// unmount (under a deadline) registered for cleanup.
func (w *worker) mount(addr string, o mountOpts) *remoteMount {
	w.t.Helper()
	if o.timeout == 0 {
		o.timeout = 10 * time.Second
	}
	client, err := remote.Dial(remote.ClientConfig{Addr: addr, Token: o.token, CAFile: o.caFile,
		CallTimeout: o.timeout, Timeout: o.timeout})
	if err != nil {
		w.t.Fatal(err)
	}
	store, err := object.OpenDirStore(statedir.ObjectsDir(w.state))
	if err != nil {
		w.t.Fatal(err)
	}
	cache, err := remote.NewCache(store, client, o.log)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { cache.Close(); client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v := o.version
	if v.IsZero() {
		if v, err = client.Resolve(ctx, o.path); err != nil {
			w.t.Fatalf("resolve: %v", err)
		}
	}
	lower, root, err := remote.OpenVersion(ctx, cache, v)
	if err != nil {
		w.t.Fatalf("open version: %v", err)
	}
	dir := filepath.Join(w.t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		w.t.Fatal(err)
	}
	rd, err := refs.Open(statedir.RefsDir(w.state))
	if err != nil {
		w.t.Fatal(err)
	}
	// As cowfs.Open does: the version stays in the store while mounted.
	pinKey := statedir.RemotePinKey(dir)
	if err := rd.PinWhileAlive(pinKey, v); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { rd.UnpinMine(pinKey) })
	upper, work := statedir.MountDirs(w.state, dir)
	m, err := fs.New(dir, fs.Options{Lower: lower, Upper: upper, Work: work, Store: store, Refs: rd,
		Fetch: cache, IOTimeout: o.timeout, Logger: o.log})
	if err != nil {
		w.t.Fatalf("mount: %v", err)
	}
	rm := &remoteMount{dir: dir, m: m, cache: cache, client: client, store: store, refs: rd, root: root, version: v}
	w.t.Cleanup(func() { unmountT(w.t, dir, m) })
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

// within runs fn with a deadline, so that a hung read fails the test
// instead of hanging it.
func within(t testing.TB, d time.Duration, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s: still blocked after %v", what, d)
		return nil
	}
}

func writeFile(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

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

// blobGets sums, over every blob in the master's store, how often it was
// sent, and returns the most any one blob was sent.
func (m *master) blobGets(t testing.TB) (total, most int64) {
	store, err := object.OpenDirStore(m.cfg.Objects)
	if err != nil {
		t.Fatal(err)
	}
	store.Each(func(o object.StoredObject) error {
		if k, _ := store.Kind(o.Digest); k == object.KindBlob {
			n := m.srv.Gets(o.Digest)
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
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var d object.Digest
		copy(d[:], r.GetDigests()[m.GetIndex()])
		p.mu.Lock()
		damage := !p.damaged[d] && len(m.Data) > 0
		p.damaged[d] = true
		p.mu.Unlock()
		if damage {
			m.Data[len(m.Data)/2] ^= 0x40
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
		if damage && len(m.Data) > 0 {
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

// logBuffer is a master's log, read by the test while the master writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the lines that contain s.
func (l *logBuffer) lines(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
