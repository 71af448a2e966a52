package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/remote/pb"
)

// Put stores what a worker pushes, under the digests the bytes hash to.
func (s *Server) Put(stream pb.Export_PutServer) error {
	var n int64
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			if err := s.store.Sync(); err != nil {
				return status.Errorf(codes.Internal, "sync: %v", err)
			}
			return stream.SendAndClose(&pb.PutResponse{Stored: n})
		}
		if err != nil {
			return err
		}
		// The store refuses an object that does not decode (a blob
		// over a chunk, a garbage tree): the worker sent it wrong.
		if _, err := s.store.PutPacked(stream.Context(), r.GetObject()); errors.Is(err, object.ErrCorrupt) {
			return status.Errorf(codes.InvalidArgument, "object %d: %v", n, err)
		} else if err != nil {
			return status.Errorf(codes.Internal, "store: %v", err)
		}
		n++
	}
}

// PutRef names a pushed snapshot, once every object it reaches is here.
// Pushed snapshots have a namespace of their own (refs.Dir.Pushed), so a
// push never takes a name of the master's own snapshots; when those are
// served too (ServeSnapshots), a push of a name one of them holds is
// refused as well, so that no name on the wire means two snapshots.
// Without ServeSnapshots it is not: the refusal would tell a worker what
// the master's own snapshots are called.
func (s *Server) PutRef(ctx context.Context, r *pb.PutRefRequest) (*pb.PutRefResponse, error) {
	if err := refs.ValidName(r.GetName()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	if s.serveSnapshots {
		_, err := s.refs.Get(r.GetName())
		if err == nil {
			return nil, status.Errorf(codes.AlreadyExists, "snapshot %s exists on the master", r.GetName())
		}
		if !errors.Is(err, refs.ErrNotFound) {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
	}
	v, err := digestOf(r.GetVersion())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	// From the check that every object is here to the ref: no gc
	// removes one meanwhile (object.DirStore.Hold).
	release, err := s.store.Hold(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	defer release()
	_, root, err := OpenVersion(ctx, s.store, v)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	// A ref must never name a snapshot the master cannot give whole.
	if err := s.presentAndFresh(ctx, root.Object); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "snapshot %s is incomplete on the master: %v", r.GetName(), err)
	}
	root.Name = ""
	err = s.refs.Pushed().Create(refs.Snapshot{Name: r.GetName(), Root: root,
		Created: time.Now().UTC(), Parent: r.GetParent(), Source: refs.PushedSource})
	if errors.Is(err, refs.ErrExists) {
		// The same snapshot pushed again (cowfs push after a push
		// whose reply was lost) is no error; another under its name is.
		if had, gerr := s.refs.Pushed().Get(r.GetName()); gerr == nil && had.Root.Object == root.Object {
			return &pb.PutRefResponse{}, nil
		}
		return nil, status.Errorf(codes.AlreadyExists, "snapshot %s exists on the master", r.GetName())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	s.log.Info("snapshot pushed", "name", r.GetName(), "root", root.Object.String())
	return &pb.PutRefResponse{}, nil
}

// presentAndFresh checks that every object under root is stored
// (Reachable reads trees and file objects, but only lists chunks), and
// freshens each: a push sends only what the master lacks, so a snapshot
// can reach objects stored long ago that nothing else reaches now, which a
// gc that began before this call would otherwise remove after the ref is
// written (object.DirStore.Quiesce).
func (s *Server) presentAndFresh(ctx context.Context, root object.Digest) error {
	set := map[object.Digest]bool{}
	if err := object.Reachable(ctx, s.store, root, set); err != nil {
		return err
	}
	for d := range set {
		if !s.store.Freshen(d) {
			return fmt.Errorf("object %s missing", d.Short())
		}
	}
	return nil
}

// GetRef returns a snapshot's version object, storing it if need be. It
// serves pushed snapshots, and the master's own only with ServeSnapshots:
// they may be of trees outside the export. A name both namespaces hold
// (the master's own snapshot took it after the push) is the pushed
// snapshot's, which workers knew it by first. Otherwise the master's own
// snapshot's name gets the answer a missing name does.
func (s *Server) GetRef(ctx context.Context, r *pb.GetRefRequest) (*pb.GetRefResponse, error) {
	if err := refs.ValidName(r.GetName()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	snap, err := s.refs.Pushed().Get(r.GetName())
	if errors.Is(err, refs.ErrNotFound) && s.serveSnapshots {
		snap, err = s.refs.Get(r.GetName())
	}
	if errors.Is(err, refs.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no snapshot %s on the master", r.GetName())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	v, err := putVersion(ctx, cachedPuts{s.store}, snap.Root)
	if err == nil {
		err = s.store.Sync()
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &pb.GetRefResponse{Version: v[:]}, nil
}

// Push sends snapshot snap from store to the master: the objects the master
// lacks, then its name. It stores the snapshot's version object in store
// first, to send it from there. It is safe to repeat after a failure.
func (c *Client) Push(ctx context.Context, store object.GetPutter, snap refs.Snapshot) (sent int, err error) {
	v, err := putVersion(ctx, store, snap.Root)
	if err != nil {
		return 0, err
	}
	set := map[object.Digest]bool{v: true}
	if err := object.Reachable(ctx, store, snap.Root.Object, set); err != nil {
		return 0, fmt.Errorf("push %s: %w", snap.Name, err)
	}
	all := make([]object.Digest, 0, len(set))
	for d := range set {
		all = append(all, d)
	}
	var missing []object.Digest
	for i := 0; i < len(all); i += 10000 {
		batch := all[i:min(i+10000, len(all))]
		has, err := c.Has(ctx, batch)
		if err != nil {
			return 0, fmt.Errorf("push %s: %w", snap.Name, err)
		}
		for j, ok := range has {
			if !ok {
				missing = append(missing, batch[j])
			}
		}
	}
	// The version object last: the master checks completeness from it.
	for i, d := range missing {
		if d == v {
			missing[i], missing[len(missing)-1] = missing[len(missing)-1], missing[i]
		}
	}
	// A push is as big as what changed: it gets the caller's deadline (or
	// an hour), not the one for reads.
	total := time.Hour
	if dl, ok := ctx.Deadline(); ok {
		total = time.Until(dl)
	}
	err = c.retryFor(ctx, "push "+snap.Name, total, total, func(ctx context.Context) error {
		st, err := c.ex.Put(ctx)
		if err != nil {
			return err
		}
		for _, d := range missing {
			b, err := store.Get(ctx, d)
			if err != nil {
				return status.Errorf(codes.Internal, "local object %s: %v", d.Short(), err)
			}
			if err := st.Send(&pb.PutRequest{Object: b}); err != nil {
				_, err = st.CloseAndRecv()
				return err
			}
		}
		_, err = st.CloseAndRecv()
		return err
	})
	if err != nil {
		return 0, err
	}
	err = c.retry(ctx, "name "+snap.Name, func(ctx context.Context) error {
		_, err := c.ex.PutRef(ctx, &pb.PutRefRequest{Name: snap.Name, Version: v[:], Parent: snap.Parent})
		return err
	})
	return len(missing), err
}

// GetRef asks for the version object of a snapshot on the master.
func (c *Client) GetRef(ctx context.Context, name string) (object.Digest, error) {
	missing := false
	v, err := c.versionCall(ctx, "snapshot "+name, c.cfg.CallTimeout, c.cfg.Timeout, func(ctx context.Context) ([]byte, error) {
		r, err := c.ex.GetRef(ctx, &pb.GetRefRequest{Name: name})
		missing = status.Code(err) == codes.NotFound
		return r.GetVersion(), err
	})
	if missing && err != nil {
		return v, fmt.Errorf("%w (%w)", err, refs.ErrNotFound)
	}
	return v, err
}
