package s3store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
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

// A Hold is a reader's lease on a version, kept in the bucket while it
// reads (decision 0078): a mount's on its version, a verify's on what it
// reads. It is put again every LeaseRenew until Release, which removes
// it. One that could not be put (credentials that only read) is tried
// again at each renewal; the reader goes on unheld meanwhile.
type Hold struct {
	s     *Store
	v     object.Digest
	who   string
	log   *slog.Logger // nil: failures are only noted
	every time.Duration
	stop  chan struct{}
	// done closes when the goroutine that puts the lease ends; nil
	// until it starts.
	done chan struct{}

	mu       sync.Mutex
	l        *Lease
	released bool
	// renewed is when the lease was last put, err why the last put
	// failed.
	renewed time.Time
	err     error
}

// Hold puts a lease on version v for the reader who (a mountpoint,
// "verify") and keeps it until Release. With wait the lease is put
// before Hold returns; the caller, which holds a version that may be
// superseded already, then waits while a gc runs that may not have seen
// it (WaitGC) and checks that the version is still there. Otherwise (a
// version gc keeps for --grace after it is superseded) it is put in the
// background. A failure to put it is logged to log, if not nil, and
// said by Status.
func (s *Store) Hold(ctx context.Context, v object.Digest, who string, wait bool, log *slog.Logger) *Hold {
	h := &Hold{s: s, v: v, who: who, log: log, every: holdRenew, stop: make(chan struct{}), done: make(chan struct{})}
	if wait {
		h.take(ctx)
	}
	go func() {
		defer close(h.done)
		if !wait {
			h.take(context.Background())
		}
		h.renew()
	}()
	return h
}

// Status says whether the lease is in the bucket, when it was last put,
// and why the last put failed, if it did.
func (h *Hold) Status() (held bool, renewed time.Time, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.l != nil, h.renewed, h.err
}

// note records the outcome of a put of the lease.
func (h *Hold) note(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err = err
	if err == nil {
		h.renewed = time.Now()
	}
}

// take puts the lease. One put after Release began is removed at once.
func (h *Hold) take(ctx context.Context) {
	l, err := h.s.TakeLease(ctx, h.v, h.who)
	h.note(err)
	if err != nil {
		if h.log != nil {
			h.log.Warn("could not put a lease on the version read in the bucket: a gc with --keep-versions may remove it meanwhile",
				"version", h.v.String(), "err", err)
		}
		return
	}
	h.mu.Lock()
	released := h.released
	if !released {
		h.l = l
	}
	h.mu.Unlock()
	if released {
		h.drop(l)
	}
}

// renew puts the lease again every h.every until Release; one that could
// not be put is tried again.
func (h *Hold) renew() {
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		h.mu.Lock()
		l := h.l
		h.mu.Unlock()
		if l == nil {
			h.take(context.Background())
			continue
		}
		err := l.Renew(context.Background())
		h.note(err)
		if err != nil && h.log != nil {
			h.log.Warn("could not renew the lease on the version read; it is tried again", "version", h.v.String(), "err", err)
		}
	}
}

// Release stops the renewal and removes the lease; again is harmless. A
// put under way ends first (each is bounded by the store's timeout): one
// that ended after the removal would put the lease back, to hold the
// version for LeaseTTL after the reader ended.
func (h *Hold) Release() {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return
	}
	h.released = true
	h.mu.Unlock()
	close(h.stop)
	<-h.done
	h.mu.Lock()
	l := h.l
	h.l = nil
	h.mu.Unlock()
	if l != nil {
		h.drop(l)
	}
}

// drop removes lease l; one that cannot be removed ages out.
func (h *Hold) drop(l *Lease) {
	if err := l.Release(); err != nil && h.log != nil {
		h.log.Warn("could not remove the lease on the version read; it ages out", "version", h.v.String(), "err", err)
	}
}

// HoldVersions holds each of vs for who (Hold, waited), a few at a time,
// then waits while a gc runs that may not have seen the leases; the
// caller then checks which of vs are still published. An error (the
// first lease that could not be put: credentials that only read) leaves
// none held.
func (s *Store) HoldVersions(ctx context.Context, vs []object.Digest, who string) (func(), error) {
	hs := make([]*Hold, len(vs))
	g := new(errgroup.Group)
	g.SetLimit(8)
	for i, v := range vs {
		g.Go(func() error {
			hs[i] = s.Hold(ctx, v, who, true, nil)
			return nil
		})
	}
	g.Wait()
	releaseAll := func() {
		g := new(errgroup.Group)
		g.SetLimit(8)
		for _, h := range hs {
			g.Go(func() error { h.Release(); return nil })
		}
		g.Wait()
	}
	var err error
	for _, h := range hs {
		if _, _, err = h.Status(); err != nil {
			break
		}
	}
	if err == nil {
		err = s.WaitGC(ctx)
	}
	if err != nil {
		releaseAll()
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(releaseAll) }, nil
}

// holdRenew is LeaseRenew, a variable for tests.
var holdRenew = LeaseRenew
