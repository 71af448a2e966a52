// Package s3test runs a real S3-compatible object store for tests: a
// SeaweedFS server (weed) with its S3 gateway, on loopback ports, with one
// identity. The weed binary is built from a pinned module version, once per
// machine, into a cache keyed by that version (Build); scripts/seaweedfs
// does the same for CI and for humans.
package s3test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/internal/childproc"
)

// Module and Version are the SeaweedFS source weed is built from.
const (
	Module  = "github.com/seaweedfs/seaweedfs"
	Version = "v0.0.0-20261109003541-7506e5f91cd6"
)

// The identities every server started here has: one that may do
// anything, and one that may only read and list.
const (
	AccessKey = "cowfs-test-access"
	SecretKey = "cowfs-test-secret-key"
	Region    = "us-east-1"

	ReadOnlyAccessKey = "cowfs-test-reader"
	ReadOnlySecretKey = "cowfs-test-reader-secret"
)

// CacheDir is where built binaries are kept: $COWFS_WEED_CACHE, else
// $XDG_CACHE_HOME/cowfs, else ~/.cache/cowfs.
func CacheDir() (string, error) {
	if d := os.Getenv("COWFS_WEED_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "cowfs"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory for weed: %w", err)
	}
	return filepath.Join(home, ".cache", "cowfs"), nil
}

// BinPath is where Build puts the binary of Version.
func BinPath() (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "seaweedfs-"+Version, "weed"), nil
}

// Build returns the path of the weed binary of Version, building it first
// if the cache lacks it: go mod download the module, copy its source to a
// writable directory (the module cache is read-only) and go build ./weed
// there; go install refuses the module for its replace directives. Test
// binaries and scripts that build at once wait for each other on a lock
// file, so one builds and the others use its binary. logw gets go's
// output; ctx bounds the whole build.
func Build(ctx context.Context, logw io.Writer) (string, error) {
	bin, err := BinPath()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	dir := filepath.Dir(bin)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("weed cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("weed cache: %w", err)
	}
	defer lock.Close()
	if err := flockCtx(ctx, int(lock.Fd())); err != nil {
		return "", fmt.Errorf("wait for another build of weed: %w", err)
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // built while this one waited
	}
	src, err := downloadModule(ctx, logw)
	if err != nil {
		return "", err
	}
	// One fixed place to build in (under the lock): the go build cache
	// keys the module's packages by their directory, so a rebuild (a
	// binary removed, a cache dir moved) reuses what the last one compiled.
	work := filepath.Join(dir, "build")
	if err := os.RemoveAll(work); err != nil {
		return "", fmt.Errorf("weed build: %w", err)
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return "", fmt.Errorf("weed build: %w", err)
	}
	defer os.RemoveAll(work)
	if err := run(ctx, logw, "", "cp", "-R", src, filepath.Join(work, "src")); err != nil {
		return "", err
	}
	if err := run(ctx, logw, "", "chmod", "-R", "u+w", filepath.Join(work, "src")); err != nil {
		return "", err
	}
	tmp := filepath.Join(work, "weed")
	if err := run(ctx, logw, filepath.Join(work, "src"), "go", "build", "-o", tmp, "./weed"); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", fmt.Errorf("weed build: %w", err)
	}
	return bin, nil
}

// downloadModule fetches the module into the module cache and returns
// its directory. It runs outside any module, so that this repository's
// go.mod and go.sum are neither read nor changed.
func downloadModule(ctx context.Context, logw io.Writer) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", Module+"@"+Version)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GO111MODULE=on", "GOWORK=off", "GOFLAGS=-mod=mod")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, logw
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w: %s", Module, Version, err, out.Bytes())
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", Module, Version, err)
	}
	if m.Error != "" || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: %s", Module, Version, m.Error)
	}
	return m.Dir, nil
}

func run(ctx context.Context, logw io.Writer, dir string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false")
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("weed build: %s %v: %w", name, args, err)
	}
	return nil
}

// flockCtx takes an exclusive flock on fd, waiting at most until ctx ends.
func flockCtx(ctx context.Context, fd int) error {
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Server is one weed server with its S3 gateway on loopback.
type Server struct {
	// Endpoint is the S3 gateway's URL, http://127.0.0.1:PORT, or
	// https:// for a server started with TLS.
	Endpoint string
	// Dir holds the server's data, its configuration and its log.
	Dir string
	// TLS is what the gateway serves https with (StartTLS); zero for
	// plain http.
	TLS TLSFiles

	bin   string
	args  []string
	cmd   *exec.Cmd
	done  chan struct{}
	ports ports
	// sockets are the unix sockets weed made for its gRPC services,
	// each with its inode, removed by Stop.
	sockets []socketFile
}

// A socketFile is a unix socket weed made, as it was once S3 answered.
type socketFile struct {
	path string
	ino  uint64
}

// grpcSockets are the unix sockets weed server makes for the gRPC ports
// of p: at paths of its own in /tmp, which no flag moves, and which
// outlive it, four a start.
func grpcSockets(p ports) []string {
	var paths []string
	for _, svc := range []struct {
		name string
		port int
	}{{"master", p.master}, {"volume", p.volume}, {"filer", p.filer}, {"s3", p.s3}} {
		paths = append(paths, fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", svc.name, svc.port+1))
	}
	return paths
}

type ports struct{ master, volume, filer, s3 int }

// identityConfig is the S3 identity file weed reads (-s3.config).
func identityConfig() []byte {
	cfg := map[string]any{"identities": []any{map[string]any{
		"name":        "cowfs",
		"credentials": []any{map[string]string{"accessKey": AccessKey, "secretKey": SecretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}, map[string]any{
		"name":        "reader",
		"credentials": []any{map[string]string{"accessKey": ReadOnlyAccessKey, "secretKey": ReadOnlySecretKey}},
		"actions":     []string{"Read", "List"},
	}}}
	b, _ := json.Marshal(cfg)
	return b
}

// Start starts a server with its data under dir (made if missing) on free
// loopback ports, and returns once its S3 gateway answers, or an error
// within ctx's deadline; the server logs to DIR/weed.log. The caller
// stops it (Stop).
func Start(ctx context.Context, bin, dir string) (*Server, error) {
	return StartTLS(ctx, bin, dir, TLSFiles{})
}

// StartTLS is Start with the S3 gateway serving https only, with f's
// certificate and key; the server's own clients (Client, the wait for it
// to answer) trust f's CA. A zero f is Start.
func StartTLS(ctx context.Context, bin, dir string, f TLSFiles) (*Server, error) {
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(cfgPath, identityConfig(), 0o600); err != nil {
		return nil, err
	}
	// A port found free may be taken before weed binds it (by another
	// server starting, or any connection's local port): weed then exits
	// while starting, and new ports are tried, on fresh data: the failed
	// start may have left some.
	for tries := 1; ; tries++ {
		s, err := start(ctx, bin, dir, cfgPath, f)
		if err == nil || tries == 3 || !errors.Is(err, errExited) {
			return s, err
		}
		data := filepath.Join(dir, "data")
		if err := os.RemoveAll(data); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(data, 0o755); err != nil {
			return nil, err
		}
	}
}

func start(ctx context.Context, bin, dir, cfgPath string, f TLSFiles) (*Server, error) {
	p, err := freePorts()
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, bin: bin, ports: p, Endpoint: "http://127.0.0.1:" + strconv.Itoa(p.s3), TLS: f}
	s.args = []string{
		// Its log to stderr (weed.log in dir), not to files of its own
		// in the machine's temporary directory, which outlive the server.
		"-logtostderr",
		"server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-dir=" + filepath.Join(dir, "data"),
		"-master.port=" + strconv.Itoa(p.master), "-master.port.grpc=" + strconv.Itoa(p.master+1),
		"-master.volumeSizeLimitMB=64", "-volume.max=0",
		"-volume.port=" + strconv.Itoa(p.volume), "-volume.port.grpc=" + strconv.Itoa(p.volume+1),
		"-filer.port=" + strconv.Itoa(p.filer), "-filer.port.grpc=" + strconv.Itoa(p.filer+1),
		"-s3", "-s3.port=" + strconv.Itoa(p.s3), "-s3.port.grpc=" + strconv.Itoa(p.s3+1),
		"-s3.config=" + cfgPath,
		// No fixed ports (servers of tests run side by side), no
		// reports to the internet, and a missing bucket stays missing.
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		"-master.telemetry=false", "-s3.autoCreateBucket=false",
	}
	// Its unix sockets in dir too: by default weed makes
	// /tmp/seaweedfs-filer-PORT.sock and /tmp/seaweedfs-s3-PORT.sock,
	// which outlive the server, two a start. A socket's path is at most
	// 107 bytes; a dir too deep for it leaves weed's default.
	if abs, err := filepath.Abs(dir); err == nil && len(filepath.Join(abs, "filer.sock")) <= 100 {
		s.args = append(s.args, "-filer.localSocket="+filepath.Join(abs, "filer.sock"), "-s3.localSocket="+filepath.Join(abs, "s3.sock"))
	}
	if f.CertFile != "" {
		// Without -s3.port.https, -s3.port serves https only.
		s.args = append(s.args, "-s3.cert.file="+f.CertFile, "-s3.key.file="+f.KeyFile)
		s.Endpoint = "https://127.0.0.1:" + strconv.Itoa(p.s3)
	}
	if err := s.Restart(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Restart starts the server again after Stop, on the same ports and data,
// and returns once S3 answers.
func (s *Server) Restart(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(s.Dir, "weed.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that Stop ends whatever it started, and
	// a signal to the test's group does not reach it half way; it dies
	// with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := childproc.Start(cmd); err != nil {
		return fmt.Errorf("start weed: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return fmt.Errorf("weed server in %s: %w; the end of %s:\n%s", s.Dir, err, filepath.Join(s.Dir, "weed.log"), logTail(filepath.Join(s.Dir, "weed.log"), 20))
	}
	s.sockets = s.sockets[:0]
	for _, path := range grpcSockets(s.ports) {
		var st unix.Stat_t
		if unix.Lstat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			s.sockets = append(s.sockets, socketFile{path, st.Ino})
		}
	}
	return nil
}

// logTail returns the last n lines of the file at path, for an error: a
// test's directory, weed.log with it, is gone once the test fails.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// errExited is waitReady's error when weed exits before S3 answers.
var errExited = errors.New("weed exited while starting")

// waitReady polls the S3 gateway until it answers an S3 request: an
// unsigned ListBuckets gets an S3 error document (AccessDenied) once the
// gateway and the filer behind it are up.
func (s *Server) waitReady(ctx context.Context) error {
	client, err := s.httpClient()
	if err != nil {
		return err
	}
	client.Timeout = 2 * time.Second
	for {
		select {
		case <-s.done:
			return errExited
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/", nil)
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if bytes.Contains(body, []byte("<Error>")) || resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("S3 at %s did not answer: %w", s.Endpoint, ctx.Err())
		case <-s.done:
			return errExited
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// httpClient returns a client of the gateway: for one with TLS, one that
// trusts its CA.
func (s *Server) httpClient() (*http.Client, error) {
	if s.TLS.CAFile == "" {
		return &http.Client{}, nil
	}
	cfg, err := s.TLS.tlsConfig()
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}, nil
}

// Stop kills the server's process group and waits for it to end. Stopping
// a stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	unix.Kill(-s.cmd.Process.Pid, unix.SIGKILL)
	<-s.done
	s.cmd = nil
	// Only the sockets this server made: another server that took one
	// of its ports since made a new file.
	for _, f := range s.sockets {
		var st unix.Stat_t
		if unix.Lstat(f.path, &st) == nil && st.Ino == f.ino {
			os.Remove(f.path)
		}
	}
	s.sockets = nil
}

// freePorts finds four free ports on loopback, each with the port after
// it free too (weed's gRPC ports), and none among the others. They are
// taken below the kernel's range of ephemeral ports, where neither a
// connection's local port nor a listener on port 0 lands: Restart binds
// them again after Stop, and a port freed meanwhile could be taken by
// any of the other tests' connections, and weed would not start.
func freePorts() (ports, error) {
	var got []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	lo, hi := 10000, ephemeralLow()
	for tries := 0; len(got) < 4 && tries < 200; tries++ {
		addr := "127.0.0.1:0"
		if hi-lo > 1000 {
			addr = "127.0.0.1:" + strconv.Itoa(lo+rand.IntN(hi-1-lo))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ls = append(ls, l)
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		if err != nil {
			continue
		}
		ls = append(ls, l2)
		got = append(got, p)
	}
	if len(got) < 4 {
		return ports{}, errors.New("no free loopback ports for weed")
	}
	return ports{master: got[0], volume: got[1], filer: got[2], s3: got[3]}, nil
}

// ephemeralLow is the first of the kernel's ephemeral ports; 0 if it
// cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}
