package cowfs

import (
	"context"
	"log/slog"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/s3store"
)

// holdVersion puts a bucket mount's lease on version v of store for the
// mount at mnt (decision 0078), kept until the hold's Release, so that a
// gc with --keep-versions keeps what the mount may still read. With wait
// (a remount, a restore, a version named by the mount: one that may be
// superseded already) the lease is put before it returns, and it then
// waits while a gc runs that may not have seen the lease; the caller
// checks after that the version is still there. Otherwise (the newest
// version, which a gc keeps for --grace after it is superseded) the
// lease is put in the background. A lease that cannot be put
// (credentials that only read) is logged, and the mount goes on unheld.
func holdVersion(ctx context.Context, store *s3store.Store, v object.Digest, mnt string, wait bool, log *slog.Logger) (*s3store.Hold, error) {
	h := store.Hold(ctx, v, mnt, wait, log)
	if held, _, _ := h.Status(); wait && held {
		if err := store.WaitGC(ctx); err != nil {
			h.Release()
			return nil, err
		}
	}
	return h, nil
}

// leaseStatus is what cowfs status says of a mount's hold.
func leaseStatus(h *s3store.Hold) *LeaseStatus {
	held, renewed, err := h.Status()
	st := &LeaseStatus{Held: held, Renewed: renewed}
	if err != nil {
		st.Error = err.Error()
	}
	return st
}
