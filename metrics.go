package cowfs

import (
	"context"
	"fmt"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/fs/control"
	"github.com/cowfs/cowfs/metrics"
)

// startMetrics registers the workspace's metrics, in s's registry or in
// one of its own when only an address is given, and serves that registry
// on MetricsAddr. It runs before anything is mounted, so that an address
// in use fails Open at once; what it starts, Close (or a failed Open)
// stops.
func (w *Workspace) startMetrics(s Spec, o *fs.Options) (*metrics.Workspace, error) {
	reg := s.Options.Metrics
	if reg == nil && s.Options.MetricsAddr == "" {
		return nil, nil
	}
	if reg == nil {
		reg = metrics.NewRegistry()
	}
	mx, err := metrics.NewWorkspace(reg, s.Mountpoint)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	var srv *metrics.Server
	if s.Options.MetricsAddr != "" {
		if srv, err = metrics.Listen(s.Options.MetricsAddr, reg, s.Options.Logger); err != nil {
			mx.Unregister()
			return nil, err
		}
	}
	w.closeMetrics = func() {
		srv.Close()
		mx.Unregister()
	}
	o.Instrument = mx.FUSE.Wrap
	return mx, nil
}

// countMount registers the counters of the mount once it is made.
func countMount(mx *metrics.Workspace, m *fs.Mount) error {
	return mx.CountMount(func() metrics.MountCounts {
		c := m.Counters()
		return metrics.MountCounts{CopyUps: c.CopyUps, ChunksCopiedUp: c.ChunksCopiedUp}
	})
}

// count registers the remote lower's counters and times its fetches.
func (rl *remoteLower) count(mx *metrics.Workspace) error {
	rl.cache.ObserveFetches(mx.ObserveFetch)
	if err := mx.RegisterFetches(); err != nil {
		return err
	}
	err := mx.CountRemote(func() metrics.RemoteCounts {
		s := rl.cache.Stats()
		return metrics.RemoteCounts{
			Hits: s.Hits, Misses: s.Misses, FetchedBytes: s.BytesFetched, Retries: rl.client.Retries(),
			Corrupt: s.Corrupt, Errors: s.Errors, Evicted: s.Evicted,
		}
	})
	if err != nil {
		return err
	}
	store := rl.store
	return mx.CountCache(rl.r.CacheSize, func() (int64, error) {
		var n int64
		err := store.Each(func(o object.StoredObject) error {
			n += o.Size
			return nil
		})
		return n, err
	})
}

// timedSnapshots is the mount as the control socket and Workspace.Snapshot
// see it, with every snapshot timed.
type timedSnapshots struct {
	*fs.Mount
	mx *metrics.Workspace
}

func (t timedSnapshots) Snapshot(ctx context.Context, name string) (*control.SnapshotResult, error) {
	start := time.Now()
	r, err := t.Mount.Snapshot(ctx, name)
	var held time.Duration
	if r != nil {
		held = r.Hold
	}
	t.mx.ObserveSnapshot(time.Since(start), held, err)
	return r, err
}
