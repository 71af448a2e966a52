// Package cowfs opens copy-on-write workspaces: a lower (a local
// directory, a version of a master's export, or a snapshot) read-only
// beneath a private writable upper, mounted with FUSE. Open takes one
// Spec, which holds every choice and every default; the cowfs CLI, the
// mount(8) helper, the background mount process and Go programs that
// start workspaces all go through it.
//
// It is the one package that brings fs (the kernel), remote (the wire)
// and cow (the engine) together.
package cowfs

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/metrics"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/s3store"
)

// Defaults for a Spec's zero values; withDefaults is the one place that
// applies them.
const (
	// DefaultReadAhead is how far the kernel reads ahead of a sequential
	// reader.
	DefaultReadAhead = fs.DefaultReadAhead
	// DefaultReserve is the space kept free on the upper's filesystem
	// for cowfs's metadata.
	DefaultReserve = 64 << 20
	// DefaultIOTimeout bounds a read of a remote lower.
	DefaultIOTimeout = 20 * time.Second
	// DefaultStartTimeout is how long a mount of a local lower may take
	// to serve requests; a remote one gets remote.ResolveTimeout plus
	// its IOTimeout, as the master may scan a big export first.
	DefaultStartTimeout = 30 * time.Second
)

// DefaultProcs is half the machine's CPUs, at least one. A FUSE server
// that may run on every CPU spins idle threads that compete with the very
// processes it serves.
func DefaultProcs() int { return max(1, runtime.NumCPU()/2) }

// Spec is a workspace: where it is mounted, what lies beneath, where its
// upper and state live, and how it is served.
type Spec struct {
	// Mountpoint is an empty directory. Required.
	Mountpoint string `json:"mountpoint"`
	// Lower is what the workspace shows until it is written.
	Lower Lower `json:"lower"`
	// State is cowfs's state directory: snapshots, the object cache,
	// control sockets, and the upper unless Upper is set.
	State string `json:"state"`
	// Upper and Work, when set, are the upper directory and a work
	// directory on its filesystem, as overlayfs's upperdir and workdir.
	// Otherwise both live under State, keyed by Mountpoint, so opening
	// the same mountpoint again finds the same upper.
	Upper string `json:"upper,omitempty"`
	Work  string `json:"work,omitempty"`
	// Options tune how the workspace is served.
	Options Options `json:"options"`
}

// Lower is exactly one of: a local directory; a remote export; a
// snapshot, kept in State or (with Remote) on that master or bucket.
type Lower struct {
	Dir      string  `json:"dir,omitempty"`
	Remote   *Remote `json:"remote,omitempty"`
	Snapshot string  `json:"snapshot,omitempty"`
}

// Remote is a master's export (cowfs serve), or the versions published
// to a bucket (cowfs publish).
type Remote struct {
	// Addr is the master's HOST:PORT, or s3://BUCKET/PREFIX.
	Addr string `json:"addr"`
	// Path is the subtree of the export to mount; "" is all of it.
	Path string `json:"path,omitempty"`
	// S3Endpoint and S3CA, for a bucket, are the object store's URL
	// (else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS S3) and a CA
	// (PEM file) to trust for its TLS.
	S3Endpoint string `json:"s3_endpoint,omitempty"`
	S3CA       string `json:"s3_ca,omitempty"`
	// Token is the master's bearer token; TokenFile a file holding it.
	Token     string `json:"token,omitempty"`
	TokenFile string `json:"token_file,omitempty"`
	// TLSCA, when set, makes the connection TLS, the master's
	// certificate checked against this CA (PEM file).
	TLSCA string `json:"tls_ca,omitempty"`
	// Version pins the version to mount. Empty: the version the upper
	// was made over when there is one, else the master's newest.
	Version string `json:"version,omitempty"`
	// CacheSize, when positive, evicts cached chunks the master can give
	// again beyond this many bytes.
	CacheSize int64 `json:"cache_size,omitempty"`
	// Prefetch fetches the whole version in the background.
	Prefetch bool `json:"prefetch,omitempty"`
	// NoDirPrefetch keeps a first look into a directory from fetching
	// its files' objects and small files' chunks in the background
	// (remote.Cache.PrefetchDir).
	NoDirPrefetch bool `json:"no_dir_prefetch,omitempty"`
	// NoLearnedPrefetch keeps the mount from fetching in the background
	// what the last mount of the same export read, in its order, and
	// from recording what its own tasks read for the next
	// (remote.Cache.ReplayTrace, RecordTrace; decision 0064).
	NoLearnedPrefetch bool `json:"no_learned_prefetch,omitempty"`
	// IOTimeout bounds a read of the lower: past it the read gets EIO.
	// 0: DefaultIOTimeout.
	IOTimeout time.Duration `json:"io_timeout,omitempty"`
}

// Options tune how a workspace is served. Zero values are the defaults.
type Options struct {
	// WritebackCache lets the kernel gather small writes (fs.Options).
	WritebackCache bool `json:"writeback_cache,omitempty"`
	// Passthrough and PassthroughLower let the kernel read and write
	// files directly (fs.Options); neither goes with WritebackCache.
	Passthrough      bool `json:"passthrough,omitempty"`
	PassthroughLower bool `json:"passthrough_lower,omitempty"`
	// Procs is the GOMAXPROCS of a process that serves only this
	// workspace (the mount process); Open itself leaves GOMAXPROCS
	// alone. 0: DefaultProcs.
	Procs int `json:"procs,omitempty"`
	// ReadAhead is the kernel's read-ahead in bytes: 0 DefaultReadAhead,
	// negative the kernel's own (128 KiB); else 4 KiB to 1 GiB.
	ReadAhead int64 `json:"readahead,omitempty"`
	// Reserve is the space kept free on the upper's filesystem: 0
	// DefaultReserve, negative none; else at least 16 MiB.
	Reserve int64 `json:"reserve,omitempty"`
	// StartTimeout is how long a caller waits for a mount process to
	// serve requests. 0: DefaultStartTimeout, or for a remote lower
	// remote.ResolveTimeout plus its IOTimeout.
	StartTimeout time.Duration `json:"start_timeout,omitempty"`
	// Debug logs every FUSE request.
	Debug bool `json:"debug,omitempty"`
	// Logger receives the workspace's logs; nil: slog.Default().
	Logger *slog.Logger `json:"-"`
	// Fetching, when set, is called when a remote lower starts fetching
	// after a pause, and what it returns once the fetches pause again
	// (remote.Cache.SetFetching): the mount process gives its runtime a
	// P more meanwhile (fs.ExtraProc), since what comes in is verified,
	// stored and handed to readers beside the requests it serves.
	Fetching func() (end func()) `json:"-"`
	// MetricsAddr, when set, serves the workspace's metrics for
	// Prometheus on http://MetricsAddr/metrics while it is mounted.
	MetricsAddr string `json:"metrics_addr,omitempty"`
	// Metrics, when set, is the registry the workspace's metrics go to
	// (package metrics), each series labelled with the mountpoint; nil:
	// one of its own, with the process's, if MetricsAddr is set.
	Metrics *prometheus.Registry `json:"-"`
	// AllowOther lets other users than the one who mounted use the
	// workspace (FUSE's allow_other). nil: on for root, off for others.
	AllowOther *bool `json:"allow_other,omitempty"`
	// Uid and Gid, when not nil, are the owner and group every file is
	// shown with; Umask (0 to 0777) is cleared from every file's mode
	// shown. The files keep their own in the upper and in snapshots.
	Uid   *uint32 `json:"uid,omitempty"`
	Gid   *uint32 `json:"gid,omitempty"`
	Umask uint32  `json:"umask,omitempty"`
	// ReadOnly mounts the workspace read-only: every change gets EROFS.
	ReadOnly bool `json:"read_only,omitempty"`
}

// withDefaults returns s with every zero value that has a default filled
// in and every path made absolute.
func (s Spec) withDefaults() (Spec, error) {
	o := &s.Options
	if o.Procs == 0 {
		o.Procs = DefaultProcs()
	}
	if o.ReadAhead == 0 {
		o.ReadAhead = DefaultReadAhead
	}
	if o.Reserve == 0 {
		o.Reserve = DefaultReserve
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if r := s.Lower.Remote; r != nil {
		rc := *r
		if rc.IOTimeout == 0 {
			rc.IOTimeout = DefaultIOTimeout
		}
		s.Lower.Remote = &rc
		if err := absPaths(&rc.TokenFile, &rc.TLSCA, &rc.S3CA); err != nil {
			return s, err
		}
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = DefaultStartTimeout
		if s.Lower.Remote != nil {
			o.StartTimeout = remote.ResolveTimeout + s.Lower.Remote.IOTimeout
		}
	}
	err := absPaths(&s.Mountpoint, &s.Lower.Dir, &s.State, &s.Upper, &s.Work)
	return s, err
}

func absPaths(ps ...*string) error {
	for _, p := range ps {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	return nil
}

// WithDefaults returns the spec Open would use: every default filled in,
// every path absolute.
func (s Spec) WithDefaults() (Spec, error) { return s.withDefaults() }

// Validate refuses a spec Open cannot mount, before anything is created:
// a refused spec leaves nothing behind. It looks at the filesystem (the
// mountpoint, the lower, the layout of the directories) but changes
// nothing.
func (s Spec) Validate() error {
	s, err := s.withDefaults()
	if err != nil {
		return err
	}
	if err := s.validateOptions(); err != nil {
		return err
	}
	if err := checkFuseDevice(fuseDevice); err != nil {
		return err
	}
	if err := s.validateLower(); err != nil {
		return err
	}
	if err := fs.CheckMountpoint(s.Mountpoint); err != nil {
		return err
	}
	switch {
	case s.Work != "" && s.Upper == "":
		return errors.New("--work was given without an upper directory (--upper)")
	case s.Upper != "" && s.Work == "":
		return errors.New("--upper needs --work, a work directory on the same filesystem")
	case s.State == "":
		return errors.New("no state directory given")
	}
	return checkLayout(layout{Mountpoint: s.Mountpoint, Lower: s.Lower.Dir, Upper: s.Upper, Work: s.Work, State: s.State})
}

// validateOptions checks the options' ranges.
func (s Spec) validateOptions() error {
	o := s.Options
	switch {
	case s.Mountpoint == "":
		return errors.New("no mountpoint given")
	case o.WritebackCache && (o.Passthrough || o.PassthroughLower):
		return errors.New("--writeback-cache cannot be combined with --passthrough or --passthrough-lower")
	case o.ReadAhead > 0 && (o.ReadAhead < 4<<10 || o.ReadAhead > 1<<30):
		return fmt.Errorf("readahead %d: want 0 or between 4K and 1G", o.ReadAhead)
	case o.Reserve > 0 && o.Reserve < 16<<20:
		return fmt.Errorf("reserve %d: want 0 or at least 16M (badger's memtables are 8M each)", o.Reserve)
	case o.Procs < 0:
		return fmt.Errorf("procs %d: want at least 1", o.Procs)
	case o.Umask > 0o777:
		return fmt.Errorf("umask %04o: want at most 0777", o.Umask)
	}
	if o.MetricsAddr != "" {
		return metrics.CheckAddr(o.MetricsAddr)
	}
	return nil
}

// validateLower checks that exactly one lower is given, and that it can
// be found.
func (s Spec) validateLower() error {
	l := s.Lower
	switch {
	case l.Remote != nil && l.Dir != "":
		return errors.New("give either --lower or --remote, not both")
	case l.Dir != "" && l.Snapshot != "":
		return errors.New("give either a lower directory or a snapshot, not both")
	case l.Remote == nil && l.Dir == "" && l.Snapshot == "":
		return errors.New("no lower: give --lower DIR or --remote ADDR")
	case l.Remote != nil:
		return l.Remote.validate(l.Snapshot != "")
	case l.Dir != "":
		if st, err := os.Stat(l.Dir); err != nil {
			return fmt.Errorf("lower directory: %w", err)
		} else if !st.IsDir() {
			return fmt.Errorf("lower %s is not a directory", l.Dir)
		}
		return nil
	default:
		if s.State == "" {
			return errors.New("restoring a snapshot needs the state directory")
		}
		d, err := refs.Open(statedir.RefsDir(s.State))
		if err != nil {
			return err
		}
		_, err = d.Get(l.Snapshot)
		return err
	}
}

// validate checks a remote lower's fields; restore says it names a
// snapshot on the master.
func (r *Remote) validate(restore bool) error {
	if r.IsBucket() {
		if err := r.validateBucket(); err != nil {
			return err
		}
	} else if _, port, err := net.SplitHostPort(r.Addr); err != nil || port == "" {
		return fmt.Errorf("--remote %q: want HOST:PORT (cowfs serve listens on :7420 unless told otherwise) or s3://BUCKET/PREFIX", r.Addr)
	} else if r.S3Endpoint != "" || r.S3CA != "" {
		return errors.New("--s3-endpoint and --s3-ca apply only to --remote s3://BUCKET/PREFIX")
	}
	if restore && r.Path != "" {
		return errors.New("--path does not apply to a restore")
	}
	if restore && r.Version != "" {
		return errors.New("a version does not apply to a restore: the snapshot names its own")
	}
	if _, err := names.CleanRel(r.Path); err != nil {
		return fmt.Errorf("--path: %w", err)
	}
	if r.IOTimeout <= 0 {
		return errors.New("--io-timeout must be positive")
	}
	if r.CacheSize < 0 {
		return fmt.Errorf("cache size %d is negative", r.CacheSize)
	}
	if r.Token != "" && r.TokenFile != "" {
		return errors.New("give either a token or a token file, not both")
	}
	if r.Version != "" {
		if _, err := object.ParseDigest(r.Version); err != nil {
			return fmt.Errorf("version: %w", err)
		}
	}
	for _, p := range []string{r.TokenFile, r.TLSCA, r.S3CA} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	return nil
}

// IsBucket says the remote is a bucket's versions (s3://...), not a
// master.
func (r *Remote) IsBucket() bool { return strings.HasPrefix(r.Addr, "s3://") }

// validateBucket checks what a bucket remote cannot take; the bucket
// itself is looked at when it is opened.
func (r *Remote) validateBucket() error {
	if _, _, err := s3store.ParseURL(r.Addr); err != nil {
		return fmt.Errorf("--remote: %w", err)
	}
	if r.Token != "" || r.TokenFile != "" || r.TLSCA != "" {
		return errors.New("a token and --tls-ca apply to a master; a bucket takes the AWS credentials and --s3-ca")
	}
	if r.S3Endpoint != "" {
		if u, err := url.Parse(r.S3Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--s3-endpoint %q is not an http:// or https:// URL", r.S3Endpoint)
		}
	}
	return nil
}
