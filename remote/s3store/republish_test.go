package s3store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// A rollback makes an earlier version the newest again, with the info of
// its first publish and when that was; gc counts a version published
// twice once against --keep-versions; a version gc dropped, or never
// published, is not republished.
func TestRepublish(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	st, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	vs := publishEach(t, st, "zero", "one", "two")
	before, err := st.Published(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Republish(ctx, vs[1].Version)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != vs[1].VersionString || !info.Again.Equal(before[1].Published) || info.Files != 1 || info.Source != before[1].Source {
		t.Errorf("republish: %+v; want version one, again at %s, its files and source", info, before[1].Published)
	}
	newest, err := st.Newest(ctx)
	if err != nil || newest.Digest != vs[1].Version {
		t.Fatalf("newest after the rollback: %s, %v; want version one", newest.Digest.Short(), err)
	}
	if files := readVersion(t, openAgain(t, srv, bucket), newest.Digest); string(files["spider.py"]) != "one" {
		t.Errorf("the newest version holds %q", files["spider.py"])
	}
	ps, err := st.Published(ctx)
	if err != nil || len(ps) != 4 || ps[0].Digest != vs[1].Version || ps[0].Again.IsZero() || !ps[1].Again.IsZero() {
		t.Fatalf("published after the rollback: %+v, %v; want four keys, the newest a rollback", ps, err)
	}
	// A rollback of a rollback keeps the first publish's time.
	if info, err := st.Republish(ctx, vs[2].Version); err != nil || !info.Again.Equal(before[0].Published) {
		t.Fatalf("a rollback to version two: %+v, %v; want again at %s", info, err, before[0].Published)
	}
	if again, err := st.Republish(ctx, vs[1].Version); err != nil || !again.Again.Equal(before[1].Published) {
		t.Errorf("a rollback to a version rolled back to before: %+v, %v; want again at %s", again, err, before[1].Published)
	}

	// Keys now, newest first: one, two, one, two, one, zero. Two
	// versions kept are one and two, with all five of their keys.
	gc, err := st.GC(ctx, s3store.GCOptions{KeepVersions: 2})
	if err != nil || gc.VersionsRemoved != 1 || gc.Versions != 5 {
		t.Fatalf("gc --keep-versions 2: %+v, %v; want zero's key removed, the five of one and two kept", gc, err)
	}
	_, err = st.Republish(ctx, vs[0].Version)
	if !errors.Is(err, s3store.ErrNoVersion) {
		t.Errorf("republish of a version gc dropped: %v; want ErrNoVersion", err)
	}
	if _, err := st.Republish(ctx, object.Sum([]byte("never published"))); !errors.Is(err, s3store.ErrNoVersion) {
		t.Errorf("republish of a version never published: %v; want ErrNoVersion", err)
	}
}
