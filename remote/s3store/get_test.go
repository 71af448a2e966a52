package s3store

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// wireLog answers every request with one byte and keeps it.
type wireLog struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (r *wireLog) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Clone(context.Background()))
	r.mu.Unlock()
	h := http.Header{"Content-Length": {"1"}}
	if rng := req.Header.Get("Range"); rng != "" {
		h.Set("Content-Range", "bytes 0-0/1")
	}
	return &http.Response{StatusCode: http.StatusOK, Header: h, ContentLength: 1,
		Body: io.NopCloser(strings.NewReader("x")), Request: req}, nil
}

func (r *wireLog) last(t *testing.T) *http.Request {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		t.Fatal("no request sent")
	}
	return r.reqs[len(r.reqs)-1]
}

// hostOf is the Host header r goes with.
func hostOf(r *http.Request) string {
	if r.Host != "" {
		return r.Host
	}
	return r.URL.Host
}

// scope is the credential scope an Authorization header signs for
// (key/date/region/service/aws4_request), and its signed headers.
var scope = regexp.MustCompile(`Credential=([^,]+), SignedHeaders=([^,]+),`)

// The getter sends what the SDK's GetObject sends where it matters: the
// same URL (scheme, host, escaped path) for each way a bucket is
// addressed, the same range, a signature of the same scope over the
// headers it sends; and it leaves to the SDK a bucket whose endpoint
// rules ask for another auth scheme.
func TestGetterSendsWhatTheSDKSends(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	// A CA bundle needs the SDK's own HTTP client, which the wire log replaces.
	t.Setenv("AWS_CA_BUNDLE", "")
	for _, tc := range []struct {
		name string
		cfg  Config
		env  map[string]string
	}{
		{"endpoint, path style", Config{Bucket: "b", Prefix: "spiders/one", Endpoint: "http://127.0.0.1:9000"}, nil},
		{"endpoint with a path", Config{Bucket: "b", Prefix: "p", Endpoint: "https://store.example/s3/"}, nil},
		{"AWS, virtual host", Config{Bucket: "bucket-1", Prefix: "p", Region: "eu-west-1"}, nil},
		{"AWS, a bucket with dots", Config{Bucket: "my.bucket.name", Prefix: "p", Region: "eu-west-1"}, nil},
		{"AWS, a prefix to escape", Config{Bucket: "b-2", Prefix: "sp ace/ü+é=&;x", Region: "us-west-2"}, nil},
		{"endpoint, a prefix to escape", Config{Bucket: "b", Prefix: "a b/%2F/ü", Endpoint: "http://127.0.0.1:9000"}, nil},
		{"AWS, FIPS", Config{Bucket: "b-3", Prefix: "p", Region: "us-east-2"}, map[string]string{"AWS_USE_FIPS_ENDPOINT": "true"}},
		{"AWS, dual stack", Config{Bucket: "b-4", Prefix: "p", Region: "ap-south-1"}, map[string]string{"AWS_USE_DUALSTACK_ENDPOINT": "true"}},
		{"AWS, session token", Config{Bucket: "b-5", Prefix: "p", Region: "eu-central-1"}, map[string]string{"AWS_SESSION_TOKEN": "tok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			rec := &wireLog{}
			cfg := tc.cfg
			cfg.NoCheck, cfg.transport, cfg.Timeout = true, rec, 10*time.Second
			s, err := Open(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			g := s.getter
			if g == nil {
				t.Fatal("GETs go through the SDK")
			}
			for _, rng := range []string{"", "bytes=5-9"} {
				key := s.key("packs/0a1b")
				send := func() *http.Request {
					a, err := s.getObject(context.Background(), key, rng)
					if err != nil {
						t.Fatal(err)
					}
					if b, err := io.ReadAll(a.body); err != nil || string(b) != "x" {
						t.Fatalf("body %q, %v", b, err)
					}
					a.body.Close()
					return rec.last(t)
				}
				s.getter = nil
				sdk := send()
				s.getter = g
				ours := send()
				if ours.Method != http.MethodGet || ours.URL.Scheme != sdk.URL.Scheme || ours.URL.Host != sdk.URL.Host ||
					ours.URL.EscapedPath() != sdk.URL.EscapedPath() || hostOf(ours) != hostOf(sdk) {
					t.Errorf("range %q: sent %s %s://%s%s (Host %s); the SDK %s://%s%s (Host %s)", rng,
						ours.Method, ours.URL.Scheme, ours.URL.Host, ours.URL.EscapedPath(), hostOf(ours),
						sdk.URL.Scheme, sdk.URL.Host, sdk.URL.EscapedPath(), hostOf(sdk))
				}
				if q := ours.URL.Query(); len(q) != 0 {
					t.Errorf("a query %v", q)
				}
				for _, h := range []string{"Range", "X-Amz-Security-Token"} {
					if ours.Header.Get(h) != sdk.Header.Get(h) {
						t.Errorf("%s: %q; the SDK's %q", h, ours.Header.Get(h), sdk.Header.Get(h))
					}
				}
				if ours.Header.Get("Accept-Encoding") != "identity" {
					t.Errorf("Accept-Encoding %q: net/http would ask for gzip", ours.Header.Get("Accept-Encoding"))
				}
				om, sm := scope.FindStringSubmatch(ours.Header.Get("Authorization")), scope.FindStringSubmatch(sdk.Header.Get("Authorization"))
				if om == nil || sm == nil || om[1] != sm[1] {
					t.Fatalf("signed as %q; the SDK as %q", ours.Header.Get("Authorization"), sdk.Header.Get("Authorization"))
				}
				for _, h := range strings.Split(om[2], ";") {
					if !strings.Contains(";"+sm[2]+";", ";"+h+";") {
						t.Errorf("signs %s, which the SDK does not (%s)", h, sm[2])
					}
				}
				if _, ok := ours.Header["X-Amz-Content-Sha256"]; !ok {
					t.Error("no X-Amz-Content-Sha256")
				}
			}
		})
	}

	// S3 Express's directory buckets sign with sessions, which the SDK
	// makes: their GETs stay the SDK's.
	s, err := Open(context.Background(), Config{Bucket: "cowfs--usw2-az1--x-s3", Region: "us-west-2", NoCheck: true, transport: &wireLog{}})
	if err != nil {
		t.Fatal(err)
	}
	if s.getter != nil {
		t.Errorf("a directory bucket's GETs signed with SigV4, %+v", s.getter)
	}
}
