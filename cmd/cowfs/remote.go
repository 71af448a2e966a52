package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cowfs/cowfs/cow"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/fs/control"
	"github.com/cowfs/cowfs/remote"
)

// remoteFlags are mount's flags for a remote lower.
type remoteFlags struct {
	addr      string
	path      string
	tokenFile string
	tlsCA     string
	prefetch  bool
	cacheSize string
	ioTimeout time.Duration
	// changed reports whether a flag was given (nil: none was).
	changed func(name string) bool
}

// remoteOnly are the flags that mean something only with --remote.
var remoteOnly = []string{"path", "token-file", "tls-ca", "prefetch", "cache-size", "io-timeout"}

// checkLocal refuses, for a mount without --remote, the flags that would
// have no effect there: someone who gives --token-file meant a remote.
func (r *remoteFlags) checkLocal() error {
	if r.changed == nil {
		return nil
	}
	for _, n := range remoteOnly {
		if r.changed(n) {
			return fmt.Errorf("--%s applies only with --remote", n)
		}
	}
	return nil
}

func (r *remoteFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&r.addr, "remote", "", "mount the export of the master at ADDR (host:port, see cowfs serve) instead of --lower")
	fl.StringVar(&r.path, "path", "", "with --remote: mount only this subtree of the export")
	fl.StringVar(&r.tokenFile, "token-file", "", "with --remote: file holding the master's bearer token")
	fl.StringVar(&r.tlsCA, "tls-ca", "", "with --remote: use TLS, checking the master's certificate against this CA (PEM)")
	fl.BoolVar(&r.prefetch, "prefetch", false, "with --remote: fetch the whole version in the background (reads go first); see cowfs status")
	fl.StringVar(&r.cacheSize, "cache-size", "", "with --remote: evict cached chunks the master can give again beyond this size (e.g. 20G; default: no limit)")
	fl.DurationVar(&r.ioTimeout, "io-timeout", 20*time.Second, "with --remote: a read the master cannot serve in this time fails with EIO")
}

// args returns the flags to hand to the mount daemon.
func (r *remoteFlags) args() []string {
	a := []string{"--remote", r.addr, "--io-timeout", r.ioTimeout.String()}
	if r.path != "" {
		a = append(a, "--path", r.path)
	}
	if r.tokenFile != "" {
		a = append(a, "--token-file", r.tokenFile)
	}
	if r.tlsCA != "" {
		a = append(a, "--tls-ca", r.tlsCA)
	}
	if r.prefetch {
		a = append(a, "--prefetch")
	}
	if r.cacheSize != "" {
		a = append(a, "--cache-size", r.cacheSize)
	}
	return a
}

// check validates the flags before anything is started, and makes paths
// absolute for the daemon.
func (r *remoteFlags) check() error {
	if _, port, err := net.SplitHostPort(r.addr); err != nil || port == "" {
		return fmt.Errorf("--remote %q: want HOST:PORT (cowfs serve listens on :7420 unless told otherwise)", r.addr)
	}
	if _, err := cow.CleanRel(r.path); err != nil {
		return fmt.Errorf("--path: %w", err)
	}
	if r.ioTimeout <= 0 {
		return errors.New("--io-timeout must be positive")
	}
	if _, err := parseSize(r.cacheSize); err != nil {
		return fmt.Errorf("--cache-size: %w", err)
	}
	for _, p := range []*string{&r.tokenFile, &r.tlsCA} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return err
		}
		*p = abs
	}
	return nil
}

// parseSize reads 1234, 512M, 20G, 1T (powers of 1024); "" is 0. A size
// past what an int64 holds is an error, not a wrapped-around number.
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	num := s
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	if mult > 1 {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(num, "-") || err == nil && n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large: at most %dT", s, int64(math.MaxInt64>>40))
	}
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (like 512M or 20G)", s)
	}
	return n * mult, nil
}

// remoteRecord is kept beside a remote mount's upper: the upper's changes
// were made over this version, so a remount of the same mountpoint (after
// an unmount or a crash) mounts the same version, never a newer one that
// would mix with them.
type remoteRecord struct {
	Addr    string `json:"addr"`
	Path    string `json:"path"`
	Version string `json:"version"`
}

// setupRemote opens the remote lower and fills in o. It returns once the
// export's root was fetched and verified.
//
// With snapshot set it restores that snapshot of the master instead: its
// version comes from the master's ref, beneath a fresh upper.
func setupRemote(r *remoteFlags, snapshot, state, mnt string, o *fs.Options, log *slog.Logger) (cleanup func(), err error) {
	var token string
	if r.tokenFile != "" {
		b, err := os.ReadFile(r.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	client, err := remote.Dial(remote.ClientConfig{
		Addr: r.addr, Token: token, CAFile: r.tlsCA,
		CallTimeout: min(10*time.Second, r.ioTimeout), Timeout: r.ioTimeout, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	store, err := object.OpenDirStore(fs.ObjectsDir(state))
	if err != nil {
		client.Close()
		return nil, err
	}
	rd, err := refs.Open(fs.RefsDir(state))
	if err != nil {
		client.Close()
		return nil, err
	}
	cache, err := remote.NewCache(store, client, log)
	if err != nil {
		client.Close()
		return nil, err
	}
	closeAll := func() { cache.Close(); client.Close() }
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	if limit, _ := parseSize(r.cacheSize); limit > 0 {
		cache.SetLimit(limit, rd)
	}
	sub, _ := cow.CleanRel(r.path)
	recPath := filepath.Join(o.Work, "remote.json")
	if o.Upper == "" {
		u, _ := fs.MountDirs(state, mnt)
		recPath = filepath.Join(filepath.Dir(u), "remote.json")
	}
	ctx := context.Background()
	var v object.Digest
	if snapshot != "" {
		if v, err = client.GetRef(ctx, snapshot); err != nil {
			return nil, fmt.Errorf("master %s: %w", r.addr, err)
		}
		o.Upper, o.Work = fs.RestoreDirs(state, mnt)
		if err := os.RemoveAll(filepath.Dir(o.Upper)); err != nil {
			return nil, fmt.Errorf("clear previous restore: %w", err)
		}
		o.Parent = snapshot
	} else if b, err := os.ReadFile(recPath); err == nil {
		var rec remoteRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("%s: %w", recPath, err)
		}
		if rec.Addr != r.addr || rec.Path != sub {
			return nil, fmt.Errorf("the upper of %s holds changes made over %s path %q, not %s path %q: mount another mountpoint, or remove %s to discard them",
				mnt, rec.Addr, rec.Path, r.addr, sub, filepath.Dir(recPath))
		}
		if v, err = object.ParseDigest(rec.Version); err != nil {
			return nil, fmt.Errorf("%s: %w", recPath, err)
		}
		log.Info("remounting the version the upper was made over", "version", v.String())
		if err := checkKept(ctx, client, store, v, r.ioTimeout, log); err != nil {
			return nil, fmt.Errorf("%w: to mount the master's newest version, remove %s (this discards the changes in the upper) or mount another mountpoint",
				err, filepath.Dir(recPath))
		}
	} else {
		if v, err = client.Resolve(ctx, sub); err != nil {
			return nil, fmt.Errorf("master %s: %w", r.addr, err)
		}
		b, _ := json.MarshalIndent(remoteRecord{Addr: r.addr, Path: sub, Version: v.String()}, "", "  ")
		if err := os.MkdirAll(filepath.Dir(recPath), 0o700); err != nil {
			return nil, err
		}
		if err := writeFileAtomic(recPath, append(b, '\n')); err != nil {
			return nil, err
		}
	}
	lower, root, err := remote.OpenVersion(ctx, cache, v)
	if err != nil {
		return nil, fmt.Errorf("master %s: %w", r.addr, err)
	}
	o.Layer, o.LayerRoot, o.Fetch = lower, v, cache
	o.IOTimeout = r.ioTimeout
	o.Source = r.addr
	if sub != "" {
		o.Source += " path " + sub
	}
	if snapshot != "" {
		o.Source = "snapshot " + snapshot + " of " + r.addr
	}
	o.Push = func(ctx context.Context, store *object.DirStore, s refs.Snapshot) (int, error) {
		return client.Push(ctx, store, s)
	}
	o.FsName = "cowfs:" + r.addr
	o.Remote = func() *control.RemoteStatus {
		s := cache.Stats()
		rs := &control.RemoteStatus{
			Hits: s.Hits, Misses: s.Misses, BytesFetched: s.BytesFetched,
			Retries: client.Retries(), Errors: s.Errors, Corrupt: s.Corrupt, Evicted: s.Evicted,
		}
		rs.Prefetch = cache.Progress()
		return rs
	}
	if r.prefetch {
		cache.PrefetchVersion(root.Object)
	}
	return closeAll, nil
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
