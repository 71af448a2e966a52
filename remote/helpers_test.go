package remote_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
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

// view is what a worker's mount reads through, without the mount: a
// version of the export, through a cache over the worker's store.
type view struct {
	cache   *remote.Cache
	client  *remote.Client
	lower   *lower.Objects
	root    object.Entry
	version object.Digest
}

type viewOpts struct {
	token   string
	caFile  string
	timeout time.Duration
	version object.Digest // open this version instead of resolving
	log     *slog.Logger  // the client's and the cache's; nil: slog.Default()
}

// view resolves the export's current version, or takes o.version, and
// opens it; the cache and the client close on cleanup.
func (w *worker) view(addr string, o viewOpts) *view {
	w.t.Helper()
	if o.timeout == 0 {
		o.timeout = 10 * time.Second
	}
	client, err := remote.Dial(remote.ClientConfig{Addr: addr, Token: o.token, CAFile: o.caFile,
		CallTimeout: o.timeout, Timeout: o.timeout, Logger: o.log})
	if err != nil {
		w.t.Fatal(err)
	}
	store, err := object.OpenDirStore(filepath.Join(w.state, "objects"))
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
		if v, err = client.Resolve(ctx, ""); err != nil {
			w.t.Fatalf("resolve: %v", err)
		}
	}
	lower, root, err := remote.OpenVersion(ctx, cache, v)
	if err != nil {
		w.t.Fatalf("open version: %v", err)
	}
	return &view{cache: cache, client: client, lower: lower, root: root, version: v}
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

// newCA makes a CA and a certificate it signed for 127.0.0.1, and writes
// the CA's certificate to a PEM file.
func newCA(t *testing.T) (caFile string, cert tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cowfs test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "master"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
