package s3store_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// A hold's lease (a mount's) is put again while it is held, which keeps
// it younger than the TTL gc ignores leases after, and removed at
// release, whenever release comes; release twice is harmless. Not
// parallel: it sets how often a hold renews for every test.
func TestHoldRenews(t *testing.T) {
	srv := s3test.Shared(t)
	bucket := srv.Bucket(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := s3store.Open(ctx, s3store.Config{Bucket: bucket, Prefix: "p", Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer s3store.SetHoldRenew(s3store.SetHoldRenew(300 * time.Millisecond))
	leases := func() []time.Time {
		t.Helper()
		out, err := srv.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("p/leases/")})
		if err != nil {
			t.Fatal(err)
		}
		var mods []time.Time
		for _, o := range out.Contents {
			mods = append(mods, aws.ToTime(o.LastModified))
		}
		return mods
	}
	v, err := object.ParseDigest("sha256-ab" + strings.Repeat("0", 62))
	if err != nil {
		t.Fatal(err)
	}
	h := st.Hold(ctx, v, "/mnt/w", true, slog.Default())
	first := leases()
	if len(first) != 1 {
		t.Fatalf("%d leases after a waited hold, want 1", len(first))
	}
	if held, renewed, err := h.Status(); !held || renewed.IsZero() || err != nil {
		t.Errorf("status of a hold whose lease was put: %v, %s, %v", held, renewed, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if mods := leases(); len(mods) == 1 && mods[0].After(first[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease was not put again within 30 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.Release()
	h.Release()
	if n := len(leases()); n != 0 {
		t.Errorf("%d leases after release, want 0", n)
	}
	// A hold released before its lease was put in the background leaves
	// none behind.
	h = st.Hold(ctx, v, "/mnt/w", false, slog.Default())
	h.Release()
	time.Sleep(time.Second)
	if n := len(leases()); n != 0 {
		t.Errorf("%d leases a second after a background hold was released, want 0", n)
	}
	// Released while a renewal is under way, it leaves none either: the
	// renewal ends before the lease is removed.
	s3store.SetHoldRenew(time.Millisecond)
	for range 5 {
		h = st.Hold(ctx, v, "/mnt/w", true, slog.Default())
		time.Sleep(100 * time.Millisecond)
		h.Release()
	}
	time.Sleep(time.Second)
	if n := len(leases()); n != 0 {
		t.Errorf("%d leases after holds released while renewing, want 0", n)
	}
}
