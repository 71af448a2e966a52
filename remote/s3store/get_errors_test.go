package s3store_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/object/objecttest"
	"github.com/cowfs/cowfs/remote/s3store"
)

// emptyListing is a store's answer to a list of bucket b that finds
// nothing, for the stores of a few lines these tests play.
const emptyListing = `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>`

// A GET's failures are those of the SDK's GetObject, whichever makes it:
// a throttled, failing or dropped answer is asked again, up to the
// attempts, and counted; a missing object, a refusal and a bad signature
// are not, each with its own error in one line.
func TestS3GetFailures(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "a")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "b")
	var mu sync.Mutex
	asked := map[string]int{}
	objects := map[string][]byte{}
	// fails is how the first answers for an object fail, by its name.
	fails := map[string][]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("list-type") == "2" {
			io.WriteString(w, emptyListing)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/b/objects/")
		if r.Header.Get("Authorization") == "" {
			t.Errorf("GET %s unsigned", name)
		}
		mu.Lock()
		n := asked[name]
		asked[name]++
		enc, how := objects[name], fails[name]
		mu.Unlock()
		fail := ""
		switch {
		case n < len(how) && how[n] != "always":
			fail = how[n]
		case len(how) > 0 && how[len(how)-1] == "always":
			fail = how[0]
		}
		switch fail {
		case "":
			if enc == nil {
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>`)
				return
			}
			w.Write(enc)
		case "drop":
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
		case "SlowDown":
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
		case "AccessDenied", "SignatureDoesNotMatch":
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `<Error><Code>`+fail+`</Code><Message>no</Message></Error>`)
		default:
			t.Errorf("no failure %q", fail)
		}
	}))
	t.Cleanup(srv.Close)

	for _, path := range []string{"getter", "SDK"} {
		t.Run(path, func(t *testing.T) {
			ctx := ctxT(t, time.Minute)
			st, err := s3store.Open(ctx, s3store.Config{Bucket: "b", Endpoint: srv.URL, Timeout: 20 * time.Second, MaxAttempts: 3})
			if err != nil {
				t.Fatal(err)
			}
			if had := path == "SDK" && s3store.GetThroughSDK(st); path == "SDK" && !had {
				t.Fatal("the store made no GETs of its own")
			}
			for _, tc := range []struct {
				name    string
				fails   []string
				asks    int
				retries int64  // -1: net/http's or the SDK's, either
				want    error  // nil: the object
				says    string // in the error
			}{
				{"throttled twice", []string{"SlowDown", "SlowDown"}, 3, 2, nil, ""},
				{"failing twice", []string{"500", "500"}, 3, 2, nil, ""},
				// net/http itself sends a GET again on a connection
				// that was in use when it dropped; the retryer does
				// on a new one.
				{"dropped", []string{"drop"}, 2, -1, nil, ""},
				{"missing", nil, 1, 0, object.ErrNotFound, "objects/"},
				{"denied", []string{"AccessDenied"}, 1, 0, s3store.ErrCredentials, "AccessDenied"},
				{"a bad signature", []string{"SignatureDoesNotMatch"}, 1, 0, s3store.ErrCredentials, "SignatureDoesNotMatch"},
				{"throttled for good", []string{"SlowDown", "always"}, 3, 2, nil, "SlowDown"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					enc := objecttest.Blob(t, 10<<10)
					d := object.Sum(enc)
					name := strings.TrimPrefix(d.String(), "sha256-")
					mu.Lock()
					if tc.want == nil {
						objects[name] = enc
					}
					fails[name] = tc.fails
					mu.Unlock()
					before := st.Stats().Retries
					got, err := st.Get(ctx, d)
					mu.Lock()
					n := asked[name]
					mu.Unlock()
					if n != tc.asks {
						t.Errorf("asked %d times; want %d", n, tc.asks)
					}
					if r := st.Stats().Retries - before; tc.retries >= 0 && r != tc.retries {
						t.Errorf("%d retries counted; want %d", r, tc.retries)
					}
					switch {
					case tc.says == "" && (err != nil || !bytes.Equal(got, enc)):
						t.Fatalf("got %d bytes, %v; want the object", len(got), err)
					case tc.says != "" && (err == nil || !strings.Contains(err.Error(), tc.says)):
						t.Fatalf("got %v; want an error saying %q", err, tc.says)
					case tc.want != nil && !errors.Is(err, tc.want):
						t.Fatalf("got %v; want %v", err, tc.want)
					}
					if err != nil && (strings.Contains(err.Error(), "operation error") || len(err.Error()) > 400) {
						t.Errorf("the message is the SDK's, not one clear line: %v", err)
					}
					t.Log(err)
				})
			}
		})
	}
}

// A worker whose clock is an hour off reads all the same, as the SDK's
// requests do: the first refusal's Date gives the skew, the GET is signed
// again with it, and later GETs are signed with it from the start.
func TestS3GetClockSkew(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "a")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "b")
	const ahead = time.Hour // the store's clock, ahead of this machine's
	var mu sync.Mutex
	objects := map[string][]byte{}
	asked := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().Add(ahead)
		w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
		name := strings.TrimPrefix(r.URL.Path, "/b/objects/")
		mu.Lock()
		asked[name]++
		enc := objects[name]
		mu.Unlock()
		signed, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
		if err != nil || signed.Sub(now).Abs() > 15*time.Minute {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `<Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the request time and the current time is too large.</Message></Error>`)
			return
		}
		if r.URL.Query().Get("list-type") == "2" {
			io.WriteString(w, emptyListing)
			return
		}
		if enc == nil {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `<Error><Code>NoSuchKey</Code></Error>`)
			return
		}
		w.Write(enc)
	}))
	t.Cleanup(srv.Close)

	t.Run("no Date", func(t *testing.T) {
		// A store whose answers carry no Date leaves nothing to correct
		// by: the refusal says what to do about the clock.
		plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Date"] = nil
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `<Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the request time and the current time is too large.</Message></Error>`)
		}))
		defer plain.Close()
		ctx := ctxT(t, time.Minute)
		st, err := s3store.Open(ctx, s3store.Config{Bucket: "b", Endpoint: plain.URL, Timeout: 20 * time.Second, NoCheck: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.Get(ctx, object.Sum([]byte("x")))
		if !errors.Is(err, s3store.ErrCredentials) || !strings.Contains(err.Error(), "set the clock") {
			t.Fatalf("got %v; want ErrCredentials saying to set the clock", err)
		}
	})
	for _, path := range []string{"getter", "SDK"} {
		t.Run(path, func(t *testing.T) {
			ctx := ctxT(t, time.Minute)
			st, err := s3store.Open(ctx, s3store.Config{Bucket: "b", Endpoint: srv.URL, Timeout: 20 * time.Second, NoCheck: true})
			if err != nil {
				t.Fatal(err)
			}
			if path == "SDK" && !s3store.GetThroughSDK(st) {
				t.Fatal("the store made no GETs of its own")
			}
			// The SDK's list of the bucket's indexes, before the
			// first GET, learns the skew for the SDK's GETs; the
			// getter learns it from its own first answer.
			wants := map[string][]int{"getter": {2, 1}, "SDK": {1, 1}}[path]
			for i, want := range wants {
				enc := objecttest.Blob(t, 4<<10)
				d := object.Sum(enc)
				name := strings.TrimPrefix(d.String(), "sha256-")
				mu.Lock()
				objects[name] = enc
				mu.Unlock()
				got, err := st.Get(ctx, d)
				if err != nil || !bytes.Equal(got, enc) {
					t.Fatalf("get %d: %d bytes, %v", i, len(got), err)
				}
				mu.Lock()
				n := asked[name]
				mu.Unlock()
				if n != want {
					t.Errorf("get %d: asked %d times; want %d", i, n, want)
				}
			}
		})
	}
}

// A store that asks for a pause with X-Amz-Retry-After gets it, within
// the SDK's bounds (the backoff, and 5 s more).
func TestS3GetRetryAfter(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "a")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "b")
	enc := objecttest.Blob(t, 4<<10)
	d := object.Sum(enc)
	var mu sync.Mutex
	var times []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("list-type") == "2" {
			io.WriteString(w, emptyListing)
			return
		}
		mu.Lock()
		times = append(times, time.Now())
		n := len(times)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("X-Amz-Retry-After", "3000")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<Error><Code>SlowDown</Code></Error>`)
			return
		}
		w.Write(enc)
	}))
	t.Cleanup(srv.Close)
	ctx := ctxT(t, time.Minute)
	st, err := s3store.Open(ctx, s3store.Config{Bucket: "b", Endpoint: srv.URL, Timeout: 20 * time.Second, NoCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.Get(ctx, d); err != nil || !bytes.Equal(got, enc) {
		t.Fatalf("get: %d bytes, %v", len(got), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(times) != 2 {
		t.Fatalf("asked %d times; want 2", len(times))
	}
	// The backoff alone is at most 2 s (MaxBackoff).
	if gap := times[1].Sub(times[0]); gap < 3*time.Second {
		t.Errorf("asked again after %v; the store asked for 3 s", gap)
	}
}
