package s3test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// buildTimeout bounds building weed from a cold cache: downloading its
// module graph and compiling it on a small machine.
const buildTimeout = 20 * time.Minute

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// Bin returns the weed binary, building it once per test binary (and per
// machine, through the cache) if needed. A failed build fails the test:
// tests against the object store are never skipped.
func Bin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		var log strings.Builder
		builtBin, buildErr = Build(ctx, &log)
		if buildErr != nil {
			buildErr = fmt.Errorf("%w\n%s", buildErr, log.String())
		}
	})
	if buildErr != nil {
		t.Fatalf("build weed: %v", buildErr)
	}
	return builtBin
}

// Run starts a server for the test, stopped by t.Cleanup (also when the
// test fails), and returns it once S3 answers.
func Run(t testing.TB) *Server {
	t.Helper()
	bin := Bin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// RunTLS is Run with the S3 gateway serving https only, with a
// certificate for 127.0.0.1 signed by a CA made for the test
// (Server.TLS.CAFile).
func RunTLS(t testing.TB) *Server {
	t.Helper()
	bin := Bin(t)
	f, err := NewTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := StartTLS(ctx, bin, t.TempDir(), f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Client returns an S3 client of the server with the server's identity.
func (s *Server) Client() *s3.Client {
	return s.ClientAs(AccessKey, SecretKey)
}

// ClientAs returns an S3 client of the server that signs with the given
// keys.
func (s *Server) ClientAs(access, secret string) *s3.Client {
	hc, err := s.httpClient()
	if err != nil {
		// Only an unreadable CA file, which RunTLS wrote: the requests
		// then fail, naming the certificate.
		hc = &http.Client{}
	}
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(access, secret, ""),
		HTTPClient:   hc,
	})
}

var bucketSeq atomic.Int64

// Bucket makes a new, empty bucket and returns its name.
func (s *Server) Bucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("cowfs-test-%d-%d", os.Getpid(), bucketSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A fresh server may still be settling (its filer, its first
	// volume): a few tries.
	var err error
	for i := 0; i < 20; i++ {
		if _, err = s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err == nil {
			return name
		}
		select {
		case <-ctx.Done():
			t.Fatalf("create bucket %s: %v", name, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	t.Fatalf("create bucket %s: %v", name, err)
	return ""
}

// credentialEnv is the AWS environment, all but the endpoint, that the
// standard credential chain reads to sign as the identity of every
// server started here, and nothing from this machine's AWS files.
var credentialEnv = [][2]string{
	{"AWS_ACCESS_KEY_ID", AccessKey},
	{"AWS_SECRET_ACCESS_KEY", SecretKey},
	{"AWS_REGION", Region},
	{"AWS_CONFIG_FILE", os.DevNull},
	{"AWS_SHARED_CREDENTIALS_FILE", os.DevNull},
	{"AWS_EC2_METADATA_DISABLED", "true"},
}

// Env sets the AWS environment a process started by the test (or the
// standard credential chain in it) uses to reach the server, for the
// test's duration.
func (s *Server) Env(t *testing.T) {
	for _, kv := range credentialEnv {
		t.Setenv(kv[0], kv[1])
	}
	t.Setenv("AWS_ENDPOINT_URL_S3", s.Endpoint)
}

// SetCredentialEnv sets the credential part of Env for the whole
// process, for a TestMain whose tests name their server's endpoint
// themselves: t.Setenv forbids t.Parallel, and the identity is the same
// for every server.
func SetCredentialEnv() {
	for _, kv := range credentialEnv {
		os.Setenv(kv[0], kv[1])
	}
}

var shared struct {
	mu  sync.Mutex
	srv *Server
	dir string
}

// Shared returns one server for every test of the test binary that asks
// for it, started by the first: starting one and growing its first volume
// takes seconds, and tests keep apart by bucket. The test binary's
// TestMain must call StopShared after m.Run.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv != nil {
		return shared.srv
	}
	bin := Bin(t)
	dir, err := os.MkdirTemp("", "cowfs-weed-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, bin, dir)
	if err != nil {
		t.Fatal(err) // dir stays, with the weed.log the error names
	}
	shared.srv, shared.dir = s, dir
	return s
}

// StopShared stops the server Shared started, if any, and removes its
// data.
func StopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv != nil {
		shared.srv.Stop()
		os.RemoveAll(shared.dir)
		shared.srv = nil
	}
}
