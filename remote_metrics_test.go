package cowfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	mnt := newMountpoint(t)
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
	// A chunk fetched ahead reaches its reader before the call that
	// brought it stores and counts it (TestEviction relies on the
	// count meaning stored): the count catches up within moments.
	for deadline := time.Now().Add(10 * time.Second); value("cowfs_remote_fetched_bytes_total") < float64(len(big)); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("fetched %v bytes 10 s after the read, want at least %d", value("cowfs_remote_fetched_bytes_total"), len(big))
		}
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
	// A fresh worker of a master that has no trace: none replayed.
	for _, name := range []string{"cowfs_remote_trace_objects", "cowfs_remote_trace_fetched_objects_total", "cowfs_remote_trace_errors_total"} {
		if v := value(name); v != 0 {
			t.Errorf("%s %v with no trace anywhere; want 0", name, v)
		}
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

// TestRemoteDirPrefetchErrors: a master that refuses every batched fetch
// fails the background fetch of a crawled directory's files; the reads
// still work, one object at a time, and the failures are counted in the
// status and in the metrics.
func TestRemoteDirPrefetchErrors(t *testing.T) {
	exp := t.TempDir()
	files := map[string][]byte{}
	for i := range 20 {
		name := fmt.Sprintf("m%03d.py", i)
		b := append([]byte(name+"\n"), randBytes(4000)...)
		writeFile(t, filepath.Join(exp, "spider", name), b, 0o644)
		files[name] = b
	}
	refuse := grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if strings.HasSuffix(info.FullMethod, "/GetMany") {
			return status.Error(codes.Internal, "test: no batches")
		}
		return h(srv, ss)
	})
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{ServerOptions: []grpc.ServerOption{refuse}})
	mnt := newMountpoint(t)
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: t.TempDir(),
		Lower:   cowfs.Lower{Remote: &cowfs.Remote{Addr: ms.Addr, IOTimeout: 10 * time.Second}},
		Options: cowfs.Options{Metrics: reg}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	listAndRead2(t, ws, files)
	for deadline := time.Now().Add(30 * time.Second); ws.Status().Remote.DirPrefetchErrors == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no failed directory prefetch counted in the status in 30 s")
		}
	}
	crawlFiles(t, mnt, files, len(files))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got float64
	for _, f := range fams {
		if f.GetName() == "cowfs_remote_dir_prefetch_errors_total" {
			got = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if got == 0 {
		t.Error("cowfs_remote_dir_prefetch_errors_total: none counted")
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
