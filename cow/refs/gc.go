package refs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// A pin keeps a root reachable while something uses it without a ref: a
// restore mounts a snapshot's root, and the ref may be removed meanwhile.
// Pins are files under .pins, one per user, holding the root digest.

func (d *Dir) pinPath(key string) string { return filepath.Join(d.dir, ".pins", key) }

// Pin records that key uses root.
func (d *Dir) Pin(key string, root object.Digest) error {
	return d.pin(key, root.String()+"\n")
}

// PinWhileAlive records that key uses root for as long as this process
// lives: a mount's pin. A mount killed with SIGKILL cannot unpin; gc drops a
// pin whose process is gone.
func (d *Dir) PinWhileAlive(key string, root object.Digest) error {
	return d.pin(key, fmt.Sprintf("%s\npid %d\n", root, os.Getpid()))
}

func (d *Dir) pin(key, content string) error {
	if err := os.MkdirAll(filepath.Join(d.dir, ".pins"), 0o700); err != nil {
		return err
	}
	tmp := d.pinPath(key) + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, d.pinPath(key))
}

// UnpinMine drops key's pin if this process made it with PinWhileAlive: a
// mount closing late must not drop the pin of a newer mount at the same
// mountpoint.
func (d *Dir) UnpinMine(key string) error {
	b, err := os.ReadFile(d.pinPath(key))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !strings.HasSuffix(strings.TrimSpace(string(b)), fmt.Sprintf("pid %d", os.Getpid())) {
		return nil
	}
	return d.Unpin(key)
}

// Unpin drops key's pin.
func (d *Dir) Unpin(key string) error {
	err := os.Remove(d.pinPath(key))
	if os.IsNotExist(err) {
		return nil
	}
	return err
}

// Pin is one user's hold on a root.
type Pin struct {
	Key  string
	Root object.Digest
	// Pid, when not 0, is the process the pin lasts for.
	Pid int
}

// stale reports a pin whose process is gone.
func (p Pin) stale() bool { return p.Pid > 0 && ProcessGone(p.Pid) }

// ProcessGone reports whether process pid has exited. A killed process
// nobody reaped yet is a zombie: gone all the same.
func ProcessGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// RemotePinPrefix starts the key of a pin on a version of a remote export:
// a worker holds only the part of such a version it has fetched.
const RemotePinPrefix = "remote-"

// Pins returns every pin.
func (d *Dir) Pins() ([]Pin, error) {
	ents, err := os.ReadDir(filepath.Join(d.dir, ".pins"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Pin
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d.dir, ".pins", e.Name()))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		dg, err := object.ParseDigest(lines[0])
		if err != nil {
			return nil, fmt.Errorf("pin %s: %w", e.Name(), err)
		}
		p := Pin{Key: e.Name(), Root: dg}
		if len(lines) > 1 {
			fmt.Sscanf(lines[1], "pid %d", &p.Pid)
		}
		out = append(out, p)
	}
	return out, nil
}

// GCStats says what a gc found and did.
type GCStats struct {
	Live, Removed, Young int
	RemovedBytes         int64
}

// GC removes objects that no snapshot and no pin reaches. It is safe while
// mounts run and snapshots are being taken: every writer of a ref or pin
// holds the store (object.DirStore.Hold) from its first object to its
// ref. GC first waits for the writers in progress (Quiesce), so their refs
// are in what it reads as live; it removes in batches under the store's
// exclusive lock, reading the refs and pins written since (Live.Mark), and
// only what has not been freshened since it began. Unreachable objects
// younger than grace are kept as well: a push stores its objects one call
// before the ref that names them. Objects a snapshot references without
// storing (reused from the lower it was taken over) are reached through
// that lower's snapshot or pin.
func GC(ctx context.Context, store *object.DirStore, d *Dir, grace time.Duration, dryRun bool) (GCStats, error) {
	var st GCStats
	since, err := store.Quiesce(ctx)
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	cutoff := since.Add(-grace)
	live := NewLive(store, d, false)
	live.SkipStale, live.UnpinStale = true, !dryRun
	if err := live.Mark(ctx); err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	if !dryRun {
		removeTemps(store, d, cutoff, since.Add(-max(grace, tmpAge)))
	}
	var cands []object.Digest
	err = store.Each(func(o object.StoredObject) error {
		if live.Has(o.Digest) {
			return nil
		}
		if !o.ModTime.Before(cutoff) {
			st.Young++
			return nil
		}
		if dryRun {
			st.Removed++
			st.RemovedBytes += o.Size
			return nil
		}
		cands = append(cands, o.Digest)
		return nil
	})
	if err != nil {
		return st, err
	}
	if beforeSweep != nil {
		beforeSweep()
	}
	for len(cands) > 0 {
		batch := cands[:min(len(cands), sweepBatch)]
		cands = cands[len(batch):]
		if err := sweep(ctx, store, live, batch, cutoff, &st); err != nil {
			return st, err
		}
	}
	st.Live = len(live.Keep)
	return st, nil
}

// tmpAge is the least age of a temporary file gc removes while the
// process that writes it may be alive.
const tmpAge = 10 * time.Minute

// removeTemps removes what writers killed mid-way left in the temporary
// directories, but not what one is writing now (a cache's fetch holds
// nothing): a file older than cutoff whose writer is gone (the object
// store names its temporary files put-PID-N), or any older than
// oldCutoff.
func removeTemps(store *object.DirStore, d *Dir, cutoff, oldCutoff time.Time) {
	for _, tmp := range []string{filepath.Join(store.Dir(), "tmp"), filepath.Join(d.dir, ".tmp"), filepath.Join(d.pushed.dir, ".tmp")} {
		ents, _ := os.ReadDir(tmp)
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil || !fi.ModTime().Before(cutoff) {
				continue
			}
			var pid, n int
			gone := false
			if _, err := fmt.Sscanf(e.Name(), "put-%d-%d", &pid, &n); err == nil && pid > 0 {
				gone = ProcessGone(pid)
			}
			if gone || fi.ModTime().Before(oldCutoff) {
				os.Remove(filepath.Join(tmp, e.Name()))
			}
		}
	}
}

// sweepBatch is how many removals one hold of the store's exclusive lock
// covers: a few milliseconds of unlinks, which is as long as a snapshot
// starting meanwhile waits.
const sweepBatch = 256

// beforeSweep, when set by a test, runs between listing what to remove
// and removing it: the window a snapshot or restore finishing then falls
// into.
var beforeSweep func()

func sweep(ctx context.Context, store *object.DirStore, live *Live, batch []object.Digest, cutoff time.Time, st *GCStats) error {
	w, err := store.LockSweep(ctx)
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	defer w.Unlock()
	// A snapshot or restore that finished since the listing reaches
	// objects it need not have freshened (a scan cache's, a pinned
	// snapshot's): read its ref or pin now, when none can be being
	// written.
	if err := live.Mark(ctx); err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	for _, dg := range batch {
		if live.Has(dg) {
			continue
		}
		removed, size, err := w.RemoveIfOlder(dg, cutoff)
		if err != nil {
			return fmt.Errorf("gc: remove %s: %w", dg.Short(), err)
		}
		if removed {
			st.Removed++
			st.RemovedBytes += size
		} else {
			// Freshened since the listing: a writer uses it.
			st.Young++
		}
	}
	return nil
}
