package cowfs_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// Many mounts of one version on one worker (one state directory), all
// reading everything at once, make the master send each object once: its
// egress, by its own count, is at most 1.05x what one mount alone made it
// send. The machine's cache serves every mount, and a mount that needs an
// object another is fetching waits for that fetch.
func TestMasterMountsFetchOnce(t *testing.T) {
	n := 100
	if testing.Short() {
		n = 10
	}
	// Not in parallel with the package's other tests: under their load
	// a call of the 100 mounts' went silent for the client's call
	// timeout and was tried again, which sends what it had sent again
	// (a slow link's cost, not a second fetch of one object).
	exp := fetchOnceExport(t)
	want := sums(t, exp)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})

	var all []*cowfs.Workspace
	open := func(state string) string {
		t.Helper()
		mnt := newMountpoint(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: state,
			Lower: cowfs.Lower{Remote: &cowfs.Remote{Addr: ms.Addr, IOTimeout: 30 * time.Second}}})
		if err != nil {
			t.Fatalf("mount: %v", err)
		}
		t.Cleanup(func() { ws.Close() })
		all = append(all, ws)
		return ws.Dir()
	}

	// One mount alone, on a worker of its own: what the master sends
	// for one mount, its start included, that reads everything.
	before := ms.Server.BytesSent()
	sameSums(t, "one mount", sums(t, open(t.TempDir())), want)
	one := ms.Server.BytesSent() - before
	if one == 0 {
		t.Fatal("the master counted no bytes sent for a mount that read everything")
	}

	state := t.TempDir()
	before = ms.Server.BytesSent()
	mounts := make([]string, n)
	for i := range mounts {
		mounts[i] = open(state)
	}
	for i, got := range sumsOfEach(t, mounts) {
		sameSums(t, fmt.Sprintf("mount %d", i), got, want)
	}
	many := ms.Server.BytesSent() - before
	t.Logf("master egress: one mount %d bytes, %d mounts on one worker %d bytes (%.3fx)", one, n, many, float64(many)/float64(one))
	if float64(many) > 1.05*float64(one) {
		var retries int64
		for _, ws := range all {
			if st := ws.Status(); st.Remote != nil {
				retries += st.Remote.Retries
			}
		}
		t.Errorf("%d mounts on one worker made the master send %d bytes, %.2fx one mount's %d; want at most 1.05x (calls tried again: %d)", n, many, float64(many)/float64(one), one, retries)
	}
}

// fetchOnceExport is bucketExport with a crawl's items beside it: small
// pages and a multi-chunk file.
func fetchOnceExport(t *testing.T) string {
	t.Helper()
	exp := bucketExport(t)
	for i := range 20 {
		writeFile(t, filepath.Join(exp, "items", fmt.Sprintf("page%02d.html", i)), randBytes(4096+i), 0o644)
	}
	writeFile(t, filepath.Join(exp, "items", "big.jsonl"), randBytes(5<<20+3), 0o644)
	return exp
}
