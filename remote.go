package cowfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/metrics"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/s3store"
)

// remoteRecord is kept beside a remote workspace's upper: the upper's
// changes were made over this version, so opening the same mountpoint
// again (after an unmount or a crash) mounts the same version, never a
// newer one that would mix with them.
type remoteRecord struct {
	Addr    string `json:"addr"`
	Path    string `json:"path"`
	Version string `json:"version"`
}

// versionSource is where a remote lower's versions and objects come
// from: a master (*remote.Client) or a bucket (s3store.Source). The
// machine's cache fetches through it; the mount resolves, pins and
// reports through the same calls whichever it is.
type versionSource interface {
	remote.Fetcher
	// Resolve returns the newest version of the subtree path ("" all).
	Resolve(ctx context.Context, path string) (object.Digest, error)
	// Retries counts calls made again, for status and metrics.
	Retries() int64
	Close() error
}

var (
	_ versionSource = (*remote.Client)(nil)
	_ versionSource = s3store.Source{}
)

// remoteLower is a remote lower being opened: its source and cache, and
// the spec it serves.
type remoteLower struct {
	s   Spec
	r   *Remote
	src versionSource
	// master is src when it is a master, bucket the store when src is
	// a bucket: a push and a restore go to whichever it is.
	master *remote.Client
	bucket *s3store.Store
	// within is the subtree mounted within the version: a bucket's
	// versions are of the whole published tree, a master resolves the
	// subtree to a version of its own.
	within string
	// record is what pin resolved, written by keepRecord.
	record *remoteRecord
	store  *object.DirStore
	cache  *remote.Cache
	log    *slog.Logger
	// version is what the mount reads, once pinned: the trace records it.
	version object.Digest
	// fromShared is the trace the source (its traceKeeper) gave this
	// mount, once it came: one the mount would put back unchanged is
	// not sent. ownTrace is set once the mount replays this worker's.
	fromShared atomic.Pointer[remote.Trace]
	ownTrace   atomic.Bool
	// held is a bucket mount's lease on its version (decision 0078).
	held *s3store.Hold
	// stopLoad ends a bucket's load of its pack indexes, if one runs.
	stopLoad context.CancelFunc
}

// name names the source in messages: "master HOST:PORT" or the bucket's
// s3:// URL.
func (rl *remoteLower) name() string {
	if rl.r.IsBucket() {
		return rl.r.Addr
	}
	return "master " + rl.r.Addr
}

// named puts the source's name before err, unless it is a bucket's and
// err names it already, as s3store's errors do.
func (rl *remoteLower) named(err error) error {
	if b := rl.bucket; b != nil && strings.Contains(err.Error(), b.URL()) {
		return err
	}
	return fmt.Errorf("%s: %w", rl.name(), err)
}

// openRemote opens the spec's remote lower and fills in its part of o
// and w (the lower, its version, its source, the push and the status
// counters). It returns once the export's root was fetched and verified,
// with what closes the cache and the client; the caller pins the version.
//
// With a snapshot in s.Lower it restores that snapshot of the master (or
// checkpoint of the bucket) instead: its version comes from the master's
// ref (the bucket's checkpoint key), beneath a fresh upper.
func (w *Workspace) openRemote(ctx context.Context, o *fs.Options, mx *metrics.Workspace) (cleanup func(), err error) {
	s := w.spec
	rl := &remoteLower{s: s, r: s.Lower.Remote, log: s.Options.Logger}
	step := stepTimer(rl.log)
	if err := rl.dial(ctx); err != nil {
		return nil, err
	}
	step("remote: source and cache opened")
	closeAll := func() {
		if rl.stopLoad != nil {
			rl.stopLoad()
		}
		rl.keepTrace()
		if rl.held != nil {
			rl.held.Release()
		}
		rl.cache.Close()
		rl.store.Close()
		rl.src.Close()
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	if mx != nil {
		if err := rl.count(mx); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	var v object.Digest
	if snap := s.Lower.Snapshot; snap != "" {
		if v, err = rl.getRef(ctx, snap); err != nil {
			return nil, rl.named(err)
		}
		if rl.bucket != nil {
			// A restore holds its checkpoint's version as a mount
			// holds its own: cowfs snapshots rm --remote may remove
			// the checkpoint's key while the restore reads it. The
			// key is read again once the lease is in and no gc runs:
			// one removed meanwhile may have lost its objects.
			if err := rl.hold(ctx, v, true); err != nil {
				return nil, err
			}
			if _, err := rl.getRef(ctx, snap); err != nil {
				return nil, rl.named(err)
			}
		}
		o.Parent = snap
	} else if v, err = rl.pin(ctx); err != nil {
		return nil, err
	}
	step("remote: version resolved")
	if rl.bucket != nil {
		if held, _ := rl.store.Has(ctx, v); !held {
			// The version object and its root tree are loose, the
			// trees beneath packed: the pack indexes load beside the
			// two, for the rest; the load outlives ctx, which ends
			// once the mount serves, and ends with the mount.
			var loadCtx context.Context
			loadCtx, rl.stopLoad = context.WithCancel(context.WithoutCancel(ctx))
			rl.bucket.LoadIndexes(loadCtx)
		}
	}
	lower, root, err := remote.OpenVersion(ctx, rl.cache, v)
	if err == nil && rl.within != "" {
		lower, root, err = descend(ctx, rl.cache, v, root, rl.within)
	}
	if err != nil {
		return nil, rl.named(err)
	}
	step("remote: root fetched")
	if err := rl.keepRecord(); err != nil {
		return nil, err
	}
	step("remote: version recorded")
	rl.fill(w, o, lower, v)
	rl.learn(v)
	if rl.bucket != nil && !rl.r.Prefetch && !rl.r.NoDirPrefetch {
		// A bucket sends no trees with the version (a master does).
		rl.cache.FetchTrees(root.Object)
	}
	if rl.r.Prefetch {
		rl.cache.PrefetchVersion(root.Object)
	}
	w.warm = func(ctx context.Context, paths []string) *remote.Warmup {
		return rl.cache.Warm(ctx, root.Object, paths)
	}
	return closeAll, nil
}

// tracePath is where the trace of what mounts of this export read is
// kept, beside the machine's cache (decision 0064): one per source,
// subtree and snapshot, whatever the version, as objects are named by
// their content and a new version of a spider shares most of its
// objects with the last.
func (rl *remoteLower) tracePath() string {
	h := sha256.Sum256([]byte(rl.r.Addr + "\x00" + rl.sub() + "\x00" + rl.s.Lower.Snapshot))
	return filepath.Join(statedir.TracesDir(rl.s.State), hex.EncodeToString(h[:16]))
}

// learn starts fetching what the last mount of this export read, in its
// order, and records what this one's tasks read, for the next; unless
// the spec says not to. The last mount is this worker's, or else any
// worker's, as the source (a master or a bucket) kept it (decision
// 0070): that trace is asked for in the background. A trace that cannot
// be read is logged and left alone: the mount goes on without it, and
// replaces it at unmount.
func (rl *remoteLower) learn(v object.Digest) {
	if rl.r.NoLearnedPrefetch {
		return
	}
	rl.version = v
	path := rl.tracePath()
	t, err := remote.ReadTrace(path)
	switch {
	case err == nil:
		rl.log.Info("fetching what the last mount of this export read, in its order", "trace", path, "objects", len(t.Entries), "recorded_over", t.Version.String())
		rl.ownTrace.Store(true)
		rl.cache.ReplayTrace(t.Entries)
	case !errors.Is(err, os.ErrNotExist):
		rl.log.Warn("ignoring the trace of what the last mount read", "err", err)
	case rl.keeper() != nil:
		rl.cache.ReplayTraceFrom(rl.sharedTrace)
	}
	rl.cache.RecordTrace(remote.TraceObjects, remote.TraceBytes)
}

// A traceKeeper keeps the last trace any worker's mount of an export
// gave it, for other workers' first mounts (decision 0070): a master
// (*remote.Client) or a bucket (*s3store.Store).
type traceKeeper interface {
	GetTrace(ctx context.Context, sub, snapshot string) (*remote.Trace, error)
	PutTrace(ctx context.Context, sub, snapshot string, t *remote.Trace) error
}

// keeper returns the source as a traceKeeper.
func (rl *remoteLower) keeper() traceKeeper {
	switch {
	case rl.master != nil:
		return rl.master
	case rl.bucket != nil:
		return rl.bucket
	}
	return nil
}

// keeperName names the keeper in the status (TraceStatus.Source) and
// the log.
func (rl *remoteLower) keeperName() string {
	if rl.bucket != nil {
		return "bucket"
	}
	return "master"
}

// traceFrom is TraceStatus.Source: where the trace the mount replays came
// from, "" if none.
func (rl *remoteLower) traceFrom() string {
	switch {
	case rl.ownTrace.Load():
		return "worker"
	case rl.fromShared.Load() != nil:
		return rl.keeperName()
	}
	return ""
}

// sub is the mount's subtree of the export, clean (the spec's was
// checked when the workspace was opened).
func (rl *remoteLower) sub() string {
	sub, _ := names.CleanRel(rl.r.Path)
	return sub
}

// sharedTrace gets the source's trace of this export, for a worker that
// has none of its own.
func (rl *remoteLower) sharedTrace(ctx context.Context) (*remote.Trace, error) {
	ctx, cancel := context.WithTimeout(ctx, remote.TraceCallTimeout)
	defer cancel()
	t, err := rl.keeper().GetTrace(ctx, rl.sub(), rl.s.Lower.Snapshot)
	if err != nil {
		return nil, err
	}
	rl.fromShared.Store(t)
	rl.log.Info("fetching what another worker's mount of this export read, in its order", "from", rl.keeperName(), "objects", len(t.Entries), "recorded_over", t.Version.String())
	return t, nil
}

// keepTrace writes what this mount's tasks read, if they read anything,
// for the next mount of the export, and gives it to the source (a master
// or a bucket) for other workers' first mounts; a failure is logged, and
// never fails the unmount.
func (rl *remoteLower) keepTrace() {
	if rl.version.IsZero() {
		return
	}
	entries := rl.cache.Trace()
	if len(entries) == 0 {
		return // the last mount's trace may serve the next better
	}
	t := &remote.Trace{Version: rl.version, Entries: entries}
	if err := remote.WriteTrace(rl.tracePath(), t); err != nil {
		rl.log.Warn("could not keep the trace of what this mount read", "err", err)
	}
	k := rl.keeper()
	if k == nil {
		return
	}
	if had := rl.fromShared.Load(); had != nil && had.Version == t.Version && slices.Equal(had.Entries, t.Entries) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), remote.TraceCallTimeout)
	defer cancel()
	if err := k.PutTrace(ctx, rl.sub(), rl.s.Lower.Snapshot, t); err != nil {
		rl.log.Warn("could not give the source the trace of what this mount read", "source", rl.keeperName(), "err", err)
	}
}

// getRef returns the version of snapshot name the source keeps: a
// master's pushed ref, or a bucket's checkpoint.
func (rl *remoteLower) getRef(ctx context.Context, name string) (object.Digest, error) {
	if rl.bucket != nil {
		return rl.bucket.Checkpoint(ctx, name)
	}
	return rl.master.GetRef(ctx, name)
}

// warmFunc starts fetching what lies beneath paths of a remote lower.
type warmFunc func(ctx context.Context, paths []string) *remote.Warmup

// descend returns the subtree sub of version v, whose root is root, as
// a lower layer with its directory's entry.
func descend(ctx context.Context, g object.Getter, v object.Digest, root object.Entry, sub string) (*lower.Objects, object.Entry, error) {
	e := root
	for _, name := range strings.Split(sub, "/") {
		b, err := g.Get(ctx, e.Object)
		if err != nil {
			return nil, object.Entry{}, fmt.Errorf("version %s path %q: %w", v.Short(), sub, err)
		}
		t, err := object.DecodeTree(b)
		if err != nil {
			return nil, object.Entry{}, fmt.Errorf("version %s path %q: %w", v.Short(), sub, err)
		}
		c, ok := t.Lookup(name)
		if !ok {
			return nil, object.Entry{}, fmt.Errorf("version %s has no %q: %w", v.Short(), sub, os.ErrNotExist)
		}
		if c.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil, object.Entry{}, fmt.Errorf("%q of version %s is not a directory", sub, v.Short())
		}
		e = *c
	}
	// The subtree's own tree must be there for the mount to show
	// anything, as OpenVersion checks for the root's.
	if _, err := g.Get(ctx, e.Object); err != nil {
		return nil, object.Entry{}, fmt.Errorf("version %s path %q: %w", v.Short(), sub, err)
	}
	return lower.NewObjects(g, e.Object, e), e, nil
}

// dial opens the source, a master or a bucket, and the state
// directory's cache over it.
func (rl *remoteLower) dial(ctx context.Context) error {
	var src versionSource
	if rl.r.IsBucket() {
		s, err := rl.openBucket(ctx)
		if err != nil {
			return err
		}
		src, rl.bucket = s, s.S
		rl.within = rl.sub()
	} else {
		client, err := rl.dialMaster()
		if err != nil {
			return err
		}
		src, rl.master = client, client
	}
	if err := rl.openCache(src); err != nil {
		src.Close()
		return err
	}
	rl.src = src
	return nil
}

// openBucket opens the bucket, which says at once whether it is there
// and takes the credentials: with a request of its own, unless the
// mount's first request says the same: the newest version's listing (no
// version given, no snapshot, no record of one) or, on a remount (a
// record), the question whether the bucket still has the recorded
// version, whose failure then fails the mount (checkKept, strict). A
// remount that finds the version's objects held needs no other request,
// and must not mount over a bucket it cannot read. Each request with its
// retries is bounded by --io-timeout, which the cache bounds a read by.
func (rl *remoteLower) openBucket(ctx context.Context) (s3store.Source, error) {
	r := rl.r
	bucket, prefix, err := s3store.ParseURL(r.Addr)
	if err != nil {
		return s3store.Source{}, err
	}
	_, statErr := os.Stat(rl.recordPath())
	recorded := statErr == nil
	asksFirst := rl.s.Lower.Snapshot == "" && (r.Version == "" || recorded)
	st, err := s3store.Open(ctx, s3store.Config{
		Bucket: bucket, Prefix: prefix, Endpoint: r.S3Endpoint, CAFile: r.S3CA,
		Timeout: r.IOTimeout, NoCheck: asksFirst, Log: rl.log,
		IndexCache: statedir.BucketIndexesDir(rl.s.State),
	})
	if err != nil {
		return s3store.Source{}, err
	}
	return s3store.Source{Fetcher: s3store.Fetcher{S: st}}, nil
}

// dialMaster prepares the client of the master.
func (rl *remoteLower) dialMaster() (*remote.Client, error) {
	r := rl.r
	token := r.Token
	if r.TokenFile != "" {
		b, err := os.ReadFile(r.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	return remote.Dial(remote.ClientConfig{
		Addr: r.Addr, Token: token, CAFile: r.TLSCA,
		CallTimeout: min(10*time.Second, r.IOTimeout), Timeout: r.IOTimeout, Logger: rl.log,
	})
}

// openCache opens the state directory's object store as the cache of
// what src gives.
func (rl *remoteLower) openCache(src remote.Fetcher) error {
	store, err := object.OpenDirStore(statedir.ObjectsDir(rl.s.State))
	if err != nil {
		return err
	}
	rd, err := refs.Open(statedir.RefsDir(rl.s.State))
	if err != nil {
		return err
	}
	cache, err := remote.NewCache(store, src, rl.log)
	if err != nil {
		return err
	}
	if rl.r.CacheSize > 0 {
		cache.SetLimit(rl.r.CacheSize, rd)
	}
	cache.SetDirPrefetch(!rl.r.NoDirPrefetch)
	if f := rl.s.Options.Fetching; f != nil {
		cache.SetFetching(f)
	}
	rl.store, rl.cache = store, cache
	return nil
}

// recordPath is where the version the upper was made over is recorded.
func (rl *remoteLower) recordPath() string {
	if rl.s.Upper != "" {
		return filepath.Join(rl.s.Work, "remote.json")
	}
	u, _ := statedir.MountDirs(rl.s.State, rl.s.Mountpoint)
	return filepath.Join(filepath.Dir(u), "remote.json")
}

// RecordedMaster returns the address of the master the workspace at
// mountpoint under state was mounted from (mount --remote, with the upper
// under state), as recorded beside its upper; "" if it was not mounted
// from one. cowfs push sends a snapshot of it there.
func RecordedMaster(state, mountpoint string) (string, error) {
	rl := remoteLower{s: Spec{State: state, Mountpoint: mountpoint}}
	b, err := os.ReadFile(rl.recordPath())
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var rec remoteRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return "", fmt.Errorf("%s: %w", rl.recordPath(), err)
	}
	return rec.Addr, nil
}

// pin returns the version to mount: the one the upper was made over, if
// it was made over one; else the spec's, or the source's newest, which
// keepRecord records once the lower opened.
func (rl *remoteLower) pin(ctx context.Context) (object.Digest, error) {
	r, mnt := rl.r, rl.s.Mountpoint
	sub, _ := names.CleanRel(r.Path)
	recPath := rl.recordPath()
	var want object.Digest
	if r.Version != "" {
		want, _ = object.ParseDigest(r.Version)
	}
	if b, err := os.ReadFile(recPath); err == nil {
		var rec remoteRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			return object.Zero, fmt.Errorf("%s: %w", recPath, err)
		}
		if rec.Addr != r.Addr || rec.Path != sub {
			return object.Zero, fmt.Errorf("the upper of %s holds changes made over %s path %q, not %s path %q: mount another mountpoint, or remove %s to discard them",
				mnt, rec.Addr, rec.Path, r.Addr, sub, filepath.Dir(recPath))
		}
		v, err := object.ParseDigest(rec.Version)
		if err != nil {
			return object.Zero, fmt.Errorf("%s: %w", recPath, err)
		}
		if !want.IsZero() && want != v {
			return object.Zero, fmt.Errorf("the upper of %s holds changes made over version %s, not %s: mount another mountpoint, or remove %s to discard them",
				mnt, v.Short(), want.Short(), filepath.Dir(recPath))
		}
		rl.log.Info("remounting the version the upper was made over", "version", v.String())
		if err := rl.hold(ctx, v, true); err != nil {
			return object.Zero, err
		}
		if err := checkKept(ctx, rl.src, rl.name(), rl.store, v, r.IOTimeout, r.IsBucket(), rl.log); err != nil {
			if errors.Is(err, errNotAsked) {
				return object.Zero, rl.named(err)
			}
			return object.Zero, fmt.Errorf("%w: to mount the newest version, remove %s (this discards the changes in the upper) or mount another mountpoint",
				err, filepath.Dir(recPath))
		}
		return v, nil
	}
	v := want
	if v.IsZero() {
		// A bucket's version is of everything; the mount descends to
		// sub in it (within).
		ask := sub
		if rl.within != "" {
			ask = ""
		}
		var err error
		if v, err = rl.src.Resolve(ctx, ask); err != nil {
			return object.Zero, rl.named(err)
		}
	}
	if err := rl.hold(ctx, v, !want.IsZero()); err != nil {
		return object.Zero, err
	}
	rl.record = &remoteRecord{Addr: r.Addr, Path: sub, Version: v.String()}
	return v, nil
}

// hold puts a bucket mount's lease on version v (holdVersion); a
// master's mount holds nothing there.
func (rl *remoteLower) hold(ctx context.Context, v object.Digest, wait bool) error {
	if rl.bucket == nil {
		return nil
	}
	h, err := holdVersion(ctx, rl.bucket, v, rl.s.Mountpoint, wait, rl.log)
	if err != nil {
		return rl.named(fmt.Errorf("%w whether a gc removes version %s: %w", errNotAsked, v.Short(), err))
	}
	rl.held = h
	return nil
}

// keepRecord writes the record pin made of a version it resolved, once
// the lower opened: a mount refused (a path not in the version, a root
// that cannot be fetched) leaves no record that would tie the mountpoint
// to it.
func (rl *remoteLower) keepRecord() error {
	if rl.record == nil {
		return nil
	}
	recPath := rl.recordPath()
	b, _ := json.MarshalIndent(rl.record, "", "  ")
	if err := os.MkdirAll(filepath.Dir(recPath), 0o700); err != nil {
		return err
	}
	return writeFileAtomic(recPath, append(b, '\n'))
}

// fill sets o's and w's remote part: the layer at version v, its source,
// the master or bucket to push to and the counters for status.
func (rl *remoteLower) fill(w *Workspace, o *fs.Options, lower lower.Layer, v object.Digest) {
	r, src, cache := rl.r, rl.src, rl.cache
	o.Lower, o.Fetch, w.version = lower, cache, v
	o.IOTimeout = r.IOTimeout
	w.source = r.Addr
	if sub, _ := names.CleanRel(r.Path); sub != "" {
		w.source += " path " + sub
	}
	if snap := rl.s.Lower.Snapshot; snap != "" {
		w.source = "snapshot " + snap + " of " + r.Addr
	}
	if rl.master != nil {
		w.push = rl.master.Push
	} else {
		w.push = rl.bucket.Push
	}
	o.FsName = "cowfs:remote:" + r.Addr
	if sub, _ := names.CleanRel(r.Path); sub != "" {
		o.FsName += "/" + sub
	}
	if snap := rl.s.Lower.Snapshot; snap != "" {
		o.FsName = "cowfs:restore:" + snap + "@" + r.Addr
	}
	w.remoteStatus = func() *RemoteStatus {
		s := cache.Stats()
		rs := &RemoteStatus{
			Hits: s.Hits, Misses: s.Misses, BytesFetched: s.BytesFetched,
			Retries: src.Retries(), Errors: s.Errors, Corrupt: s.Corrupt, Evicted: s.Evicted,
			DirPrefetchErrors: s.DirPrefetchErrors,
		}
		if from := rl.traceFrom(); from != "" && s.TraceObjects > 0 {
			rs.Trace = &TraceStatus{Source: from, Objects: s.TraceObjects, Fetched: s.TraceFetched, Errors: s.TraceErrors}
		}
		if b := rl.bucket; b != nil {
			bs := b.Stats()
			rs.Bucket = &BucketRequests{Gets: bs.Gets, Heads: bs.Heads, Lists: bs.Lists, BytesIn: bs.BytesIn,
				Indexes: bs.Indexes, IndexesKept: bs.IndexesKept}
		}
		if h := rl.held; h != nil {
			rs.Lease = leaseStatus(h)
		}
		rs.Prefetch = cache.Progress()
		return rs
	}
}

// checkKept makes sure the source (what, in messages) still keeps
// version v, which a remount pins: a master keeps only its newest
// versions, and once it dropped v every read of what this machine has not
// cached would fail. A version held here whole still mounts, with a
// warning. A master that does not answer is left to the mount's own
// fetches to report; with strict (a bucket, which was opened without a
// check of its own: openBucket) a source that cannot be asked fails the
// mount with errNotAsked.
func checkKept(ctx context.Context, src remote.Fetcher, what string, store *object.DirStore, v object.Digest, timeout time.Duration, strict bool, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	has, err := src.Has(ctx, []object.Digest{v})
	if err != nil && strict {
		return fmt.Errorf("%w whether it still keeps version %s: %w", errNotAsked, v.Short(), err)
	}
	if err != nil {
		log.Warn("could not ask the master whether it still keeps the version", "version", v.String(), "err", err)
		return nil
	}
	if has[0] {
		return nil
	}
	held, err := remote.Held(ctx, store, v)
	if err != nil {
		return err
	}
	if !held {
		keeps := "a master keeps only its newest versions, cowfs serve --keep-versions"
		if strict {
			keeps = "a bucket keeps what cowfs gc --keep-versions leaves"
		}
		return fmt.Errorf("%s no longer keeps version %s, which this mountpoint's upper was made over (%s), and this machine does not hold all of it",
			what, v.Short(), keeps)
	}
	log.Warn("the source no longer keeps this version; every object of it is held here, so the mount works, but what is evicted from the cache cannot be fetched again",
		"version", v.String(), "source", src.Addr())
	return nil
}

// errNotAsked: a remount could not ask its source about its version.
var errNotAsked = errors.New("could not ask")

// writeFileAtomic replaces path with b, whole and durably: b is synced
// before the rename, and the directory after it. Without the second sync
// a crash could keep what a task synced in the upper beside it and lose
// the record of which version that upper was made over (a filesystem
// with a log per file, as btrfs's fsync, owes the rename nothing), and
// the next mount would put those changes over the newest version.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes the entries of directory dir durable. A variable, so that
// a test sees when it is called.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
