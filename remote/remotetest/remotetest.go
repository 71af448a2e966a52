// Package remotetest starts real masters and workers for tests, in the
// style of net/http/httptest: a master on loopback that can stop and start
// again on the same address, a worker's state directory and the version of
// an export it reads through its cache, and a log a test reads while it is
// written. Everything it starts is stopped or closed on the test's cleanup.
package remotetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
)

// Master is a real master (cowfs serve) on loopback.
type Master struct {
	t testing.TB
	// Config is the master's configuration; Start uses it as it is then.
	Config remote.ServerConfig
	// Addr is where it listens, the same after a Restart.
	Addr string
	// Server is the running server; nil while stopped.
	Server *remote.Server
}

// StartMaster starts a master exporting root, with a fresh state
// directory of its own, on a free loopback port, and stops it on cleanup.
func StartMaster(t testing.TB, root string, cfg remote.ServerConfig) *Master {
	t.Helper()
	state := t.TempDir()
	cfg.Root = root
	cfg.Objects, cfg.Refs = filepath.Join(state, "objects"), filepath.Join(state, "refs")
	cfg.Traces = filepath.Join(state, "traces")
	cfg.CountGets = true // the tests' checks of one fetch per object
	m := &Master{t: t, Config: cfg}
	m.Start("127.0.0.1:0")
	t.Cleanup(m.Stop)
	return m
}

// Start starts a server with m.Config listening on addr, waiting up to
// five seconds for the port an earlier server left.
func (m *Master) Start(addr string) {
	m.t.Helper()
	srv, err := remote.NewServer(m.Config)
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
	m.Addr, m.Server = l.Addr().String(), srv
	go srv.Serve(l)
}

// Stop stops the server, if it runs.
func (m *Master) Stop() {
	if m.Server != nil {
		m.Server.Stop()
		m.Server = nil
	}
}

// Restart stops the server and starts a new one on the same address.
func (m *Master) Restart() {
	m.Stop()
	m.Start(m.Addr)
}

// Worker is one machine's state directory: its object store is the
// cache every mount of the worker shares.
type Worker struct {
	T     testing.TB
	State string
}

// NewWorker returns a worker with a fresh state directory.
func NewWorker(t testing.TB) *Worker { return &Worker{T: t, State: t.TempDir()} }

// ViewOptions say how a worker reads a master.
type ViewOptions struct {
	// Path is the subtree of the export; "" all of it.
	Path          string
	Token, CAFile string
	// Timeout is the client's call and read timeout; 0: 10 s.
	Timeout time.Duration
	// Version is opened instead of the export's current version.
	Version object.Digest
	// Log is the client's and the cache's; nil: slog.Default().
	Log *slog.Logger
}

// View is what a worker's mount reads through: a version of the export,
// through a cache over the worker's store.
type View struct {
	Client  *remote.Client
	Store   *object.DirStore
	Cache   *remote.Cache
	Lower   *lower.Objects
	Root    object.Entry
	Version object.Digest
}

// View dials the master at addr, opens the worker's store as the
// client's cache, and opens o.Version or the export's current version.
// The cache and the client close on cleanup.
func (w *Worker) View(addr string, o ViewOptions) *View {
	w.T.Helper()
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	client, err := remote.Dial(remote.ClientConfig{Addr: addr, Token: o.Token, CAFile: o.CAFile,
		CallTimeout: o.Timeout, Timeout: o.Timeout, Logger: o.Log})
	if err != nil {
		w.T.Fatal(err)
	}
	store, err := object.OpenDirStore(filepath.Join(w.State, "objects"))
	if err != nil {
		client.Close()
		w.T.Fatal(err)
	}
	cache, err := remote.NewCache(store, client, o.Log)
	if err != nil {
		client.Close()
		w.T.Fatal(err)
	}
	w.T.Cleanup(func() { cache.Close(); client.Close() })
	v := o.Version
	if v.IsZero() {
		// The master's first scan hashes its whole export, which a
		// loaded machine under -race has taken over 20 s to do for
		// 40 MiB: its own bound, not the open's.
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		v, err = client.Resolve(rctx, o.Path)
		cancel()
		if err != nil {
			w.T.Fatalf("resolve: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lower, root, err := remote.OpenVersion(ctx, cache, v)
	if err != nil {
		w.T.Fatalf("open version: %v", err)
	}
	return &View{Client: client, Store: store, Cache: cache, Lower: lower, Root: root, Version: v}
}

// LogBuffer is a log a test reads while a master or a worker writes it.
// The zero value is ready to use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines returns the lines that contain s.
func (l *LogBuffer) Lines(s string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// ErrorLine returns the first ERROR line that holds all of words, or "".
func (l *LogBuffer) ErrorLine(words ...string) string {
	for _, line := range l.Lines("level=ERROR") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return line
		}
	}
	return ""
}

// Logger logs to l in slog's text format, debug level and up.
func (l *LogBuffer) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Within runs fn with a deadline, so that a hung read fails the test
// instead of hanging it.
func Within(t testing.TB, d time.Duration, what string, fn func() error) error {
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

// WriteFile writes b at path with mode, making its parents.
func WriteFile(t testing.TB, path string, b []byte, mode os.FileMode) {
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

// RandBytes returns n random bytes: content no chunk of another test
// shares.
func RandBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
