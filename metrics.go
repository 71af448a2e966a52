package cowfs

import (
	"fmt"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/metrics"
)

// startMetrics registers the workspace's metrics, in s's registry or in
// one of its own when only an address is given, and serves that registry
// on MetricsAddr. It runs before anything is mounted, so that an address
// in use fails Open at once; what it starts, w.release stops, after the
// mount is gone. It returns the wrapper that times FUSE requests, nil
// without metrics.
func (w *Workspace) startMetrics(s Spec) (func(fuse.RawFileSystem) fuse.RawFileSystem, error) {
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
	w.mx = mx
	w.onRelease(func() {
		srv.Close()
		mx.Unregister()
	})
	return mx.FUSE.Wrap, nil
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
			Hits: s.Hits, Misses: s.Misses, FetchedBytes: s.BytesFetched, Retries: rl.src.Retries(),
			Corrupt: s.Corrupt, Errors: s.Errors, Evicted: s.Evicted, DirPrefetchErrors: s.DirPrefetchErrors,
			TraceObjects: s.TraceObjects, TraceFetched: s.TraceFetched, TraceErrors: s.TraceErrors,
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
