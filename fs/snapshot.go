package fs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow"
	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/scan"
)

// SnapshotResult describes a snapshot just taken; the workspace's control
// socket sends it to cowfs snapshot as JSON.
type SnapshotResult struct {
	Name         string        `json:"name"`
	Root         string        `json:"root"`
	Hold         time.Duration `json:"hold"`
	Files        int           `json:"files"`
	Dirs         int           `json:"dirs"`
	BytesRead    int64         `json:"bytes_read"`
	ChunksReused int           `json:"chunks_reused"`
	DirsReused   int           `json:"dirs_reused"`
	// Flushed is how many files open for writing had their data in the
	// kernel's writeback cache flushed to cowfs first.
	Flushed int `json:"flushed,omitempty"`
}

// Snapshot records the mount's merged view, as it is at one instant, as the
// snapshot name. Processes keep running; the hold on their writes lasts as
// long as turning what changed into objects takes. The ref is written last,
// so a crash leaves either a whole snapshot or none.
func (m *Mount) Snapshot(ctx context.Context, name string) (*SnapshotResult, error) {
	if m.refs == nil {
		return nil, errors.New("this mount has no state directory to keep snapshots in")
	}
	if err := refs.ValidName(name); err != nil {
		return nil, err
	}
	if _, err := m.refs.Get(name); err == nil {
		return nil, fmt.Errorf("snapshot %s: %w", name, refs.ErrExists)
	}
	// Dirty pages (of shared writable mappings; of every write with the
	// writeback cache) reach cowfs only when the kernel writes them
	// back; have it do that, and wait, before holding writes (while
	// holding, the write-back would wait for the hold). So a snapshot
	// holds what was written before it began, file by file; see
	// docs/checkpoints.md for why that is not one instant.
	flushed := m.flushWriters()
	// From the first object stored or freshened to the ref: no gc or
	// cache eviction, in this process or another, removes anything
	// meanwhile (object.DirStore.Hold).
	release, err := m.store.Hold(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", name, err)
	}
	defer release()
	store := snapshotStore{DirStore: m.store}
	if m.storeBesideUpper() {
		store.fs = m.fs
	}
	root, rootEntry, stats, hold, err := m.capture(ctx, store)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", name, err)
	}
	if err := m.complete(ctx, root); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", name, err)
	}
	// Neither the snapshot's objects (snapshotStore) nor those a remote
	// cache stored were fsync'd one by one; the ref must reach only
	// durable ones.
	if err := m.store.Sync(); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", name, err)
	}
	// The ref makes the snapshot: not for a caller that gave up (its
	// deadline, or it hung up), who was told it failed.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("snapshot %s: given up before it was recorded: %w", name, err)
	}
	err = m.refs.Create(refs.Snapshot{
		Name:    name,
		Root:    rootEntry,
		Created: time.Now().UTC(),
		Parent:  m.parent,
		Source:  m.Dir,
		Lower:   m.lowerDir,
	})
	if err != nil {
		return nil, err
	}
	m.log.Info("snapshot", "name", name, "root", root.String(), "hold", hold, "files", stats.Files, "bytes_read", stats.BytesRead)
	return &SnapshotResult{
		Name: name, Root: root.String(), Hold: hold,
		Files: stats.Files, Dirs: stats.Dirs, BytesRead: stats.BytesRead,
		ChunksReused: stats.ChunksReused, DirsReused: stats.DirsReused,
		Flushed: flushed,
	}, nil
}

// captureTries is how many times a snapshot of a remote-backed mount
// captures before it gives up when the capture keeps finding missing what
// it needs from the master: the workspace changed it between the fetch
// and the hold, or it left the store.
const captureTries = 3

// capture captures the mount's merged view, holding every change while it
// does, and returns how long it held them. Over a local directory, the
// lower is taken in first, holding nothing (cow.FS.PrepareLower), so that
// the hold lasts as long as what changed in the upper takes, not a read of
// the whole lower; and at a lower priority (lowPriority), so that the
// requests served meanwhile wait neither for its CPU nor its P. Over a
// remote lower, nothing held may wait on the master: what the capture
// will read from the lower is fetched first, holding nothing
// (cow.FS.PrepareCapture), and the capture reads the lower from the local
// store alone. What it still lacks (the workspace changed in between)
// makes it let go, fetch and try again. With the master gone, the
// snapshot fails at that fetch, having held nothing for it.
func (m *Mount) capture(ctx context.Context, store object.GetPutter) (object.Digest, object.Entry, cow.CaptureStats, time.Duration, error) {
	if m.fetch == nil {
		// Behind the mount's requests: it holds nothing, so nothing
		// waits for it.
		var prep *scan.Prep
		var err error
		lowPriority(func() { prep, err = m.fs.PrepareLower(ctx, store) })
		if err != nil {
			if ctx.Err() != nil {
				return object.Zero, object.Entry{}, cow.CaptureStats{}, 0, err
			}
			// The capture reads what it needs itself, holding
			// writes meanwhile, and says what is wrong if anything
			// still is.
			m.log.Warn("snapshot: could not take the lower in before holding writes", "err", err)
			prep = nil
		}
		start := time.Now()
		root, e, stats, err := m.fs.CapturePrepared(ctx, store, prep)
		return root, e, stats, time.Since(start), err
	}
	var hold time.Duration
	for try := 1; ; try++ {
		if err := m.fs.PrepareCapture(ctx); err != nil {
			return object.Zero, object.Entry{}, cow.CaptureStats{}, hold, err
		}
		start := time.Now()
		root, e, stats, err := m.fs.CaptureLocal(ctx, store, m.store)
		hold += time.Since(start)
		if !errors.Is(err, lower.ErrNotLocal) {
			return root, e, stats, hold, err
		}
		if try == captureTries {
			return root, e, stats, hold, fmt.Errorf("after %d fetches the capture still lacked objects of the lower: %w", try, err)
		}
		m.log.Info("snapshot: the capture needs more from the master; fetching it and capturing again", "err", err)
	}
}

// complete makes a snapshot of a remote-backed mount stand on its own: what
// it references unchanged from the remote version (whole trees, chunks
// never read) is fetched into the local store now, so the snapshot can be
// restored and verified with the master gone and survives cache eviction.
//
// A tree whose every object was found in the store by an earlier
// snapshot is not walked again while nothing has left the store since
// (object.KnownSet): the trees a workspace does not touch are most of
// them, and walking them read every file object of the version back from
// the store and looked up every chunk, half a second a snapshot for
// 10,000 files. Nothing needs freshening for a gc: gc reads the refs
// written while it ran (refs.Live).
func (m *Mount) complete(ctx context.Context, root object.Digest) error {
	if m.fetch == nil {
		return nil
	}
	m.completeTrees.Begin(m.store)
	if err := m.completeTree(ctx, root); err != nil {
		return fmt.Errorf("fetch what the snapshot references: %w", err)
	}
	return nil
}

// completeTree brings tree d and everything under it into the store.
func (m *Mount) completeTree(ctx context.Context, d object.Digest) error {
	if m.completeTrees.Has(d) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Through the fetcher (a cache), which stores what it fetches.
	b, err := m.fetch.Get(ctx, d)
	if err != nil {
		return err
	}
	t, err := object.DecodeTree(b)
	if err != nil {
		return fmt.Errorf("tree %s: %w", d.Short(), err)
	}
	for _, e := range t.Entries {
		switch {
		case e.Mode&unix.S_IFMT == unix.S_IFDIR:
			if err := m.completeTree(ctx, e.Object); err != nil {
				return err
			}
		case e.Mode&unix.S_IFMT == unix.S_IFREG && !e.Object.IsZero():
			fb, err := m.fetch.Get(ctx, e.Object)
			if err != nil {
				return err
			}
			f, err := object.DecodeFile(fb)
			if err != nil {
				return fmt.Errorf("file %q: %w", e.Name, err)
			}
			for _, c := range f.Chunks {
				if c.IsZero() {
					continue
				}
				if ok, err := m.store.Has(ctx, c); err != nil {
					return err
				} else if ok {
					continue
				}
				if _, err := m.fetch.Get(ctx, c); err != nil {
					return err
				}
			}
		}
	}
	m.completeTrees.Add(d)
	return nil
}

// snapshotStore stores a snapshot's objects without an fsync each
// (PutCached): the snapshot syncs the store once, with syncfs, before it
// writes its ref. Until then no ref reaches them, and an object a crash
// left short is replaced by the next Put of its bytes. An fsync per
// object made the first snapshot of 20000 small lower files take 17 to
// 35 s, writes held all along.
//
// With fs set, it also keeps off the reserve the upper keeps for its
// metadata database (cow.Options.Reserve): a big snapshot must fail with
// ENOSPC, not fill the disk under it.
type snapshotStore struct {
	*object.DirStore
	fs *cow.FS
}

func (s snapshotStore) Put(ctx context.Context, encoded []byte) (object.Digest, error) {
	if s.fs != nil {
		if err := s.fs.NeedSpace(int64(len(encoded))); err != nil {
			return object.Digest{}, fmt.Errorf("store object: %w", err)
		}
	}
	return s.DirStore.PutCached(ctx, encoded)
}

// storeBesideUpper reports whether the object store and the upper share a
// filesystem, as they do under one state directory.
func (m *Mount) storeBesideUpper() bool {
	var a, b unix.Stat_t
	return unix.Stat(m.store.Dir(), &a) == nil && unix.Stat(m.upper, &b) == nil && a.Dev == b.Dev
}
