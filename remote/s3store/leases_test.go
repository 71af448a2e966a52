package s3store_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// gc --keep-versions removes the keys of versions older than the newest
// N, and then what only they reached, except a version a lease holds or
// one superseded less than the grace ago; a dry run only counts. A lease
// keeps what is left of a version whose key is gone; a stale lease, or
// one released, holds nothing. Not parallel: it sets the leases' TTL.
func TestGCKeepVersions(t *testing.T) {
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	var vs []s3store.PublishResult // oldest first
	for i := range 4 {
		writeFile(t, filepath.Join(dir, "f"), randBytes(100<<10+i))
		r, err := s3store.Publish(ctx, dst, localStore(t), dir, s3store.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, r)
	}
	lease, err := dst.TakeLease(ctx, vs[1].Version, "/mnt/w")
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(keysUnder(t, srv, bucket, "leases/")); n != 1 {
		t.Fatalf("%d lease keys after a lease was taken and renewed, want 1", n)
	}
	published := func() []object.Digest {
		t.Helper()
		got, err := dst.Versions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ds []object.Digest
		for _, v := range got {
			ds = append(ds, v.Digest)
		}
		return ds
	}
	has := func(v s3store.PublishResult) bool {
		t.Helper()
		h, err := openAgain(t, srv, bucket).Has(ctx, v.Version)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}

	st, err := dst.GC(ctx, s3store.GCOptions{KeepVersions: 1, Grace: time.Hour})
	if err != nil || st.VersionsRemoved != 0 || st.VersionsLeased != 1 || st.VersionsYoung != 2 || st.Versions != 4 {
		t.Errorf("gc --keep-versions 1 --grace 1h: %+v, %v; want every version kept: 1 newest, 1 leased, 2 superseded within the grace", st, err)
	}
	st, err = dst.GC(ctx, s3store.GCOptions{KeepVersions: 1, DryRun: true})
	if err != nil || st.VersionsRemoved != 2 || st.VersionsLeased != 1 || st.Versions != 2 {
		t.Errorf("gc --keep-versions 1 --dry-run: %+v, %v; want 2 versions counted", st, err)
	}
	if got := published(); len(got) != 4 || !has(vs[0]) {
		t.Fatalf("a dry run removed something: %d versions left", len(got))
	}
	st, err = dst.GC(ctx, s3store.GCOptions{KeepVersions: 1})
	if err != nil || st.VersionsRemoved != 2 || st.VersionsLeased != 1 {
		t.Errorf("gc --keep-versions 1: %+v, %v; want 2 versions removed", st, err)
	}
	if got, want := published(), []object.Digest{vs[3].Version, vs[1].Version}; !slices.Equal(got, want) {
		t.Errorf("versions after gc: %v, want the newest and the leased one %v", got, want)
	}
	if has(vs[0]) || has(vs[2]) {
		t.Error("a removed version's objects are still there")
	}
	for _, v := range []s3store.PublishResult{vs[1], vs[3]} {
		readVersion(t, openAgain(t, srv, bucket), v.Version)
	}

	removeVersion(t, srv, bucket, vs[1])
	if _, err := dst.GC(ctx, s3store.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	readVersion(t, openAgain(t, srv, bucket), vs[1].Version)

	defer s3store.SetLeaseTTL(s3store.SetLeaseTTL(0))
	if _, err := dst.GC(ctx, s3store.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if has(vs[1]) {
		t.Error("a stale lease kept its version")
	}
	if err := lease.Release(); err != nil {
		t.Fatal(err)
	}
	if keys := keysUnder(t, srv, bucket, "leases/"); len(keys) != 0 {
		t.Errorf("lease keys after release: %v", keys)
	}
	if _, err := dst.GC(ctx, s3store.GCOptions{KeepVersions: -1}); err == nil {
		t.Error("gc with a negative number of versions to keep: no error")
	}
}

// WaitGC returns once no gc holds its lock, and not before.
func TestWaitGC(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	key := "spiders/one/locks/gc-0123456789abcdef"
	if _, err := srv.Client().PutObject(ctxT(t, time.Minute), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := dst.WaitGC(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitGC with a gc's lock there: %v, want it to wait until its deadline", err)
	}
	removeKey(t, srv, bucket, key)
	if err := dst.WaitGC(ctxT(t, time.Minute)); err != nil {
		t.Errorf("WaitGC with no gc: %v", err)
	}
}
