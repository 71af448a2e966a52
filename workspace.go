package cowfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/fs/control"
)

// Workspace is a mounted workspace.
type Workspace struct {
	spec Spec
	m    *fs.Mount
	// control serves the CLI (cowfs snapshot, status, unmount) on the
	// workspace's socket in the state directory.
	control *control.Server
	// closeRemote closes the remote lower's cache and client; a no-op
	// for a local lower.
	closeRemote func()
	// handler answers snapshots: the mount, timed when there are metrics.
	handler control.Handler
	// closeMetrics stops serving Options.MetricsAddr and takes the
	// workspace's metrics out of their registry; a no-op without them.
	closeMetrics func()
	// warm warms the remote lower's cache up; nil for a local lower.
	warm warmFunc
	// unmounted is set once Wait saw the mount go from outside.
	unmounted atomic.Bool
	once      sync.Once
	err       error
}

// Open validates s and mounts it, and returns once the workspace serves
// requests: for a remote lower, once the export's root was fetched and
// verified. A workspace that cannot be opened says why and leaves nothing
// mounted, pinned or open. ctx bounds the setup (the calls to a master),
// not the workspace's life; Close ends that.
func Open(ctx context.Context, s Spec) (_ *Workspace, err error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	s, err = s.withDefaults()
	if err != nil {
		return nil, err
	}
	o := s.fsOptions()
	w := &Workspace{spec: s, closeRemote: func() {}, closeMetrics: func() {}}
	if s.Lower.Snapshot != "" && s.Upper == "" {
		// A restore always starts from a fresh upper: that is what
		// makes resuming from a checkpoint repeatable.
		u, _ := statedir.RestoreDirs(s.State, s.Mountpoint)
		if err := os.RemoveAll(filepath.Dir(u)); err != nil {
			return nil, fmt.Errorf("clear previous restore at %s: %w", filepath.Dir(u), err)
		}
	}
	mx, err := w.startMetrics(s, &o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			w.closeMetrics()
		}
	}()
	if s.Lower.Remote != nil {
		if w.closeRemote, w.warm, err = openRemote(ctx, s, &o, mx); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			w.closeRemote()
		}
	}()
	// Nothing is mounted yet: a caller that gave up gets no mount.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if w.m, err = fs.New(s.Mountpoint, o); err != nil {
		return nil, err
	}
	w.handler = w.m
	if mx != nil {
		w.handler = timedSnapshots{Mount: w.m, mx: mx}
		err = countMount(mx, w.m)
	}
	// Last: the CLI reaches the workspace through its socket only once
	// it serves requests.
	if err == nil {
		w.control, err = control.Listen(statedir.ControlSocket(s.State, s.Mountpoint), controlHandler{w.handler, w}, s.Options.Logger)
	}
	if err != nil {
		if uerr := w.m.Unmount(); uerr != nil {
			err = fmt.Errorf("%w; and unmount: %v", err, uerr)
		}
		return nil, err
	}
	return w, nil
}

// fsOptions are fs.New's options for s, before a remote lower fills in
// its part.
func (s Spec) fsOptions() fs.Options {
	fsname := "cowfs:" + s.Lower.Dir
	if s.Lower.Snapshot != "" {
		fsname = "cowfs:snapshot:" + s.Lower.Snapshot
	}
	o := fs.Options{
		Lower: s.Lower.Dir, State: s.State, Upper: s.Upper, Work: s.Work,
		FsName: fsname, Debug: s.Options.Debug,
		Passthrough: s.Options.Passthrough, PassthroughLower: s.Options.PassthroughLower,
		WritebackCache: s.Options.WritebackCache,
		ReadAhead:      s.Options.ReadAhead, Reserve: s.Options.Reserve,
		Logger: s.Options.Logger,
	}
	if s.Lower.Remote == nil {
		// A snapshot on a master is opened as a remote layer instead.
		o.Snapshot = s.Lower.Snapshot
	}
	return o
}

// Dir is the mountpoint.
func (w *Workspace) Dir() string { return w.spec.Mountpoint }

// Spec is the spec the workspace was opened with, defaults filled in.
func (w *Workspace) Spec() Spec { return w.spec }

// Snapshot records the workspace's merged view, as it is at one instant,
// as the snapshot name in the state directory.
func (w *Workspace) Snapshot(ctx context.Context, name string) (*control.SnapshotResult, error) {
	return w.handler.Snapshot(ctx, name)
}

// Push sends snapshot name, with every object the master lacks, to the
// master of the workspace's remote lower. It returns how many objects it
// sent.
func (w *Workspace) Push(ctx context.Context, name string) (int, error) {
	return w.m.Push(ctx, name)
}

// Warmup fetches every file and directory beneath paths (relative to the
// mountpoint; none: all of it) of a remote workspace's lower into the
// machine's cache, so that reading them later needs no master. It calls
// progress (if not nil) every warmupTick while it runs. What the upper
// changed is not looked at: a path names the export's.
func (w *Workspace) Warmup(ctx context.Context, paths []string, progress func(object.PrefetchProgress)) (object.PrefetchProgress, error) {
	if w.warm == nil {
		return object.PrefetchProgress{}, errors.New("not a remote workspace: its lower is on this machine")
	}
	wu := w.warm(ctx, paths)
	t := time.NewTicker(warmupTick)
	defer t.Stop()
	for {
		select {
		case <-wu.Done():
			return wu.Progress(), wu.Err()
		case <-t.C:
			if progress != nil {
				progress(wu.Progress())
			}
		}
	}
}

// warmupTick is how often a warmup tells its progress.
const warmupTick = 200 * time.Millisecond

// controlHandler answers the control socket: the mount's handler, and
// the workspace's warmup.
type controlHandler struct {
	control.Handler
	w *Workspace
}

func (h controlHandler) Warmup(ctx context.Context, paths []string, progress func(object.PrefetchProgress)) (object.PrefetchProgress, error) {
	return h.w.Warmup(ctx, paths, progress)
}

// Status describes the workspace as cowfs status does.
func (w *Workspace) Status() *control.Status { return w.m.Status() }

// Wait blocks until the workspace is unmounted, by Close or from outside
// (cowfs unmount, umount(8)); Close must still be called.
func (w *Workspace) Wait() {
	w.m.Wait()
	w.unmounted.Store(true)
}

// Close unmounts the workspace, unless it was unmounted from outside, and
// releases what it holds. Metadata is flushed whether or not the kernel
// let go of the mount.
func (w *Workspace) Close() error {
	w.once.Do(func() {
		w.control.Close()
		if w.unmounted.Load() {
			w.err = w.m.Close()
		} else {
			w.err = w.m.Unmount()
		}
		w.closeRemote()
		w.closeMetrics()
		if w.err != nil {
			w.err = fmt.Errorf("close workspace %s: %w", w.spec.Mountpoint, w.err)
		}
	})
	return w.err
}
