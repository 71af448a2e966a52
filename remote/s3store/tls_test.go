package s3store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// A SeaweedFS serving https with a test CA: the store works with the CA
// given, and without it, with another CA, or with the wrong scheme each
// fails with ErrTLS, saying what is wrong and which flag to change.
func TestS3TLS(t *testing.T) {
	srv := s3test.RunTLS(t)
	bucket := srv.Bucket(t)
	srv.Env(t)
	other, err := s3test.NewTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	plain := s3test.Shared(t)
	plainBucket := plain.Bucket(t)

	st, err := s3store.Open(ctxT(t, time.Minute), s3store.Config{Bucket: bucket, Prefix: "p", Endpoint: srv.Endpoint, CAFile: srv.TLS.CAFile})
	if err != nil {
		t.Fatalf("open with the CA: %v", err)
	}
	enc, err := object.EncodeBlob([]byte("over TLS"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.Put(ctxT(t, time.Minute), enc)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.Get(ctxT(t, time.Minute), d); err != nil || string(got) != string(enc) {
		t.Fatalf("get over TLS: %q, %v", got, err)
	}

	httpsOfPlain := strings.Replace(plain.Endpoint, "http://", "https://", 1)
	httpOfTLS := strings.Replace(srv.Endpoint, "https://", "http://", 1)
	for _, tc := range []struct {
		name, bucket, endpoint, ca string
		says                       []string
	}{
		{"no CA", bucket, srv.Endpoint, "", []string{"not signed by a CA this machine trusts", "--s3-ca"}},
		{"another CA", bucket, srv.Endpoint, other.CAFile, []string{"not signed by the CA in --s3-ca " + other.CAFile}},
		{"https to plain http", plainBucket, httpsOfPlain, srv.TLS.CAFile, []string{"does not speak TLS", "http://"}},
		{"http to https", bucket, httpOfTLS, "", []string{"speaks TLS", "https://"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := s3store.Open(ctxT(t, time.Minute), s3store.Config{Bucket: tc.bucket, Prefix: "p", Endpoint: tc.endpoint, CAFile: tc.ca})
			if !errors.Is(err, s3store.ErrTLS) {
				t.Fatalf("open: %v; want ErrTLS", err)
			}
			for _, w := range tc.says {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the message does not say %q: %v", w, err)
				}
			}
			if strings.Contains(err.Error(), "operation error") || len(err.Error()) > 500 {
				t.Errorf("the message is the SDK's, not one clear line: %v", err)
			}
			// A certificate does not change by asking again.
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("took %v: retried a TLS failure?", took)
			}
			t.Log(err)
		})
	}
}
