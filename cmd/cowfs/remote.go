package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/names"
)

// remoteFlags are mount's flags for a remote lower.
type remoteFlags struct {
	addr      string
	path      string
	tokenFile string
	tlsCA     string
	prefetch  bool
	// noDirPrefetch is --no-dir-prefetch.
	noDirPrefetch bool
	// noLearnedPrefetch is --no-learned-prefetch.
	noLearnedPrefetch bool
	cacheSize         string
	ioTimeout         time.Duration
	// s3Endpoint and s3CA reach a bucket (--remote s3://BUCKET/PREFIX).
	s3Endpoint, s3CA string
	// changed reports whether a flag was given (nil: none was).
	changed func(name string) bool
}

// remoteOnly are the flags that mean something only with --remote.
var remoteOnly = []string{"path", "token-file", "tls-ca", "prefetch", "no-dir-prefetch", "no-learned-prefetch", "cache-size", "io-timeout", "s3-endpoint", "s3-ca"}

// checkLocal refuses, for a mount without --remote, the flags that would
// have no effect there: someone who gives --token-file meant a remote.
func (r *remoteFlags) checkLocal() error {
	if r.changed == nil {
		return nil
	}
	for _, n := range remoteOnly {
		if r.changed(n) {
			return usagef("--%s applies only with --remote", n)
		}
	}
	return nil
}

func (r *remoteFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&r.addr, "remote", "", "mount the export of the master at ADDR (host:port, see cowfs serve), or the newest version published to s3://BUCKET/PREFIX (see cowfs publish), instead of --lower")
	fl.StringVar(&r.path, "path", "", "with --remote: mount only this subtree of the export")
	fl.StringVar(&r.tokenFile, "token-file", "", "with --remote: file holding the master's bearer token")
	fl.StringVar(&r.tlsCA, "tls-ca", "", "with --remote: use TLS, checking the master's certificate against this CA (PEM)")
	fl.BoolVar(&r.prefetch, "prefetch", false, "with --remote: fetch the whole version in the background (reads go first); see cowfs status")
	fl.BoolVar(&r.noDirPrefetch, "no-dir-prefetch", false, "with --remote: do not fetch a directory's small files (64K and less) in the background once two of its files are read")
	fl.BoolVar(&r.noLearnedPrefetch, "no-learned-prefetch", false, "with --remote: do not fetch in the background what the last mount of the same export read, nor record what this one reads")
	fl.StringVar(&r.cacheSize, "cache-size", "", "with --remote: evict cached chunks the master can give again beyond this size (e.g. 20G; default: no limit; "+sizeHelp+")")
	fl.DurationVar(&r.ioTimeout, "io-timeout", cowfs.DefaultIOTimeout, "with --remote: a read the master cannot serve in this time fails with EIO")
	fl.StringVar(&r.s3Endpoint, "s3-endpoint", "", "with --remote s3://...: the object store's URL (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS S3)")
	fl.StringVar(&r.s3CA, "s3-ca", "", "with --remote s3://...: trust this CA (PEM) for the object store's TLS")
}

// spec returns the remote lower the flags give; cowfs.Spec.Validate
// checks it.
func (r *remoteFlags) spec() (*cowfs.Remote, error) {
	cacheSize, err := parseSize(r.cacheSize)
	if err != nil {
		return nil, usagef("--cache-size: %w", err)
	}
	return &cowfs.Remote{
		Addr: r.addr, Path: r.path, TokenFile: r.tokenFile, TLSCA: r.tlsCA,
		CacheSize: cacheSize, Prefetch: r.prefetch, NoDirPrefetch: r.noDirPrefetch, NoLearnedPrefetch: r.noLearnedPrefetch, IOTimeout: r.ioTimeout,
		S3Endpoint: r.s3Endpoint, S3CA: r.s3CA,
	}, nil
}

// check validates the flags before anything is started, and makes paths
// absolute for the daemon.
func (r *remoteFlags) check() error {
	if strings.HasPrefix(r.addr, "s3://") {
		return fmt.Errorf("--remote %s: repair needs a master (HOST:PORT); a bucket checks every object on every read", r.addr)
	}
	if _, port, err := net.SplitHostPort(r.addr); err != nil || port == "" {
		return fmt.Errorf("--remote %q: want HOST:PORT (cowfs serve listens on :7420 unless told otherwise)", r.addr)
	}
	if _, err := names.CleanRel(r.path); err != nil {
		return fmt.Errorf("--path: %w", err)
	}
	if r.ioTimeout <= 0 {
		return errors.New("--io-timeout must be positive")
	}
	if _, err := parseSize(r.cacheSize); err != nil {
		return usagef("--cache-size: %w", err)
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
