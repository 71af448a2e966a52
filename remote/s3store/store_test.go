package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/object/objecttest"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// open opens a store over a fresh bucket of srv, under a prefix.
func open(t *testing.T, srv *s3test.Server) (*s3store.Store, string) {
	t.Helper()
	bucket := srv.Bucket(t)
	st, err := s3store.Open(ctxT(t, time.Minute), s3store.Config{Bucket: bucket, Prefix: "spiders/one", Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	return st, bucket
}

// rawKey is the key object d has in the bucket.
func rawKey(d object.Digest) string {
	return "spiders/one/objects/" + strings.TrimPrefix(d.String(), "sha256-")
}

// overwrite replaces what the bucket holds at key, behind the store's back.
func overwrite(t *testing.T, srv *s3test.Server, bucket, key string, b []byte) {
	t.Helper()
	_, err := srv.Client().PutObject(ctxT(t, time.Minute), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(b)})
	if err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, srv *s3test.Server, bucket, key string) []byte {
	t.Helper()
	out, err := srv.Client().GetObject(ctxT(t, time.Minute), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The bucket store passes the suite every object store runs, against a
// real SeaweedFS, with objects damaged in the bucket.
func TestS3Conformance(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	objecttest.Run(t, func(t *testing.T) objecttest.Subject {
		st, bucket := open(t, srv)
		return objecttest.Subject{Store: st, Damage: func(t *testing.T, d object.Digest) {
			b := read(t, srv, bucket, rawKey(d))
			b[len(b)/2] ^= 0x10
			overwrite(t, srv, bucket, rawKey(d), b)
		}}
	})
}

// Truncated and missing objects in the bucket are told apart from good
// ones and never served.
func TestS3TruncatedAndMissing(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	st, bucket := open(t, srv)
	ctx := ctxT(t, time.Minute)
	enc := objecttest.Blob(t, 10000)
	d, err := st.Put(ctx, enc)
	if err != nil {
		t.Fatal(err)
	}
	overwrite(t, srv, bucket, rawKey(d), enc[:len(enc)/2])
	if b, err := st.Get(ctx, d); !errors.Is(err, object.ErrCorrupt) {
		t.Fatalf("get of a truncated object: %d bytes, %v; want ErrCorrupt", len(b), err)
	}
	if _, err := srv.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(rawKey(d))}); err != nil {
		t.Fatal(err)
	}
	if b, err := st.Get(ctx, d); !errors.Is(err, object.ErrNotFound) {
		t.Fatalf("get of a deleted object: %d bytes, %v; want ErrNotFound", len(b), err)
	}
}

// Put never overwrites: an object already in the bucket keeps its bytes
// (here, damaged ones, so that an overwrite would show).
func TestS3PutDoesNotOverwrite(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	st, bucket := open(t, srv)
	ctx := ctxT(t, time.Minute)
	enc := objecttest.Blob(t, 100)
	d := object.Sum(enc)
	marker := []byte("not the object")
	overwrite(t, srv, bucket, rawKey(d), marker)
	if _, err := st.Put(ctx, enc); err != nil {
		t.Fatal(err)
	}
	if got := read(t, srv, bucket, rawKey(d)); !bytes.Equal(got, marker) {
		t.Fatalf("put overwrote an object the bucket had: the store ignores If-None-Match")
	}
}

// Each way a bucket is out of reach has its own error and message.
func TestS3OpenErrors(t *testing.T) {
	srv := s3test.Shared(t)
	bucket := srv.Bucket(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()

	for _, tc := range []struct {
		name, bucket, endpoint, secret string
		want                           error
		says                           string
	}{
		{"wrong secret", bucket, srv.Endpoint, "wrong", s3store.ErrCredentials, "refused the credentials"},
		{"missing bucket", "no-such-bucket", srv.Endpoint, s3test.SecretKey, s3store.ErrNoBucket, `bucket "no-such-bucket" does not exist`},
		{"unreachable", bucket, closed, s3test.SecretKey, s3store.ErrUnreachable, "cannot reach " + closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv.Env(t)
			t.Setenv("AWS_SECRET_ACCESS_KEY", tc.secret)
			start := time.Now()
			_, err := s3store.Open(ctxT(t, time.Minute), s3store.Config{Bucket: tc.bucket, Prefix: "p", Endpoint: tc.endpoint})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("open: %v; want %v, saying %q", err, tc.want, tc.says)
			}
			if strings.Count(err.Error(), "operation error") > 0 || len(err.Error()) > 300 {
				t.Errorf("the message is the SDK's, not one clear line: %v", err)
			}
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("took %v", took)
			}
			t.Log(err)
		})
	}
}

// A call to an endpoint that accepts connections and never answers ends
// within the call's deadline.
func TestS3NoHang(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	t.Setenv("AWS_ACCESS_KEY_ID", "a")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "b")
	start := time.Now()
	_, err = s3store.Open(context.Background(), s3store.Config{Bucket: "b", Endpoint: "http://" + l.Addr().String(), Timeout: 2 * time.Second})
	if !errors.Is(err, s3store.ErrUnreachable) {
		t.Fatalf("open of a silent endpoint: %v; want ErrUnreachable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %v, past its 2s bound", took)
	}
	// A GET too, whose request the store makes itself.
	st, err := s3store.Open(context.Background(), s3store.Config{Bucket: "b", Endpoint: "http://" + l.Addr().String(), Timeout: 2 * time.Second, NoCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	enc, err := object.EncodeBlob([]byte("never"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(context.Background(), object.Sum(enc)); !errors.Is(err, s3store.ErrUnreachable) {
		t.Fatalf("get from a silent endpoint: %v; want ErrUnreachable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("get took %v, past its 2s bound", took)
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct{ in, bucket, prefix string }{
		{"s3://b", "b", ""},
		{"s3://b/", "b", ""},
		{"s3://b/p/q/", "b", "p/q"},
	} {
		b, p, err := s3store.ParseURL(tc.in)
		if err != nil || b != tc.bucket || p != tc.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v", tc.in, b, p, err)
		}
	}
	for _, bad := range []string{"b/p", "s3://", "s3:///p", "s3://b/p/../q", "s3://b/p//q", "http://b/p"} {
		if _, _, err := s3store.ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) took it", bad)
		}
	}
}

// A worker's cache over the bucket passes the suite too, with what it
// caches damaged on the worker's disk: what a mount from a bucket reads
// through.
func TestS3CacheConformance(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	objecttest.Run(t, func(t *testing.T) objecttest.Subject {
		bucketStore, _ := open(t, srv)
		dir := t.TempDir()
		local, err := object.OpenDirStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		cache, err := remote.NewCache(local, s3store.Fetcher{S: bucketStore}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cache.Close)
		seed := func(t *testing.T, enc []byte) object.Digest {
			d, err := bucketStore.Put(context.Background(), enc)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		return objecttest.Subject{Store: cache, Seed: seed,
			Damage: func(t *testing.T, d object.Digest) { objecttest.DamageFile(t, dir, d) }}
	})
}

// An object's body is read whole however the store sends it: with no
// Content-Length (chunked), in the pool's buffers as in new memory. One
// cut short of its Content-Length is an error, never bytes; one longer
// than any object is refused from its Content-Length, unread. SeaweedFS
// does none of the three on purpose, so a server of a few lines plays
// the store.
func TestS3BodyLengths(t *testing.T) {
	enc := objecttest.Blob(t, 300<<10)
	whole, short, huge := object.Sum(enc), object.Sum(append([]byte("short"), enc...)), object.Sum(append([]byte("huge"), enc...))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("list-type") == "2" {
			io.WriteString(w, emptyListing)
			return
		}
		switch strings.TrimPrefix(r.URL.Path, "/b/objects/") {
		case strings.TrimPrefix(whole.String(), "sha256-"):
			// Written in pieces and flushed: chunked, no length.
			for b := enc; len(b) > 0; b = b[min(len(b), 64<<10):] {
				w.Write(b[:min(len(b), 64<<10)])
				w.(http.Flusher).Flush()
			}
		case strings.TrimPrefix(short.String(), "sha256-"):
			w.Header().Set("Content-Length", strconv.Itoa(len(enc)))
			w.Write(enc[:len(enc)/2])
		case strings.TrimPrefix(huge.String(), "sha256-"):
			w.Header().Set("Content-Length", strconv.Itoa(1<<30))
			w.Write(enc)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `<Error><Code>NoSuchKey</Code></Error>`)
		}
	}))
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "a")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "b")
	ctx := ctxT(t, time.Minute)
	st, err := s3store.Open(ctx, s3store.Config{Bucket: "b", Endpoint: srv.URL, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f := s3store.Fetcher{S: st}
	for _, call := range []struct {
		name    string
		getMany func(context.Context, []object.Digest, func(int, []byte, error)) error
	}{{"GetMany", f.GetMany}, {"GetManyLent", f.GetManyLent}, {"GetManyGiven", f.GetManyGiven}} {
		errs := make([]error, 3)
		err := call.getMany(ctx, []object.Digest{whole, short, huge}, func(i int, b []byte, err error) {
			switch {
			case i == 0 && (err != nil || !bytes.Equal(b, enc)):
				t.Errorf("%s: a body without a length: %d bytes, %v; want the object", call.name, len(b), err)
			case i > 0 && (err == nil || b != nil):
				t.Errorf("%s: object %d: %d bytes, %v; want an error and no bytes", call.name, i, len(b), err)
			}
			errs[i] = err
		})
		if err != nil {
			t.Fatalf("%s: %v", call.name, err)
		}
		if errors.Is(errs[1], object.ErrNotFound) || errors.Is(errs[1], object.ErrCorrupt) {
			t.Errorf("%s: a body cut short: %v; want the transfer's error, not a missing or damaged object", call.name, errs[1])
		}
		if !errors.Is(errs[2], object.ErrCorrupt) {
			t.Errorf("%s: a body longer than any object: %v; want ErrCorrupt", call.name, errs[2])
		}
	}
}

// A worker's cache over a bucket, as a mount opens it (Source), keeps more
// of a sequential reader's chunk groups in flight than over a master: a
// GET's setup and first byte cost more than a master's round trip. It
// asks for them a pack's batch at a time, two batches in flight.
func TestBucketReadAhead(t *testing.T) {
	local, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cache, err := remote.NewCache(local, s3store.Source{Fetcher: s3store.Fetcher{}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	if got, want := cache.ReadAhead(), int64(2*s3store.BatchChunks); got != want {
		t.Errorf("read-ahead of %d chunks from a bucket; want %d", got, want)
	}
	if got, want := cache.AheadBatch(), int64(s3store.BatchChunks); got != want {
		t.Errorf("read-ahead asks a bucket for %d chunks at a time; want %d", got, want)
	}
}
