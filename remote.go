package cowfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/metrics"
	"github.com/cowfs/cowfs/remote"
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

// remoteLower is a remote lower being opened: its client and cache, and
// the spec it serves.
type remoteLower struct {
	s      Spec
	r      *Remote
	client *remote.Client
	store  *object.DirStore
	cache  *remote.Cache
	log    *slog.Logger
}

// openRemote opens the spec's remote lower and fills in its part of o
// and w (the lower, its version, its source, the push and the status
// counters). It returns once the export's root was fetched and verified,
// with what closes the cache and the client; the caller pins the version.
//
// With a snapshot in s.Lower it restores that snapshot of the master
// instead: its version comes from the master's ref, beneath a fresh upper.
func (w *Workspace) openRemote(ctx context.Context, o *fs.Options, mx *metrics.Workspace) (cleanup func(), err error) {
	s := w.spec
	rl := &remoteLower{s: s, r: s.Lower.Remote, log: s.Options.Logger}
	if err := rl.dial(); err != nil {
		return nil, err
	}
	closeAll := func() { rl.cache.Close(); rl.client.Close() }
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
		if v, err = rl.client.GetRef(ctx, snap); err != nil {
			return nil, fmt.Errorf("master %s: %w", rl.r.Addr, err)
		}
		o.Parent = snap
	} else if v, err = rl.pin(ctx); err != nil {
		return nil, err
	}
	lower, root, err := remote.OpenVersion(ctx, rl.cache, v)
	if err != nil {
		return nil, fmt.Errorf("master %s: %w", rl.r.Addr, err)
	}
	rl.fill(w, o, lower, v)
	if rl.r.Prefetch {
		rl.cache.PrefetchVersion(root.Object)
	}
	w.warm = func(ctx context.Context, paths []string) *remote.Warmup {
		return rl.cache.Warm(ctx, root.Object, paths)
	}
	return closeAll, nil
}

// warmFunc starts fetching what lies beneath paths of a remote lower.
type warmFunc func(ctx context.Context, paths []string) *remote.Warmup

// dial connects to the master and opens the state directory's cache.
func (rl *remoteLower) dial() error {
	r := rl.r
	token := r.Token
	if r.TokenFile != "" {
		b, err := os.ReadFile(r.TokenFile)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	client, err := remote.Dial(remote.ClientConfig{
		Addr: r.Addr, Token: token, CAFile: r.TLSCA,
		CallTimeout: min(10*time.Second, r.IOTimeout), Timeout: r.IOTimeout, Logger: rl.log,
	})
	if err != nil {
		return err
	}
	if err := rl.openCache(client); err != nil {
		client.Close()
		return err
	}
	rl.client = client
	return nil
}

// openCache opens the state directory's object store as client's cache.
func (rl *remoteLower) openCache(client *remote.Client) error {
	store, err := object.OpenDirStore(statedir.ObjectsDir(rl.s.State))
	if err != nil {
		return err
	}
	rd, err := refs.Open(statedir.RefsDir(rl.s.State))
	if err != nil {
		return err
	}
	cache, err := remote.NewCache(store, client, rl.log)
	if err != nil {
		return err
	}
	if rl.r.CacheSize > 0 {
		cache.SetLimit(rl.r.CacheSize, rd)
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
// it was made over one; else the spec's, or the master's newest, which it
// records.
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
		if err := checkKept(ctx, rl.client, rl.store, v, r.IOTimeout, rl.log); err != nil {
			return object.Zero, fmt.Errorf("%w: to mount the master's newest version, remove %s (this discards the changes in the upper) or mount another mountpoint",
				err, filepath.Dir(recPath))
		}
		return v, nil
	}
	v := want
	if v.IsZero() {
		var err error
		if v, err = rl.client.Resolve(ctx, sub); err != nil {
			return object.Zero, fmt.Errorf("master %s: %w", r.Addr, err)
		}
	}
	b, _ := json.MarshalIndent(remoteRecord{Addr: r.Addr, Path: sub, Version: v.String()}, "", "  ")
	if err := os.MkdirAll(filepath.Dir(recPath), 0o700); err != nil {
		return object.Zero, err
	}
	if err := writeFileAtomic(recPath, append(b, '\n')); err != nil {
		return object.Zero, err
	}
	return v, nil
}

// fill sets o's and w's remote part: the layer at version v, its source,
// the master to push to and the counters for status.
func (rl *remoteLower) fill(w *Workspace, o *fs.Options, lower lower.Layer, v object.Digest) {
	r, client, cache := rl.r, rl.client, rl.cache
	o.Lower, o.Fetch, w.version = lower, cache, v
	o.IOTimeout = r.IOTimeout
	w.source = r.Addr
	if sub, _ := names.CleanRel(r.Path); sub != "" {
		w.source += " path " + sub
	}
	if snap := rl.s.Lower.Snapshot; snap != "" {
		w.source = "snapshot " + snap + " of " + r.Addr
	}
	w.push = client.Push
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
			Retries: client.Retries(), Errors: s.Errors, Corrupt: s.Corrupt, Evicted: s.Evicted,
		}
		rs.Prefetch = cache.Progress()
		return rs
	}
}

// checkKept makes sure the master still keeps version v, which a remount
// pins: a master keeps only its newest versions, and once it dropped v
// every read of what this machine has not cached would fail. A version held
// here whole still mounts, with a warning. A master that does not answer
// is left to the mount's own fetches to report.
func checkKept(ctx context.Context, client *remote.Client, store *object.DirStore, v object.Digest, timeout time.Duration, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	has, err := client.Has(ctx, []object.Digest{v})
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
		return fmt.Errorf("master %s no longer keeps version %s, which this mountpoint's upper was made over (a master keeps only its newest versions, cowfs serve --keep-versions), and this machine does not hold all of it",
			client.Addr(), v.Short())
	}
	log.Warn("the master no longer keeps this version; every object of it is held here, so the mount works, but what is evicted from the cache cannot be fetched again",
		"version", v.String(), "master", client.Addr())
	return nil
}

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
	return os.Rename(tmp, path)
}
