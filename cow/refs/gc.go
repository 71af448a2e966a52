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
	if err := os.MkdirAll(filepath.Join(d.dir, ".pins"), 0o755); err != nil {
		return err
	}
	tmp := d.pinPath(key) + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
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
// mounts run and snapshots are being taken: objects younger than grace
// are kept, and a snapshot freshens every object it stores, stores again
// or takes from its scan cache (a file object and each of its chunks,
// checking that each is there), so an object a snapshot in progress
// depends on is young. The window between this gc's look at an object's
// age and its removal stays open: a snapshot that freshens an object in
// it loses the object, and fails to verify. Objects a
// snapshot references without storing (reused from the lower it was taken
// over) are reached through that lower's snapshot or pin.
func GC(ctx context.Context, store *object.DirStore, d *Dir, grace time.Duration, dryRun bool) (GCStats, error) {
	var st GCStats
	start := time.Now()
	live := map[object.Digest]bool{}
	snaps, err := d.List()
	if err != nil {
		return st, err
	}
	for _, s := range snaps {
		if err := object.Reachable(ctx, store, s.Root, live); err != nil {
			// Never delete on a partial view of what is live.
			return st, fmt.Errorf("gc: reading snapshot %s: %w", s.Name, err)
		}
	}
	pins, err := d.Pins()
	if err != nil {
		return st, err
	}
	for _, p := range pins {
		if p.stale() {
			// Its mount was killed; nothing uses the root now.
			if !dryRun {
				d.Unpin(p.Key)
			}
			continue
		}
		reach := object.Reachable
		if strings.HasPrefix(p.Key, RemotePinPrefix) {
			reach = object.ReachablePresent
		}
		if err := reach(ctx, store, p.Root, live); err != nil {
			return st, fmt.Errorf("gc: reading root %s of pin %s: %w", p.Root.Short(), p.Key, err)
		}
	}
	st.Live = len(live)
	cutoff := start.Add(-grace)
	// What a writer killed mid-way left in the temporary directories.
	for _, tmp := range []string{filepath.Join(store.Dir(), "tmp"), filepath.Join(d.dir, ".tmp")} {
		ents, _ := os.ReadDir(tmp)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) && !dryRun {
				os.Remove(filepath.Join(tmp, e.Name()))
			}
		}
	}
	err = store.Each(func(o object.StoredObject) error {
		if live[o.Digest] {
			return nil
		}
		if o.ModTime.After(cutoff) {
			st.Young++
			return nil
		}
		st.Removed++
		st.RemovedBytes += o.Size
		if dryRun {
			return nil
		}
		return store.Remove(o.Digest)
	})
	return st, err
}
