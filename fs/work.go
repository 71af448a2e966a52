package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cowfs/cowfs/cow"
)

// Work is a mount's work directory and the upper's metadata in it,
// opened by OpenWork ahead of the lower, for New (Options.Opened).
type Work struct{ w *cow.Work }

// OpenWork makes o.Work if missing and opens it with the upper's
// metadata: the part of New that needs neither the lower nor the upper,
// which a caller runs while its lower opens (a remote version resolved,
// its root fetched) instead of before New. Nothing of the upper is made
// or changed; New does that, in the order it always does. Close it if
// New is not called.
func OpenWork(o Options) (*Work, error) {
	if o.Upper == "" || o.Work == "" {
		return nil, errors.New("an upper and a work directory are required")
	}
	if err := os.MkdirAll(o.Work, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.Work, err)
	}
	w, err := cow.OpenWork(cow.Options{UpperDir: o.Upper, WorkDir: o.Work, MetaDir: filepath.Join(o.Work, "meta"), Reserve: o.Reserve})
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, fmt.Errorf("upper %s is in use by another cowfs mount: %w", o.Upper, err)
	} else if err != nil {
		return nil, err
	}
	return &Work{w: w}, nil
}

// Close releases w unless New took it over. A nil Work is closed.
func (w *Work) Close() {
	if w != nil {
		w.w.Close()
	}
}

// take returns what New hands to cow.New, once: a second New with the
// same options finds nothing to take.
func (w *Work) take() *cow.Work {
	if w == nil {
		return nil
	}
	cw := w.w
	w.w = nil
	return cw
}
