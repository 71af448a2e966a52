package s3store_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/object/objecttest"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// BenchmarkBucketGet GETs one loose object at a time from a local
// SeaweedFS, as a cold task's small files do, and reports the client's
// own CPU a GET beside the wall time (which holds the server's).
func BenchmarkBucketGet(b *testing.B) {
	srv := s3test.Shared(b)
	bucket := srv.Bucket(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st, err := s3store.Open(ctx, s3store.Config{Bucket: bucket, Prefix: "bench", Endpoint: srv.Endpoint})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{4 << 10, 100 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			ds := make([]object.Digest, 64)
			for i := range ds {
				if ds[i], err = st.Put(ctx, objecttest.Blob(b, size)); err != nil {
					b.Fatal(err)
				}
			}
			f := s3store.Fetcher{S: st}
			before := cpu()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := f.Get(ctx, ds[i%len(ds)]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((cpu()-before).Microseconds())/float64(b.N), "cpu-µs/op")
			b.SetBytes(int64(size))
		})
	}
}

// cpu is the CPU this process has used, user and system.
func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
