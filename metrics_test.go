package cowfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestWorkspaceMetrics: a workspace given a registry counts into it while
// several processes' worth of goroutines read and write at once, times
// its snapshots, and takes its metrics out again when closed, so that the
// same mountpoint opens again with the same registry.
func TestWorkspaceMetrics(t *testing.T) {
	base := t.TempDir()
	lower, mnt := filepath.Join(base, "lower"), filepath.Join(base, "mnt")
	for _, d := range []string{lower, mnt} {
		os.Mkdir(d, 0o755)
	}
	for i := range 4 {
		os.WriteFile(filepath.Join(lower, fmt.Sprint(i)), make([]byte, 64<<10), 0o644)
	}
	reg := prometheus.NewRegistry()
	spec := Spec{Mountpoint: mnt, State: filepath.Join(base, "state"), Lower: Lower{Dir: lower}, Options: Options{Metrics: reg}}
	ws := openT(t, spec)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			p := filepath.Join(mnt, fmt.Sprint(i))
			for range 20 {
				if _, err := os.ReadFile(p); err != nil {
					t.Error(err)
					return
				}
				f, err := os.OpenFile(p, os.O_WRONLY, 0)
				if err != nil {
					t.Error(err)
					return
				}
				f.WriteAt([]byte("x"), int64(i)<<10)
				f.Close()
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := ws.Snapshot(ctx, "during"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, err := ws.Snapshot(ctx, "during"); err == nil {
		t.Fatal("a second snapshot of the same name was taken")
	}
	want := map[string]float64{
		"cowfs_copyups_total":                4,
		"cowfs_copyup_chunks_total":          4,
		"cowfs_fuse_written_bytes_total":     4 * 20,
		"cowfs_snapshot_writes_held_seconds": 1,
	}
	for name, v := range want {
		if got := gathered(t, reg, name, nil); got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
	// The kernel's page cache answers most reads: each file was read
	// through cowfs at least once.
	if got := gathered(t, reg, "cowfs_fuse_read_bytes_total", nil); got < 4*64<<10 {
		t.Errorf("cowfs_fuse_read_bytes_total = %v, want at least %d", got, 4*64<<10)
	}
	if got := gathered(t, reg, "cowfs_snapshot_duration_seconds", map[string]string{"result": "error"}); got != 1 {
		t.Errorf("failed snapshots: %v, want 1", got)
	}
	if got := gathered(t, reg, "cowfs_fuse_request_duration_seconds", map[string]string{"op": "write"}); got != 4*20 {
		t.Errorf("write requests: %v, want %d", got, 4*20)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if err := ws.Close(); err != nil {
		t.Fatal(err)
	}
	if n, _ := testutil.GatherAndCount(reg); n != 0 {
		t.Errorf("%d series left in the registry after Close", n)
	}
	openT(t, spec)
	if got := gathered(t, reg, "cowfs_copyups_total", nil); got != 0 {
		t.Errorf("reopened: cowfs_copyups_total = %v, want 0", got)
	}
}

// gathered sums the series of name in reg whose labels include labels: a
// counter's value, a histogram's count; -1 if there is none.
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := -1.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for k, v := range labels {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == k && l.GetValue() == v
				}
				if !found {
					continue series
				}
			}
			if sum < 0 {
				sum = 0
			}
			sum += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}
