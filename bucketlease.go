package cowfs

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/s3store"
)

// versionHold is a bucket mount's lease on its version (decision 0078),
// renewed while the mount runs and released when it ends, so that a gc
// with --keep-versions keeps what the mount may still read.
type versionHold struct {
	store *s3store.Store
	v     object.Digest
	mnt   string
	log   *slog.Logger
	every time.Duration
	stop  chan struct{}
	// done closes when the goroutine that puts the lease ends; nil
	// until it starts.
	done chan struct{}

	mu       sync.Mutex
	l        *s3store.Lease
	released bool
	// renewed is when the lease was last put, err why the last put
	// failed: the status says so.
	renewed time.Time
	err     error
}

// status is what cowfs status says of the hold.
func (h *versionHold) status() *LeaseStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := &LeaseStatus{Held: h.l != nil, Renewed: h.renewed}
	if h.err != nil {
		st.Error = h.err.Error()
	}
	return st
}

// note records the outcome of a put of the lease.
func (h *versionHold) note(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err = err
	if err == nil {
		h.renewed = time.Now()
	}
}

// renewEvery is s3store.LeaseRenew, a variable for tests.
var renewEvery = s3store.LeaseRenew

// holdVersion puts a lease on version v of store for the mount at mnt
// and keeps it until release. With wait (a remount, or a version named
// by the mount: one that may be superseded already) the lease is put
// before it returns, and it then waits while a gc runs that may not
// have seen the lease; the caller checks after that the version is
// still there. Otherwise (the newest version, which a gc keeps for
// --grace after it is superseded) the lease is put in the background. A
// lease that cannot be put (credentials that only read) is logged, and
// the mount goes on unheld.
func holdVersion(ctx context.Context, store *s3store.Store, v object.Digest, mnt string, wait bool, log *slog.Logger) (*versionHold, error) {
	h := &versionHold{store: store, v: v, mnt: mnt, log: log, every: renewEvery, stop: make(chan struct{})}
	if wait && h.take(ctx) {
		if err := store.WaitGC(ctx); err != nil {
			h.release()
			return nil, err
		}
	}
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		if !wait {
			h.take(context.Background())
		}
		h.renew()
	}()
	return h, nil
}

// take puts the lease and says whether it could. A lease put after
// release began is removed at once.
func (h *versionHold) take(ctx context.Context) bool {
	l, err := h.store.TakeLease(ctx, h.v, h.mnt)
	h.note(err)
	if err != nil {
		h.log.Warn("could not put a lease on the mounted version in the bucket: a gc with --keep-versions may remove the version while this mount reads it",
			"version", h.v.String(), "err", err)
		return false
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
	return true
}

// renew puts the lease again every h.every until release; one that
// could not be put is tried again.
func (h *versionHold) renew() {
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
		if err != nil {
			h.log.Warn("could not renew the lease on the mounted version; it is tried again", "version", h.v.String(), "err", err)
		}
	}
}

// release stops the renewal and removes the lease. A put under way ends
// first (each is bounded by the store's timeout): one that ended after
// the removal would put the lease back, to hold the version for
// LeaseTTL after the mount ended.
func (h *versionHold) release() {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return
	}
	h.released = true
	h.mu.Unlock()
	close(h.stop)
	if h.done != nil {
		<-h.done
	}
	h.mu.Lock()
	l := h.l
	h.l = nil
	h.mu.Unlock()
	if l != nil {
		h.drop(l)
	}
}

// drop removes lease l; one that cannot be removed ages out.
func (h *versionHold) drop(l *s3store.Lease) {
	if err := l.Release(); err != nil {
		h.log.Warn("could not remove the lease on the mounted version; it ages out", "version", h.v.String(), "err", err)
	}
}
