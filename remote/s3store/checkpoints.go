package s3store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/remote"
)

// A checkpoint is one key, checkpoints/<NAME>, written last and once: it
// names the version object of a snapshot a worker pushed (remote's: a
// tree with one entry, root, whose attributes are the snapshot root's),
// as a master's refs/.pushed/NAME does. Its body is a CheckpointInfo.
// The write is conditional, so a name is never taken twice: the same
// snapshot pushed again finds its own key and succeeds, another under a
// taken name is refused.
const checkpointsDir = "checkpoints/"

// CheckpointInfo is the body of a checkpoint's key.
type CheckpointInfo struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	Created time.Time `json:"created"`
	Parent  string    `json:"parent,omitempty"`
	Source  string    `json:"source,omitempty"`
}

// ErrCheckpointExists: the name holds another snapshot in the bucket.
var ErrCheckpointExists = errors.New("another snapshot holds the name in the bucket")

func (s *Store) checkpointKey(name string) string { return s.key(checkpointsDir + name) }

// Checkpoint returns the version object of checkpoint name; a name the
// bucket does not hold is an error wrapping refs.ErrNotFound.
func (s *Store) Checkpoint(ctx context.Context, name string) (object.Digest, error) {
	info, err := s.checkpoint(ctx, name)
	if err != nil {
		return object.Zero, err
	}
	return object.ParseDigest(info.Version)
}

func (s *Store) checkpoint(ctx context.Context, name string) (CheckpointInfo, error) {
	if err := refs.ValidName(name); err != nil {
		return CheckpointInfo{}, err
	}
	b, err := s.getKey(ctx, s.checkpointKey(name))
	if errors.Is(err, object.ErrNotFound) {
		return CheckpointInfo{}, fmt.Errorf("no checkpoint %s in %s (%w)", name, s.URL(), refs.ErrNotFound)
	}
	if err != nil {
		return CheckpointInfo{}, fmt.Errorf("checkpoint %s: %w", name, err)
	}
	var info CheckpointInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return CheckpointInfo{}, fmt.Errorf("checkpoint %s in %s: %v: %w", name, s.URL(), err, object.ErrCorrupt)
	}
	if _, err := object.ParseDigest(info.Version); err != nil {
		return CheckpointInfo{}, fmt.Errorf("checkpoint %s in %s: %v: %w", name, s.URL(), err, object.ErrCorrupt)
	}
	return info, nil
}

// Checkpoints returns the names of every checkpoint, in the store's
// order.
func (s *Store) Checkpoints(ctx context.Context) ([]string, error) {
	var out []string
	err := s.listKeys(ctx, checkpointsDir, 0, func(name string) bool {
		out = append(out, name)
		return true
	})
	return out, err
}

// Push sends snapshot snap, kept in local, to the bucket: every object it
// reaches that the bucket lacks (one listing of objects/, as a publish),
// then its key, last, so that a checkpoint found is whole. It stores the
// snapshot's version object in local first, to send it from there. The
// same snapshot pushed again sends nothing and succeeds; another under a
// name the bucket holds is refused (ErrCheckpointExists) before anything
// is sent. It returns how many objects it sent.
func (s *Store) Push(ctx context.Context, local object.GetPutter, snap refs.Snapshot) (int, error) {
	if err := refs.ValidName(snap.Name); err != nil {
		return 0, err
	}
	root := snap.Root
	v, err := remote.PutVersion(ctx, local, root)
	if err != nil {
		return 0, fmt.Errorf("push %s: store version: %w", snap.Name, err)
	}
	if done, err := s.pushedAlready(ctx, snap.Name, v); done || err != nil {
		return 0, err
	}
	reached, err := reachedBy(ctx, local, v)
	if err != nil {
		return 0, fmt.Errorf("push %s: %w", snap.Name, err)
	}
	// From the listing to the key, no gc of the bucket runs (locks).
	unlock, err := s.lockForWrite(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	prog, err := uploadMissing(ctx, s, local, reached, 16, 0, func(PublishProgress) {})
	if err != nil {
		return 0, fmt.Errorf("push %s: %w", snap.Name, err)
	}
	b, err := json.Marshal(CheckpointInfo{Name: snap.Name, Version: v.String(), Created: time.Now().UTC(),
		Parent: snap.Parent, Source: snap.Source})
	if err != nil {
		return 0, err
	}
	// The key last: until it is written no restore finds the
	// checkpoint, and once it is, every object it reaches is there.
	err = s.putOnce(ctx, s.checkpointKey(snap.Name), b)
	if errors.Is(err, errExists) {
		// Another push of the name won the race meanwhile.
		if done, err := s.pushedAlready(ctx, snap.Name, v); done || err != nil {
			return int(prog.Uploaded), err
		}
		return int(prog.Uploaded), fmt.Errorf("push %s: %w", snap.Name, ErrCheckpointExists)
	}
	if err != nil {
		return int(prog.Uploaded), fmt.Errorf("push %s: %w", snap.Name, err)
	}
	s.mergeWritten(ctx)
	s.cfg.Log.Info("checkpoint pushed", "name", snap.Name, "version", v.String(), "bucket", s.URL(), "objects", prog.Uploaded)
	return int(prog.Uploaded), nil
}

// pushedAlready reports whether checkpoint name is version v; a name
// that holds another version is ErrCheckpointExists.
func (s *Store) pushedAlready(ctx context.Context, name string, v object.Digest) (bool, error) {
	had, err := s.Checkpoint(ctx, name)
	switch {
	case errors.Is(err, refs.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("push %s: %w", name, err)
	case had != v:
		return false, fmt.Errorf("push %s: %w (version %s, not %s)", name, ErrCheckpointExists, had.Short(), v.Short())
	}
	return true, nil
}

// Checkpointed is a checkpoint as its key describes it, with the leases
// of running restores that hold it.
type Checkpointed struct {
	CheckpointInfo
	Leases int
}

// ListCheckpoints returns every checkpoint, oldest first, each with the
// body of its key (a GET a checkpoint, a few at a time) and the leases
// that hold its version. One removed since the listing is left out.
func (s *Store) ListCheckpoints(ctx context.Context) ([]Checkpointed, error) {
	names, err := s.Checkpoints(ctx)
	if err != nil {
		return nil, err
	}
	leased, err := s.leased(ctx, time.Now())
	if err != nil {
		return nil, err
	}
	out := make([]Checkpointed, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, name := range names {
		g.Go(func() error {
			info, err := s.checkpoint(gctx, name)
			if errors.Is(err, refs.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			d, _ := object.ParseDigest(info.Version)
			out[i] = Checkpointed{CheckpointInfo: info, Leases: leased[d]}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out = slices.DeleteFunc(out, func(c Checkpointed) bool { return c.Name == "" })
	slices.SortStableFunc(out, func(a, b Checkpointed) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// RemoveCheckpoint removes checkpoint name's key: the next gc removes
// what only it reached, except what a running restore's lease holds
// (decision 0078). A name the bucket does not hold is an error wrapping
// refs.ErrNotFound.
func (s *Store) RemoveCheckpoint(ctx context.Context, name string) error {
	if _, err := s.checkpoint(ctx, name); err != nil {
		return err
	}
	if err := s.deleteKey(ctx, s.checkpointKey(name)); err != nil {
		return fmt.Errorf("remove checkpoint %s: %w", name, err)
	}
	return nil
}
