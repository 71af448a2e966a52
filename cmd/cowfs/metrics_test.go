package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/metrics/metricstest"
	"github.com/cowfs/cowfs/remote/pb"
)

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitClosed fails the test unless addr stops accepting connections
// within 30 s: a metrics server goes with its process.
func waitClosed(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still listens after the unmount", addr)
		}
	}
}

// TestMetrics runs a master and a remote mount, each with --metrics-addr
// on loopback, works in the mount, snapshots it and restores the
// snapshot, scraping each process over HTTP: the counters moved, the
// exposition passes promtool's lint, and a mount's metrics stop with it.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("s3cret\n"), 0o600)
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("nope\n"), 0o600)
	masterMetrics := freeAddr(t)
	addr := startServe(t, e.lower, "--token-file", tok, "--metrics-addr", masterMetrics)

	// Bad input changes nothing: no mount, a message.
	for _, c := range []struct{ addr, want string }{
		{"9420", "HOST:PORT"},
		{masterMetrics, "address already in use"},
	} {
		out, code := run(t, "--state", e.state, "mount", e.mnt, "--remote", addr, "--token-file", tok, "--metrics-addr", c.addr)
		if code == 0 || !strings.Contains(out, c.want) || mounted(t, e.mnt) {
			t.Errorf("--metrics-addr %s: exit %d, %q, want %q and no mount", c.addr, code, out, c.want)
		}
	}
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--remote", addr, "--token-file", bad); code == 0 {
		t.Errorf("a wrong token mounted: %s", out)
	}

	mountMetrics := freeAddr(t)
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--remote", addr, "--token-file", tok, "--metrics-addr", mountMetrics); code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	t.Cleanup(func() { run(t, "unmount", e.mnt) })
	if b, err := os.ReadFile(filepath.Join(e.mnt, "crawlab_project/spiders/quotes.py")); err != nil || string(b) != "print('q')\n" {
		t.Fatalf("read: %q, %v", b, err)
	}
	f, err := os.OpenFile(filepath.Join(e.mnt, "run.sh"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("echo again\n"), int64(len("#!/bin/sh\necho ran\n"))); err != nil {
		t.Fatal(err)
	}
	// Within the lower's bytes, unlike the append: a chunk brought up.
	if _, err := f.WriteAt([]byte("#"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, code := run(t, "--state", e.state, "snapshot", e.mnt, "snap1"); code != 0 {
		t.Fatalf("snapshot: exit %d: %s", code, out)
	}

	checkMountSeries(t, metricstest.Get(t, mountMetrics), e.mnt)

	m := metricstest.Get(t, masterMetrics)
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"cowfs_master_requests_total", []string{"method", pb.Export_Resolve_FullMethodName, "code", "OK"}},
		{"cowfs_master_requests_total", []string{"code", "Unauthenticated"}},
		{"cowfs_master_request_duration_seconds", []string{"method", pb.Export_Resolve_FullMethodName}},
		{"cowfs_master_sent_bytes_total", nil},
		{"cowfs_master_scan_duration_seconds", []string{"result", "ok"}},
		{"cowfs_master_auth_failures_total", []string{"reason", "token"}},
		{"go_goroutines", nil},
	} {
		if v := m.Value(c.name, c.labels...); v <= 0 {
			t.Errorf("master: %s%v = %v, want > 0", c.name, c.labels, v)
		}
	}

	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: exit %d: %s", code, out)
	}
	waitClosed(t, mountMetrics)

	// A restore serves its own.
	mnt2 := filepath.Join(t.TempDir(), "restored")
	os.Mkdir(mnt2, 0o755)
	unmountOnCleanup(t, mnt2)
	restoreMetrics := freeAddr(t)
	if out, code := run(t, "--state", e.state, "restore", "snap1", mnt2, "--metrics-addr", restoreMetrics); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, out)
	}
	if b, err := os.ReadFile(filepath.Join(mnt2, "run.sh")); err != nil || !strings.HasSuffix(string(b), "echo again\n") {
		t.Errorf("restored run.sh: %q, %v", b, err)
	}
	r := metricstest.Get(t, restoreMetrics)
	if v := r.Value("cowfs_fuse_read_bytes_total", "mountpoint", mnt2); v <= 0 {
		t.Errorf("restore: cowfs_fuse_read_bytes_total = %v, want > 0", v)
	}
	if out, code := run(t, "unmount", mnt2); code != 0 {
		t.Fatalf("unmount restore: exit %d: %s", code, out)
	}
	waitClosed(t, restoreMetrics)
}

// checkMountSeries checks the series of a remote mount at mnt that read,
// wrote over a lower file and took a snapshot: those counters moved, and
// those of failures did not.
func checkMountSeries(t *testing.T, s metricstest.Scrape, mnt string) {
	t.Helper()
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"cowfs_fuse_request_duration_seconds", []string{"op", "lookup", "mountpoint", mnt}},
		{"cowfs_fuse_request_duration_seconds", []string{"op", "read"}},
		{"cowfs_fuse_request_duration_seconds", []string{"op", "write"}},
		{"cowfs_fuse_read_bytes_total", nil},
		{"cowfs_fuse_written_bytes_total", nil},
		{"cowfs_copyups_total", nil},
		{"cowfs_copyup_chunks_total", nil},
		{"cowfs_snapshot_duration_seconds", []string{"result", "ok"}},
		{"cowfs_snapshot_writes_held_seconds", nil},
		{"cowfs_remote_fetch_duration_seconds", []string{"result", "ok"}},
		{"cowfs_remote_fetched_bytes_total", nil},
		{"cowfs_remote_cache_misses_total", nil},
		{"cowfs_cache_bytes", nil},
		{"process_resident_memory_bytes", nil},
	} {
		if v := s.Value(c.name, c.labels...); v <= 0 {
			t.Errorf("mount: %s%v = %v, want > 0", c.name, c.labels, v)
		}
	}
	for _, name := range []string{"cowfs_remote_retries_total", "cowfs_remote_corrupt_refetches_total", "cowfs_remote_read_errors_total",
		"cowfs_cache_evicted_objects_total", "cowfs_cache_limit_bytes"} {
		if v := s.Value(name); v != 0 {
			t.Errorf("mount: %s = %v, want 0", name, v)
		}
	}
}
