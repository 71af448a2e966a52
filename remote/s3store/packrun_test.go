package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// A run of a pack is read object by object as it comes, and a store that
// answers its ranged GET otherwise than asked hands no wrong byte: one
// that sends the whole pack instead of the range is refused before any
// object is handed (ErrCorrupt), unless the range was the whole pack;
// one that cuts the answer short (by cutShort) hands the objects that
// came whole and an error for each of the rest, not ErrCorrupt: the
// pack may well be whole. A proxy in front of SeaweedFS plays the store,
// which does neither on purpose.
func TestPackRunAnswers(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	p := publishedSmall(t, 40)
	packs := map[string][]byte{} // by the request's path
	for _, k := range keysUnder(t, srv, p.bucket, "packs/") {
		packs["/"+p.bucket+"/"+k] = read(t, srv, p.bucket, k)
	}
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	var mode atomic.Value
	mode.Store("")
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // the cuts are on purpose
	proxy.ModifyResponse = func(r *http.Response) error {
		pack, ok := packs[r.Request.URL.Path]
		if !ok || r.Request.Header.Get("Range") == "" || r.StatusCode != http.StatusPartialContent {
			return nil
		}
		switch mode.Load() {
		case "whole":
			r.Body.Close()
			r.StatusCode, r.ContentLength, r.Body = http.StatusOK, int64(len(pack)), io.NopCloser(bytes.NewReader(pack))
			r.Header.Del("Content-Range")
			r.Header.Set("Content-Length", strconv.Itoa(len(pack)))
		case "cut":
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(io.LimitReader(r.Body, r.ContentLength-cutShort), errReader{}), r.Body}
		}
		return nil
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)
	all := objectsOf(t, p.local, p.res.Version)
	loose := map[string]bool{}
	for _, k := range keysUnder(t, srv, p.bucket, "objects/") {
		loose[k] = true
	}
	for _, c := range []struct {
		mode     string
		together bool // all objects in one call, else one a call
	}{{"", true}, {"whole", false}, {"cut", false}, {"cut", true}} {
		m := c.mode
		mode.Store(m)
		w, err := s3store.Open(ctxT(t, time.Minute), s3store.Config{Bucket: p.bucket, Prefix: "spiders/one", Endpoint: front.URL, Timeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		f := s3store.Fetcher{S: w}
		ctx := ctxT(t, time.Minute)
		if _, err := f.Get(ctx, p.res.Version); err != nil { // loose: the indexes load
			t.Fatal(err)
		}
		whole, packed, failed, corrupt := 0, 0, 0, 0
		// One object a call: a run of one object is not its whole pack
		// (unless the pack holds one), and each is cut.
		getMany := func(ctx context.Context, ds []object.Digest, got func(int, []byte, error)) error {
			if c.together {
				return f.GetMany(ctx, ds, got)
			}
			for i, d := range ds {
				if err := f.GetMany(ctx, []object.Digest{d}, func(_ int, b []byte, err error) { got(i, b, err) }); err != nil {
					return err
				}
			}
			return nil
		}
		err = getMany(ctx, all, func(i int, b []byte, err error) {
			switch {
			case err == nil && object.Sum(b) == all[i]:
				whole++
				if !loose[rawKey(all[i])] {
					packed++
				}
			case err == nil:
				t.Errorf("%q: object %s handed with %d wrong bytes", m, all[i].Short(), len(b))
			default:
				failed++
				if errors.Is(err, object.ErrCorrupt) {
					corrupt++
				}
			}
		})
		if err != nil {
			t.Fatalf("%q: GetMany: %v", m, err)
		}
		t.Logf("%q, together %v: %d objects whole (%d packed), %d failed (%d ErrCorrupt)", m, c.together, whole, packed, failed, corrupt)
		if whole+failed != len(all) {
			t.Errorf("%q: %d of %d objects handed", m, whole+failed, len(all))
		}
		switch m {
		case "":
			if failed > 0 {
				t.Errorf("answers as asked: %d objects failed", failed)
			}
		case "whole":
			if failed == 0 || corrupt != failed {
				t.Errorf("whole packs for ranges: %d failed, %d of them ErrCorrupt; want some, all ErrCorrupt", failed, corrupt)
			}
		case "cut":
			if failed == 0 || corrupt > 0 {
				t.Errorf("answers cut short: %d failed, %d of them ErrCorrupt; want some, none ErrCorrupt (a transfer cut short, not a damaged pack)", failed, corrupt)
			}
			if c.together && packed < len(all)/2 {
				t.Errorf("answers cut short: %d packed objects whole; want those that came before the cut, most", packed)
			}
		}
	}
}

// cutShort is how many bytes short of its length the proxy cuts an
// answer: more than any small object of publishedSmall, less than a
// run of them.
const cutShort = 16 << 10

// errReader fails every read, as a connection that broke.
type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
