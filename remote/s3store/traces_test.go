package s3store_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// A bucket keeps the last trace put for a subtree and snapshot (decision
// 0070); a path or snapshot a worker may not name is refused and writes
// nothing; gc removes the traces not put for their age, and --dry-run
// only counts them. Not parallel: it sets the age gc keeps traces for.
func TestBucketTraces(t *testing.T) {
	srv := s3test.Shared(t)
	dst, _ := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	if _, err := dst.GetTrace(ctx, "", ""); !errors.Is(err, remote.ErrNoTrace) {
		t.Fatalf("GetTrace before any was put: %v; want ErrNoTrace", err)
	}
	tr := &remote.Trace{Version: object.Sum([]byte("v1"))}
	for i := range 50 {
		tr.Entries = append(tr.Entries, remote.TraceEntry{Object: object.Sum([]byte{byte(i)}), Size: int64(i)})
	}
	later := &remote.Trace{Version: object.Sum([]byte("v2")), Entries: tr.Entries[10:20]}
	same := func(sub, snap string, want *remote.Trace) {
		t.Helper()
		got, err := dst.GetTrace(ctx, sub, snap)
		if err != nil || !bytes.Equal(remote.EncodeTrace(got), remote.EncodeTrace(want)) {
			t.Fatalf("GetTrace(%q, %q): %v; want the trace put last, %d entries", sub, snap, err, len(want.Entries))
		}
	}
	for _, put := range []struct {
		sub, snap string
		t         *remote.Trace
	}{{"", "", tr}, {"", "", later}, {"spiders/quotes", "", tr}, {"", "crawl-1", tr}} {
		if err := dst.PutTrace(ctx, put.sub, put.snap, put.t); err != nil {
			t.Fatal(err)
		}
	}
	same("", "", later)
	same("spiders/quotes", "", tr)
	same("", "crawl-1", tr)
	for _, bad := range [][2]string{{"../x", ""}, {"/etc", ""}, {"", "a/b"}} {
		if err := dst.PutTrace(ctx, bad[0], bad[1], tr); err == nil {
			t.Errorf("PutTrace(%q, %q): no error", bad[0], bad[1])
		}
	}

	if st, err := dst.GC(ctx, s3store.GCOptions{Grace: time.Hour}); err != nil || st.TracesRemoved != 0 {
		t.Errorf("gc of traces just put: %+v, %v; want none removed", st, err)
	}
	defer s3store.SetTraceAge(s3store.SetTraceAge(0))
	if st, err := dst.GC(ctx, s3store.GCOptions{Grace: time.Hour, DryRun: true}); err != nil || st.TracesRemoved != 3 {
		t.Errorf("gc --dry-run past the traces' age: %+v, %v; want 3 counted", st, err)
	}
	same("", "", later)
	if st, err := dst.GC(ctx, s3store.GCOptions{Grace: time.Hour}); err != nil || st.TracesRemoved != 3 {
		t.Errorf("gc past the traces' age: %+v, %v; want 3 removed", st, err)
	}
	if _, err := dst.GetTrace(ctx, "", ""); !errors.Is(err, remote.ErrNoTrace) {
		t.Errorf("GetTrace after gc removed it: %v; want ErrNoTrace", err)
	}
}
