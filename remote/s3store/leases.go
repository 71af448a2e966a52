package s3store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cowfs/cowfs/cow/object"
)

// A mount of a bucket holds the version it reads with a lease (decision
// 0078): leases/<version hex>-<random>, put when the mount starts, put
// again every LeaseRenew while it runs and removed when it ends. gc keeps
// what a lease younger than LeaseTTL holds, whatever --keep-versions
// says: a mount reads its version lazily, for as long as it runs, and
// one whose version went would fail every read of what it has not
// cached. A mount that crashed leaves its lease to age out.
const (
	leasesDir  = "leases/"
	LeaseRenew = time.Hour
	LeaseTTL   = 6 * time.Hour
)

// leaseTTL is LeaseTTL, a variable for tests.
var leaseTTL = LeaseTTL

type leaseInfo struct {
	Version    string    `json:"version"`
	Host       string    `json:"host"`
	Pid        int       `json:"pid"`
	Mountpoint string    `json:"mountpoint,omitempty"`
	Taken      time.Time `json:"taken"`
}

// A Lease is a mount's hold on a version of the bucket.
type Lease struct {
	s    *Store
	key  string
	body []byte
}

// TakeLease puts a lease on version v for the mount at mountpoint.
func (s *Store) TakeLease(ctx context.Context, v object.Digest, mountpoint string) (*Lease, error) {
	var r [8]byte
	rand.Read(r[:])
	host, _ := os.Hostname()
	b, _ := json.Marshal(leaseInfo{Version: v.String(), Host: host, Pid: os.Getpid(), Mountpoint: mountpoint, Taken: time.Now().UTC()})
	l := &Lease{s: s, key: s.key(leasesDir + hex.EncodeToString(v[:]) + "-" + hex.EncodeToString(r[:])), body: b}
	if err := l.Renew(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// Renew puts the lease again, which makes it young again.
func (l *Lease) Renew(ctx context.Context) error {
	if err := l.s.putOver(ctx, l.key, l.body); err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	return nil
}

// Release removes the lease, with a context of its own: the mount's may
// have ended.
func (l *Lease) Release() error {
	ctx, cancel := context.WithTimeout(context.Background(), l.s.cfg.Timeout)
	defer cancel()
	if err := l.s.deleteKey(ctx, l.key); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	return nil
}

// leased returns the versions a lease younger than leaseTTL holds, at
// start, with how many leases hold each.
func (s *Store) leased(ctx context.Context, start time.Time) (map[object.Digest]int, error) {
	held := map[object.Digest]int{}
	err := s.listObjects(ctx, leasesDir, func(name string, mod time.Time) bool {
		h, _, ok := strings.Cut(name, "-")
		if !ok || start.Sub(mod) >= leaseTTL {
			return true
		}
		if d, err := object.ParseDigest("sha256-" + h); err == nil {
			held[d]++
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	return held, nil
}

// WaitGC waits while a gc of the bucket runs. A mount of a version that
// may already be superseded calls it after taking its lease: a gc that
// started before the lease was put may not have seen it, and a gc
// started after sees it (it lists leases after putting its lock). Once
// no gc runs, what the mount finds of its version stays.
func (s *Store) WaitGC(ctx context.Context) error {
	logged := false
	for {
		n, err := s.liveLocks(ctx, lockGC, "")
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if !logged {
			s.cfg.Log.Info("waiting for a gc of the bucket to end", "store", s.URL())
			logged = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a gc of %s to end: %w", s.URL(), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// HoldVersions puts a lease on each of vs for a reader that is not a
// mount (cowfs verify, as who), a few at a time, then waits while a gc
// runs that may not have seen them; the caller then checks which of vs
// are still published. The leases are put again every LeaseRenew until
// release, which removes them. An error (credentials that only read)
// leaves none held.
func (s *Store) HoldVersions(ctx context.Context, vs []object.Digest, who string) (release func(), err error) {
	ls := make([]*Lease, len(vs))
	releaseAll := func() {
		g := new(errgroup.Group)
		g.SetLimit(8)
		for _, l := range ls {
			if l != nil {
				g.Go(func() error {
					if err := l.Release(); err != nil {
						s.cfg.Log.Warn("a lease stays until it ages out", "err", err)
					}
					return nil
				})
			}
		}
		g.Wait()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, v := range vs {
		g.Go(func() (err error) {
			ls[i], err = s.TakeLease(gctx, v, who)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		releaseAll()
		return nil, err
	}
	if err := s.WaitGC(ctx); err != nil {
		releaseAll()
		return nil, err
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(holdRenew)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			// A few at a time; once released, none more is started,
			// and those under way end before the leases are removed.
			g := new(errgroup.Group)
			g.SetLimit(8)
		renew:
			for _, l := range ls {
				select {
				case <-stop:
					break renew
				default:
				}
				g.Go(func() error {
					rctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
					defer cancel()
					if err := l.Renew(rctx); err != nil {
						s.cfg.Log.Warn("could not renew a lease", "err", err)
					}
					return nil
				})
			}
			g.Wait()
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-done // a renewal under way would put a lease back after its removal
			releaseAll()
		})
	}, nil
}

// holdRenew is LeaseRenew, a variable for tests.
var holdRenew = LeaseRenew
