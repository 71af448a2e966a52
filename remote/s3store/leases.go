package s3store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

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
