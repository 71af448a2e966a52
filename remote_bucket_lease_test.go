package cowfs_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// A mount of a bucket holds its version with a lease while it runs, so
// gc --keep-versions keeps the version and all it reaches and the mount
// reads on, cold; the lease goes at unmount; a remount waits while a gc
// runs; a gc then removes the
// version, and a remount over it, holding little of it, is refused with
// what happened and mounts nothing.
func TestBucketMountHoldsVersion(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	bucket := srv.Bucket(t)
	url := "s3://" + bucket + "/spiders/one"
	exp := bucketExport(t)
	want := sums(t, exp)
	publishTo(t, srv, url, exp)
	state, mnt := t.TempDir(), newMountpoint(t)
	ws, err := mountBucket(t, srv, url, "", state, mnt, 0)
	if err != nil {
		t.Fatal(err)
	}
	leases := func() int { return len(keysUnder(t, srv, bucket, "spiders/one/leases/")) }
	deadline := time.Now().Add(30 * time.Second)
	for leases() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d leases 30 s after the mount, want 1", leases())
		}
		time.Sleep(50 * time.Millisecond)
	}
	writeFile(t, filepath.Join(exp, "top"), []byte("changed"), 0o644)
	publishTo(t, srv, url, exp)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := s3store.Open(ctx, s3store.Config{Bucket: bucket, Prefix: "spiders/one", Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	gc, err := st.GC(ctx, s3store.GCOptions{KeepVersions: 1})
	if err != nil || gc.VersionsLeased != 1 || gc.VersionsRemoved != 0 {
		t.Fatalf("gc --keep-versions 1 beside a mount of the older version: %+v, %v; want it kept for the lease", gc, err)
	}
	if got := mustRead(t, filepath.Join(mnt, "spider/run.py")); sha256hex(string(got)) != want["spider/run.py"] {
		t.Error("spider/run.py read after the gc differs from what was published")
	}
	if err := ws.Close(); err != nil {
		t.Fatal(err)
	}
	if n := leases(); n != 0 {
		t.Errorf("%d leases after the unmount, want 0", n)
	}

	// A remount waits while a gc runs that may not have seen its lease.
	lock := "spiders/one/locks/gc-0123456789abcdef"
	if _, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(lock)}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ws, err := mountBucket(t, srv, url, "", state, mnt, 0)
		if err == nil {
			err = ws.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a remount beside a gc's lock did not wait for it: %v", err)
	case <-time.After(time.Second):
	}
	if _, err := srv.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(lock)}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("remount once the gc's lock went: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the remount still waits a minute after the gc's lock went")
	}

	gc, err = st.GC(ctx, s3store.GCOptions{KeepVersions: 1})
	if err != nil || gc.VersionsRemoved != 1 {
		t.Fatalf("gc --keep-versions 1 after the unmount: %+v, %v; want the older version removed", gc, err)
	}
	_, err = mountBucket(t, srv, url, "", state, mnt, 0)
	if err == nil || !strings.Contains(err.Error(), "no longer keeps version") || !strings.Contains(err.Error(), "cowfs gc --keep-versions") {
		t.Fatalf("remount over a removed version: %v, want it refused for that", err)
	}
	if ents, _ := os.ReadDir(mnt); len(ents) != 0 {
		t.Errorf("a refused remount left %d entries at the mountpoint", len(ents))
	}
	if n := leases(); n != 0 {
		t.Errorf("%d leases after a refused remount, want 0", n)
	}
}

// A restore of a bucket's checkpoint holds its version with a lease, so
// the checkpoint removed (cowfs snapshots rm --remote) and a gc after it
// leave the restore reading on; once it is unmounted, the next gc removes
// what the checkpoint alone reached, and a restore of the name is not
// found.
func TestBucketRestoreHoldsCheckpoint(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	bucket := srv.Bucket(t)
	url := "s3://" + bucket + "/spiders"
	publishTo(t, srv, url, bucketExport(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := mountBucket(t, srv, url, "", "", "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	db := randBytes(300 << 10)
	writeFile(t, filepath.Join(a.Dir(), "crawl.db"), db, 0o644)
	if _, err := a.Snapshot(ctx, "ckpt"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Push(ctx, "ckpt"); err != nil {
		t.Fatal(err)
	}
	b, err := restoreBucket(t, srv, url, "ckpt")
	if err != nil {
		t.Fatal(err)
	}
	st, err := s3store.Open(ctx, s3store.Config{Bucket: bucket, Prefix: "spiders", Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	v, err := st.Checkpoint(ctx, "ckpt")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.RemoveCheckpoint(ctx, "ckpt"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GC(ctx, s3store.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, filepath.Join(b.Dir(), "crawl.db")); !bytes.Equal(got, db) {
		t.Error("crawl.db read through the restore after its checkpoint was removed and gc ran differs")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GC(ctx, s3store.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if has, err := st.Has(ctx, v); err != nil || has {
		t.Errorf("the removed checkpoint's version after its restore ended and gc ran: held %v, %v", has, err)
	}
	if _, err := restoreBucket(t, srv, url, "ckpt"); !errors.Is(err, refs.ErrNotFound) {
		t.Errorf("restore of the removed checkpoint: %v, want not found", err)
	}
}
