package cowfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/metrics"
)

// Workspace is a mounted workspace.
type Workspace struct {
	spec Spec
	m    *fs.Mount
	// control serves the CLI (cowfs snapshot, status, unmount) on the
	// workspace's socket in the state directory (control.go).
	control *controlServer
	// store and refs keep the workspace's snapshots.
	store *object.DirStore
	refs  *refs.Dir
	// upper and source (the lower: a directory, a snapshot, a master's
	// export) and, for a remote lower, its version and counters are
	// what Status reports.
	upper, source string
	version       object.Digest
	remoteStatus  func() *RemoteStatus
	// push sends a snapshot to the remote lower's master or bucket;
	// nil without one.
	push func(ctx context.Context, store object.GetPutter, s refs.Snapshot) (int, error)
	// releases undo what Open set up beneath the mount (the lower's
	// descriptor, a pin, the remote lower's cache and client), run
	// newest first once the mount is gone or was never made.
	releases []func()
	// warm warms the remote lower's cache up; nil for a local lower.
	warm warmFunc
	// mx holds the workspace's metrics; nil without them.
	mx *metrics.Workspace
	// ops are the calls running that Close must end first.
	ops opGuard
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
	w := &Workspace{spec: s}
	defer func() {
		if err != nil {
			w.release()
		}
	}()
	step := stepTimer(s.Options.Logger)
	instrument, err := w.startMetrics(s)
	if err != nil {
		return nil, err
	}
	o, err := w.openLower(ctx)
	if err != nil {
		return nil, err
	}
	step("lower opened")
	o.Instrument = instrument
	// Nothing is mounted yet: a caller that gave up gets no mount.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if w.m, err = fs.New(s.Mountpoint, o); err != nil {
		return nil, err
	}
	step("mounted")
	// Last: the CLI reaches the workspace through its socket only once
	// it serves requests.
	if w.mx != nil {
		err = countMount(w.mx, w.m)
	}
	if err == nil {
		w.control, err = listenControl(statedir.ControlSocket(s.State, s.Mountpoint), w, s.Options.Logger)
	}
	if err != nil {
		if uerr := w.m.Unmount(); uerr != nil {
			err = fmt.Errorf("%w; and unmount: %v", err, uerr)
		}
		return nil, err
	}
	step("control socket listening")
	return w, nil
}

// stepTimer returns a function that logs, at debug level, each step of
// an open with how long it took since the one before: where a mount's
// start goes, for scripts/bench-mount and for an operator.
func stepTimer(log *slog.Logger) func(step string) {
	last := time.Now()
	return func(step string) {
		now := time.Now()
		log.Debug("open step", "step", step, "took", now.Sub(last))
		last = now
	}
}

// onRelease adds what undoes a step of Open.
func (w *Workspace) onRelease(f func()) { w.releases = append(w.releases, f) }

// release undoes Open's steps, newest first.
func (w *Workspace) release() {
	for i := len(w.releases) - 1; i >= 0; i-- {
		w.releases[i]()
	}
	w.releases = nil
}

// openLower prepares everything the mount serves: the upper and work
// directories (a restore's cleared first), the store and refs, and the
// lower, opened and pinned. What it sets up is released by w.release.
func (w *Workspace) openLower(ctx context.Context) (fs.Options, error) {
	s := w.spec
	o := s.fsOptions()
	switch {
	case s.Upper != "":
		o.Upper, o.Work = s.Upper, s.Work
	case s.Lower.Snapshot != "":
		// A restore always starts from a fresh upper: that is what
		// makes resuming from a checkpoint repeatable.
		o.Upper, o.Work = statedir.RestoreDirs(s.State, s.Mountpoint)
		if err := os.RemoveAll(filepath.Dir(o.Upper)); err != nil {
			return o, fmt.Errorf("clear previous restore at %s: %w", filepath.Dir(o.Upper), err)
		}
	default:
		o.Upper, o.Work = statedir.MountDirs(s.State, s.Mountpoint)
	}
	w.upper = o.Upper
	if s.Upper == "" {
		touch, err := recordMountpoint(o.Upper, s.Mountpoint)
		if err != nil {
			return o, err
		}
		w.onRelease(touch)
	}
	var err error
	if o.Store, err = object.OpenDirStore(statedir.ObjectsDir(s.State)); err != nil {
		return o, err
	}
	w.onRelease(func() { o.Store.Close() })
	if o.Refs, err = refs.Open(statedir.RefsDir(s.State)); err != nil {
		return o, err
	}
	w.store, w.refs = o.Store, o.Refs
	switch {
	case s.Lower.Remote != nil:
		// The work directory and the upper's metadata open while the
		// source resolves the version and the root is fetched: neither
		// needs the other, and each is a good part of a mount's start
		// (fs.OpenWork). The source's error comes first, as when they
		// ran in turn.
		opened := make(chan workOpened, 1)
		go func(o fs.Options) {
			step := stepTimer(s.Options.Logger)
			wk, err := fs.OpenWork(o)
			step("work and metadata opened, beside the remote")
			opened <- workOpened{wk, err}
		}(o)
		closeRemote, err := w.openRemote(ctx, &o, w.mx)
		wk := <-opened
		if err != nil {
			wk.w.Close()
			return o, err
		}
		w.onRelease(closeRemote)
		if wk.err != nil {
			return o, wk.err
		}
		// fs.New takes it over; this releases it if New is not reached.
		o.Opened = wk.w
		w.onRelease(wk.w.Close)
		// The version's objects stay in the store while it is mounted:
		// the pin keeps cowfs gc and eviction off them.
		key := statedir.RemotePinKey(s.Mountpoint)
		if err := o.Refs.PinWhileAlive(key, w.version); err != nil {
			return o, fmt.Errorf("pin version: %w", err)
		}
		w.onRelease(func() { o.Refs.UnpinMine(key) })
	case s.Lower.Snapshot != "":
		key := statedir.RestorePinKey(s.Mountpoint)
		snap, err := pinSnapshot(o.Store, o.Refs, s.Lower.Snapshot, key)
		if err != nil {
			return o, err
		}
		w.onRelease(func() { o.Refs.UnpinMine(key) })
		o.Lower = lower.NewObjects(o.Store, snap.Root.Object, snap.Root)
		o.Parent, w.source = snap.Name, "snapshot "+snap.Name
	default:
		dl, err := lower.OpenDir(s.Lower.Dir)
		if err != nil {
			return o, err
		}
		w.onRelease(func() { dl.Close() })
		o.Lower, o.LowerDir, w.source = dl, s.Lower.Dir, s.Lower.Dir
	}
	return o, nil
}

// workOpened is what fs.OpenWork returned.
type workOpened struct {
	w   *fs.Work
	err error
}

// pinSnapshot reads snapshot name and pins its root under key, which
// keeps the snapshot's objects for as long as this restore is mounted,
// even if its ref is removed. The store is held from the read to the pin:
// a gc that read the refs just after a "cowfs snapshots rm" would
// otherwise remove the objects under the new pin.
func pinSnapshot(store *object.DirStore, rd *refs.Dir, name, key string) (refs.Snapshot, error) {
	release, err := store.Hold(context.Background())
	if err != nil {
		return refs.Snapshot{}, err
	}
	defer release()
	snap, err := rd.Get(name)
	if err != nil {
		return refs.Snapshot{}, err
	}
	if err := rd.PinWhileAlive(key, snap.Root.Object); err != nil {
		return refs.Snapshot{}, fmt.Errorf("pin snapshot %s: %w", snap.Name, err)
	}
	return snap, nil
}

// fsOptions are fs.New's options for s, before the lower is opened.
func (s Spec) fsOptions() fs.Options {
	// The source findmnt shows: cowfs:DIR, cowfs:restore:NAME, or (set
	// by fill) cowfs:remote:ADDR[/PATH] and cowfs:restore:NAME@ADDR.
	fsname := "cowfs:" + s.Lower.Dir
	if s.Lower.Snapshot != "" {
		fsname = "cowfs:restore:" + s.Lower.Snapshot
	}
	o := fs.Options{
		FsName: fsname, Debug: s.Options.Debug,
		Passthrough: s.Options.Passthrough, PassthroughLower: s.Options.PassthroughLower,
		WritebackCache: s.Options.WritebackCache,
		ReadAhead:      s.Options.ReadAhead, Reserve: s.Options.Reserve,
		Logger: s.Options.Logger, AllowOther: s.Options.AllowOther,
		ReadOnly: s.Options.ReadOnly,
	}
	if s.Options.Uid != nil || s.Options.Gid != nil || s.Options.Umask != 0 {
		o.Shown = &fs.Shown{Uid: s.Options.Uid, Gid: s.Options.Gid, Umask: s.Options.Umask}
	}
	return o
}

// Dir is the mountpoint.
func (w *Workspace) Dir() string { return w.spec.Mountpoint }

// Spec is the spec the workspace was opened with, defaults filled in.
func (w *Workspace) Spec() Spec { return w.spec }

// Snapshot records the workspace's merged view, as it is at one instant,
// as the snapshot name in the state directory.
func (w *Workspace) Snapshot(ctx context.Context, name string) (*SnapshotResult, error) {
	ctx, end, err := w.ops.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", name, err)
	}
	defer end()
	if w.mx == nil {
		return w.m.Snapshot(ctx, name)
	}
	start := time.Now()
	r, err := w.m.Snapshot(ctx, name)
	var held time.Duration
	if r != nil {
		held = r.Hold
	}
	w.mx.ObserveSnapshot(time.Since(start), held, err)
	return r, err
}

// Push sends snapshot name, with every object the source lacks, to the
// source of the workspace's remote lower: a master (a pushed ref) or a
// bucket (a checkpoint key). It returns how many objects it sent.
func (w *Workspace) Push(ctx context.Context, name string) (int, error) {
	if w.push == nil {
		return 0, errors.New("this mount has no master to push to: only a mount --remote can push")
	}
	ctx, end, err := w.ops.begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("push %s: %w", name, err)
	}
	defer end()
	snap, err := w.refs.Get(name)
	if err != nil {
		return 0, err
	}
	n, err := w.push(ctx, w.store, snap)
	if err != nil {
		return n, fmt.Errorf("push %s: %w", name, err)
	}
	w.spec.Options.Logger.Info("pushed", "name", name, "objects", n)
	return n, nil
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
	ctx, end, err := w.ops.begin(ctx)
	if err != nil {
		return object.PrefetchProgress{}, fmt.Errorf("warmup: %w", err)
	}
	defer end()
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

// Status describes the workspace as cowfs status does.
func (w *Workspace) Status() *Status {
	st := &Status{Mountpoint: w.spec.Mountpoint, Source: w.source, Upper: w.upper, Pid: os.Getpid()}
	if !w.version.IsZero() {
		st.Version = w.version.String()
	}
	if w.remoteStatus != nil {
		st.Remote = w.remoteStatus()
	}
	return st
}

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
		// Calls still running (a snapshot whose caller gave up) end
		// before what they read is unmounted and released.
		w.ops.close()
		if w.unmounted.Load() {
			w.err = w.m.Close()
		} else {
			w.err = w.m.Unmount()
		}
		w.release()
		if w.err != nil {
			w.err = fmt.Errorf("close workspace %s: %w", w.spec.Mountpoint, w.err)
		}
	})
	return w.err
}
