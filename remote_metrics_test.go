package cowfs_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// TestRemoteWorkspaceMetrics: a workspace over a real master on loopback
// counts what it fetched and how long each fetch took, evicts past its
// --cache-size and says so, and counts the reads that fail once the
// master is gone.
func TestRemoteWorkspaceMetrics(t *testing.T) {
	exp := t.TempDir()
	big, small := randBytes(3<<20), randBytes(100<<10)
	writeFile(t, filepath.Join(exp, "big"), big, 0o644)
	writeFile(t, filepath.Join(exp, "small"), small, 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: t.TempDir(),
		Lower:   cowfs.Lower{Remote: &cowfs.Remote{Addr: ms.Addr, CacheSize: 1 << 20, IOTimeout: 10 * time.Second}},
		Options: cowfs.Options{Metrics: reg}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	if b, err := os.ReadFile(filepath.Join(mnt, "big")); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("read big: %d bytes, %v", len(b), err)
	}
	value := func(name string) float64 {
		n, err := testutil.GatherAndCount(reg, name)
		if err != nil || n == 0 {
			t.Fatalf("%s: %d series, %v", name, n, err)
		}
		fams, _ := reg.Gather()
		var v float64
		for _, f := range fams {
			if f.GetName() == name {
				for _, m := range f.GetMetric() {
					v += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
		return v
	}
	if v := value("cowfs_remote_fetched_bytes_total"); v < float64(len(big)) {
		t.Errorf("fetched %v bytes, want at least %d", v, len(big))
	}
	if v := value("cowfs_remote_fetch_duration_seconds"); v == 0 {
		t.Error("no fetch timed")
	}
	if v := value("cowfs_cache_limit_bytes"); v != 1<<20 {
		t.Errorf("cache limit %v, want %d", v, 1<<20)
	}
	// Eviction runs in the background once a tenth of the limit came in.
	for deadline := time.Now().Add(20 * time.Second); value("cowfs_cache_evicted_objects_total") == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("nothing evicted in 20 s from a cache three times over its limit")
		}
	}
	if v := value("cowfs_remote_read_errors_total"); v != 0 {
		t.Errorf("%v read errors with the master up", v)
	}
	ms.Stop()
	if _, err := os.ReadFile(filepath.Join(mnt, "small")); err == nil {
		t.Fatal("read a file never fetched with the master gone")
	}
	if v := value("cowfs_remote_read_errors_total"); v == 0 {
		t.Error("a failed read was not counted")
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
