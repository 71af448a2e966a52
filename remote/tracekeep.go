package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/remote/pb"
)

// A master keeps, per subtree and snapshot, the last trace a worker put
// (decision 0070): a worker that never mounted a spider before starts its
// first task with what another worker's task of it read.

// traceFile is where the master keeps the trace of path and snapshot, or
// an error for a path or name a worker may not ask for.
func (s *Server) traceFile(path, snapshot string) (string, error) {
	if s.traces == "" {
		return "", status.Error(codes.Unimplemented, "this master keeps no traces")
	}
	key, err := TraceName(path, snapshot)
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "%v", err)
	}
	return filepath.Join(s.traces, key), nil
}

// TraceKey names the trace of a mount of subtree sub (clean, relative)
// restoring snapshot ("" for the export itself): where a master or a
// bucket keeps it.
func TraceKey(sub, snapshot string) string {
	h := sha256.Sum256([]byte(sub + "\x00" + snapshot))
	return hex.EncodeToString(h[:16])
}

// TraceName is TraceKey of a subtree path and a snapshot a worker sent,
// or an error if the path is not a clean relative one, or the snapshot
// not a valid name: what a master and a bucket refuse to keep.
func TraceName(path, snapshot string) (string, error) {
	sub, err := names.CleanRel(path)
	if err != nil {
		return "", err
	}
	if snapshot != "" {
		if err := refs.ValidName(snapshot); err != nil {
			return "", err
		}
	}
	return TraceKey(sub, snapshot), nil
}

// PutTrace keeps a worker's trace, once it parses whole: what a master
// hands out is a trace, whoever sent it. It may still list anything; a
// trace never changes what a read returns (decision 0064).
func (s *Server) PutTrace(ctx context.Context, r *pb.PutTraceRequest) (*pb.PutTraceResponse, error) {
	path, err := s.traceFile(r.GetPath(), r.GetSnapshot())
	if err != nil {
		return nil, err
	}
	if _, err := ParseTrace(r.GetTrace(), "put"); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	s.traceMu.Lock()
	defer s.traceMu.Unlock()
	if err := WriteWhole(path, ".trace-", r.GetTrace()); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if err := s.pruneTraces(); err != nil {
		s.log.Warn("could not remove old traces", "dir", s.traces, "err", err)
	}
	return &pb.PutTraceResponse{}, nil
}

// maxTraces bounds the traces a master keeps: one per subtree and
// snapshot mounted, each up to a few MiB (TraceObjects lines), and
// every checkpoint restored is a snapshot of its own.
var maxTraces = 1024

// pruneTraces removes the traces put longest ago beyond maxTraces, and
// what a put cut short by a crash left; traceMu is held.
func (s *Server) pruneTraces() error {
	ents, err := os.ReadDir(s.traces)
	if err != nil {
		return err
	}
	type kept struct {
		name string
		mod  time.Time
	}
	var all []kept
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if strings.HasPrefix(e.Name(), ".trace-") {
			// No put is under way (traceMu): a crash's leftover.
			os.Remove(filepath.Join(s.traces, e.Name()))
			continue
		}
		all = append(all, kept{e.Name(), info.ModTime()})
	}
	if len(all) <= maxTraces {
		return nil
	}
	slices.SortFunc(all, func(a, b kept) int { return a.mod.Compare(b.mod) })
	for _, k := range all[:len(all)-maxTraces] {
		if err := os.Remove(filepath.Join(s.traces, k.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// GetTrace returns the trace last put for a subtree and snapshot.
func (s *Server) GetTrace(ctx context.Context, r *pb.GetTraceRequest) (*pb.GetTraceResponse, error) {
	path, err := s.traceFile(r.GetPath(), r.GetSnapshot())
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.NotFound, "no trace")
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &pb.GetTraceResponse{Trace: b}, nil
}

// TraceCallTimeout is how long a worker's mount gives a call about
// traces, to a master or a bucket: a mount neither waits for nor fails on
// them, and an unmount puts its trace before it ends.
const TraceCallTimeout = 2 * time.Second

// PutTrace sends t to the master as the trace of subtree sub restoring
// snapshot, in one call, within ctx.
func (c *Client) PutTrace(ctx context.Context, sub, snapshot string, t *Trace) error {
	_, err := c.ex.PutTrace(ctx, &pb.PutTraceRequest{Path: sub, Snapshot: snapshot, Trace: EncodeTrace(t)})
	if err != nil {
		return fmt.Errorf("put trace: %s", status.Convert(err).Message())
	}
	return nil
}

// ErrNoTrace is GetTrace's error when the master has no trace to give:
// none was put, or it keeps none (an older master among them).
var ErrNoTrace = errors.New("the master has no trace")

// GetTrace returns the master's trace of subtree sub restoring snapshot,
// parsed, in one call, within ctx.
func (c *Client) GetTrace(ctx context.Context, sub, snapshot string) (*Trace, error) {
	r, err := c.ex.GetTrace(ctx, &pb.GetTraceRequest{Path: sub, Snapshot: snapshot})
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound, codes.Unimplemented:
		return nil, ErrNoTrace
	default:
		return nil, fmt.Errorf("get trace: %s", status.Convert(err).Message())
	}
	return ParseTrace(r.GetTrace(), "from "+c.cfg.Addr)
}
