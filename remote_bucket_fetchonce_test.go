package cowfs_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// getCounter is an HTTP proxy in front of an S3 endpoint that counts the
// GETs of each object key (path-style: /BUCKET/PREFIX/objects/HEX). It
// passes the Host header on as it came, so request signatures still hold.
type getCounter struct {
	mu   sync.Mutex
	gets map[string]int
}

func newGetCounter(t *testing.T, endpoint string) (*getCounter, string) {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	c := &getCounter{gets: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/objects/") {
			c.mu.Lock()
			c.gets[r.URL.Path]++
			c.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func (c *getCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.gets))
	for k, n := range c.gets {
		out[k] = n
	}
	return out
}

// Many mounts on one worker (one state directory) of one version of a
// bucket, reading everything at once, fetch each object from the bucket
// once: the machine's cache serves every mount, and a stripe lock lets
// one mount fetch an object while the others wait for it. GETs are
// counted by key in a proxy in front of a real SeaweedFS.
func TestBucketMountsFetchOnce(t *testing.T) {
	n := 20
	if testing.Short() {
		n = 4
	}
	t.Parallel()
	srv := s3test.Shared(t)
	u := "s3://" + srv.Bucket(t) + "/spiders"
	exp := fetchOnceExport(t)
	publishTo(t, srv, u, exp)
	want := sums(t, exp)

	counter, endpoint := newGetCounter(t, srv.Endpoint)
	state := t.TempDir()
	var mounts []string
	for i := range n {
		mnt := newMountpoint(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: state,
			Lower: cowfs.Lower{Remote: &cowfs.Remote{Addr: u, S3Endpoint: endpoint, IOTimeout: 30 * time.Second}}})
		cancel()
		if err != nil {
			t.Fatalf("mount %d: %v", i, err)
		}
		t.Cleanup(func() { ws.Close() })
		mounts = append(mounts, ws.Dir())
	}

	for i, got := range sumsOfEach(t, mounts) {
		sameSums(t, fmt.Sprintf("mount %d", i), got, want)
	}

	gets := counter.snapshot()
	if len(gets) == 0 {
		t.Fatal("no GET of an object went through the proxy")
	}
	total := 0
	for key, k := range gets {
		total += k
		if k != 1 {
			t.Errorf("%s fetched %d times by %d mounts, want once", key, k, n)
		}
	}
	t.Logf("%d mounts: %d GETs of %d objects", n, total, len(gets))
}
