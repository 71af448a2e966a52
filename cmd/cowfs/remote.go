package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
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
	fl.DurationVar(&r.ioTimeout, "io-timeout", cowfs.DefaultIOTimeout, "with --remote: a read the master cannot serve in this time fails with EIO")
}

// spec returns the remote lower the flags give; cowfs.Spec.Validate
// checks it.
func (r *remoteFlags) spec() (*cowfs.Remote, error) {
	cacheSize, err := parseSize(r.cacheSize)
	if err != nil {
		return nil, fmt.Errorf("--cache-size: %w", err)
	}
	return &cowfs.Remote{
		Addr: r.addr, Path: r.path, TokenFile: r.tokenFile, TLSCA: r.tlsCA,
		CacheSize: cacheSize, Prefetch: r.prefetch, IOTimeout: r.ioTimeout,
	}, nil
}

// check validates the flags before anything is started, and makes paths
// absolute for the daemon.
func (r *remoteFlags) check() error {
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
