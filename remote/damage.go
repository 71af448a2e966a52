package remote

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/scan"
)

// The master sends objects as stored, unchecked, and every worker checks
// what it gets. A worker that got bytes not matching their digest asks
// again with verify set (GetRequest.verify); only then does the master
// check its own copy. A copy that checks out was damaged on the way and is
// sent again. A damaged one is quarantined by the store, logged, and
// stored again by a scan of the export, which finds every file whose
// object or chunks left the store and reads it again; if no file of the
// export has those bytes now, the object is lost, and every worker that
// asks for it is told so at once (DataLoss); if the scan itself failed (a
// file kept changing), a Get after repairRetry tries again. A worker's
// word alone never makes the master scan: the master's own check must
// find the damage, and repairs share one scan at a time.

// repair is the restoring of one damaged object from the export.
type repair struct {
	done chan struct{}
	// Set before done is closed: why d could not be restored, and
	// whether trying again may help (the scan failed, rather than found
	// no file with d's bytes), from when.
	err   error
	retry bool
	at    time.Time
}

// repairRetry is how long a repair whose scan failed (a file of the
// export kept changing under it) stands before a Get of its object may
// start another.
var repairRetry = time.Minute

// again reports whether a Get of the object may start a new repair.
func (r *repair) again() bool {
	select {
	case <-r.done:
		return r.retry && time.Since(r.at) > repairRetry
	default:
		return false
	}
}

var errStopping = errors.New("the master is stopping")

// read returns object d's bytes as stored; when verify, checked against
// d, and if damaged, once restored from the export. An object lost to
// damage, or being restored, is answered as such, not as NotFound.
func (s *Server) read(ctx context.Context, d object.Digest, verify bool) ([]byte, error) {
	b, err := s.store.ReadUnverified(d)
	switch {
	case err == nil && verify:
		if got := object.Sum(b); got != d {
			s.log.Error("damaged object in the store; restoring it from the export", "object", d.String(),
				"hashes_to", got.String())
			return s.awaitRepair(ctx, d, s.startRepair(d))
		}
	case errors.Is(err, object.ErrNotFound):
		if r, ok := s.damaged.Load(d); ok {
			r := r.(*repair)
			if r.again() {
				r = s.startRepair(d)
			}
			return s.awaitRepair(ctx, d, r)
		}
	}
	return b, err
}

// startRepair starts restoring d, unless a repair of it is under way.
func (s *Server) startRepair(d object.Digest) *repair {
	r := &repair{done: make(chan struct{})}
	for {
		old, loaded := s.damaged.LoadOrStore(d, r)
		if !loaded {
			go s.repair(d, r)
			return r
		}
		o := old.(*repair)
		select {
		case <-o.done:
			// d was lost before, and stored again since (a scan, a
			// push), and is damaged again.
			if s.damaged.CompareAndSwap(d, o, r) {
				go s.repair(d, r)
				return r
			}
		default:
			return o
		}
	}
}

// repair restores d by a scan of the export. It runs on its own, not
// bounded by the call that found the damage, so that every worker waiting
// for d gets the outcome. Scans for repairs are one at a time, and shared
// by every repair that starts meanwhile.
func (s *Server) repair(d object.Digest, r *repair) {
	defer close(r.done)
	start := time.Now()
	// Quarantined only now, with the repair on record, so that a Get
	// that finds d missing meanwhile waits for the repair instead of
	// answering NotFound; and only if still damaged, as a repair that
	// ended since the damage was found may have restored it.
	_, err := s.store.Get(s.scanCtx, d)
	if errors.Is(err, object.ErrCorrupt) || errors.Is(err, object.ErrNotFound) {
		// A scan already running when d was quarantined may have
		// passed d's file before; a scan started after it ended has
		// not.
		for try := 0; ; try++ {
			res := <-s.rescans.DoChan("", func() (any, error) { return nil, s.rescan() })
			if _, err = s.store.Get(s.scanCtx, d); err == nil || try == 1 {
				if err != nil && res.Err != nil {
					err, r.retry = res.Err, true
				}
				break
			}
		}
	}
	r.at = time.Now()
	switch {
	case err == nil:
		s.damaged.CompareAndDelete(d, r)
		s.log.Info("damaged object restored from the export", "object", d.String(), "took", time.Since(start))
		return
	case s.scanCtx.Err() != nil:
		s.damaged.CompareAndDelete(d, r)
		r.err = errStopping
		return
	case errors.Is(err, object.ErrNotFound):
		err = errors.New("no file of the export has those bytes now")
	}
	r.err = err
	s.log.Error("damaged object lost: it could not be restored from the export", "object", d.String(), "err", err)
}

// awaitRepair waits for r, the repair of d, and returns d's bytes.
func (s *Server) awaitRepair(ctx context.Context, d object.Digest, r *repair) ([]byte, error) {
	select {
	case <-r.done:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	switch {
	case errors.Is(r.err, errStopping):
		return nil, status.Errorf(codes.Unavailable, "object %s: %v", d.Short(), r.err)
	case r.err != nil:
		return nil, status.Errorf(codes.DataLoss, "object %s: %v (%v)", d.Short(), ErrMasterDamaged, r.err)
	}
	b, err := s.store.Get(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("restored object: %w", err)
	}
	return b, nil
}

// rescan scans the whole export into the store, through the scan cache:
// a quarantine counts as a removal from the store, so the scan looks at
// the store again for every file it knows, and reads again each file
// whose object or chunks are missing, storing them again.
func (s *Server) rescan() error {
	ctx := s.scanCtx
	release, err := s.store.Hold(ctx)
	if err != nil {
		return err
	}
	defer release()
	e, _, err := scan.Tree(ctx, s.lo, "", cachedPuts{s.store}, &s.scans)
	if err != nil {
		return fmt.Errorf("scan the export: %w", err)
	}
	// A damaged version object of the whole export comes back too.
	if _, err := putVersion(ctx, cachedPuts{s.store}, e); err != nil {
		return err
	}
	return s.store.Sync()
}
