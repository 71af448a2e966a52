package metrics

import (
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/cowfs/cowfs/metrics/metricstest"
)

// notRequests are the methods of fuse.RawFileSystem that answer no
// request of the kernel.
var notRequests = map[string]bool{"String": true, "SetDebug": true, "Init": true, "OnUnmount": true}

// TestFUSEMeasuresEveryRequest calls every request method of the wrapped
// filesystem once and checks that each was counted once, under its own
// operation: a method go-fuse adds to RawFileSystem, which the wrapper
// would pass through unmeasured, fails here.
func TestFUSEMeasuresEveryRequest(t *testing.T) {
	reg := prometheus.NewRegistry()
	f, err := NewFUSE(reg)
	if err != nil {
		t.Fatal(err)
	}
	raw := f.Wrap(fuse.NewDefaultRawFileSystem())
	rt := reflect.TypeFor[fuse.RawFileSystem]()
	seen := map[string]bool{}
	for i := range rt.NumMethod() {
		m := rt.Method(i)
		if notRequests[m.Name] {
			continue
		}
		before := counts(t, reg)
		fn := reflect.ValueOf(raw).MethodByName(m.Name)
		args := make([]reflect.Value, fn.Type().NumIn())
		for j := range args {
			args[j] = reflect.Zero(fn.Type().In(j))
		}
		fn.Call(args)
		after := counts(t, reg)
		var moved []string
		for op, n := range after {
			if n != before[op] {
				moved = append(moved, op)
			}
		}
		op := strings.ToLower(m.Name)
		if m.Name == "Writev" {
			// The default filesystem has no Writev: go-fuse calls
			// Write next, which counts.
			op = ""
		}
		switch {
		case op == "" && len(moved) == 0:
		case len(moved) != 1 || moved[0] != op || after[op] != before[op]+1:
			t.Errorf("%s: moved %v, want op %q once", m.Name, moved, op)
		}
		seen[op] = true
	}
	for _, name := range opNames {
		if !seen[name] {
			t.Errorf("op %q is named but no method of RawFileSystem is", name)
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// counts returns each operation's count of requests.
func counts(t *testing.T, g prometheus.Gatherer) map[string]uint64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	c := map[string]uint64{}
	for _, f := range fams {
		if f.GetName() != "cowfs_fuse_request_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			c[label(m, "op")] = m.GetHistogram().GetSampleCount()
		}
	}
	return c
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestListenClose: a bad address is refused before anything listens; a
// served registry scrapes clean; Close leaves nothing listening.
func TestListenClose(t *testing.T) {
	for _, bad := range []string{"9420", "localhost", ""} {
		if s, err := Listen(bad, prometheus.NewRegistry(), nil); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
			s.Close()
			t.Errorf("Listen(%q): %v, want a HOST:PORT error", bad, err)
		}
	}
	reg := NewRegistry()
	w, err := NewWorkspace(reg, "/mnt/ws")
	if err != nil {
		t.Fatal(err)
	}
	w.ObserveSnapshot(2*time.Second, 30*time.Millisecond, nil)
	if err := w.CountMount(func() MountCounts { return MountCounts{CopyUps: 3, ChunksCopiedUp: 5} }); err != nil {
		t.Fatal(err)
	}
	m, err := NewMaster(reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CountMaster(func() MasterCounts { return MasterCounts{SentBytes: 7, TokenRefused: 1} }); err != nil {
		t.Fatal(err)
	}
	s, err := Listen("127.0.0.1:0", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	got := metricstest.Get(t, addr)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"cowfs_copyups_total", []string{"mountpoint", "/mnt/ws"}, 3},
		{"cowfs_copyup_chunks_total", nil, 5},
		{"cowfs_snapshot_duration_seconds", []string{"result", "ok"}, 1},
		{"cowfs_snapshot_writes_held_seconds", nil, 1},
		{"cowfs_master_sent_bytes_total", nil, 7},
		{"cowfs_master_auth_failures_total", []string{"reason", "token"}, 1},
		{"cowfs_master_auth_failures_total", []string{"reason", "tls"}, 0},
	} {
		if v := got.Value(c.name, c.labels...); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	if got.Value("go_goroutines") <= 0 || got.Value("process_open_fds") <= 0 {
		t.Errorf("no Go or process collector in the scrape: %v", got.Names(""))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still listens after Close", addr)
	}
	// The workspace's metrics leave the registry, so that it can be
	// opened again.
	w.Unregister()
	if _, err := NewWorkspace(reg, "/mnt/ws"); err != nil {
		t.Errorf("after Unregister: %v", err)
	}
}

// BenchmarkFUSEWrap is what the wrapper adds to a request: the bare
// default filesystem, then the same wrapped.
func BenchmarkFUSEWrap(b *testing.B) {
	f, err := NewFUSE(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		raw  fuse.RawFileSystem
	}{{"bare", fuse.NewDefaultRawFileSystem()}, {"measured", f.Wrap(fuse.NewDefaultRawFileSystem())}} {
		b.Run(c.name, func(b *testing.B) {
			in, out := &fuse.GetAttrIn{}, &fuse.AttrOut{}
			for b.Loop() {
				c.raw.GetAttr(nil, in, out)
			}
		})
	}
}
