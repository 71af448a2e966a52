// Package control is the local protocol between the cowfs CLI and a running
// mount process: one JSON request and one JSON reply per connection on a
// unix socket that only the mount's owner can open. It carries requests a
// mount must serve itself, such as taking a snapshot of its live view.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// Request is one call.
type Request struct {
	Op   string `json:"op"` // "snapshot", "push", "status", "warmup"
	Name string `json:"name,omitempty"`
	// Paths are what a warmup fetches, relative to the mountpoint;
	// none: everything.
	Paths []string `json:"paths,omitempty"`
	// Deadline is when the caller stops waiting for the reply; the
	// mount gives up on the request a little before.
	Deadline time.Time `json:"deadline,omitzero"`
}

// Reply answers a Request: Error, or the op's result.
type Reply struct {
	Error    string          `json:"error,omitempty"`
	Snapshot *SnapshotResult `json:"snapshot,omitempty"`
	Status   *Status         `json:"status,omitempty"`
	// Pushed counts the objects a push sent.
	Pushed int `json:"pushed,omitempty"`
	// Warmup is how far a warmup got.
	Warmup *object.PrefetchProgress `json:"warmup,omitempty"`
	// More says that this reply tells progress and another follows.
	More bool `json:"more,omitempty"`
}

// Status describes a running mount.
type Status struct {
	Mountpoint string `json:"mountpoint"`
	// Source is the lower: a directory, "snapshot NAME", or the remote
	// export's address and path.
	Source string `json:"source"`
	// Version is the pinned version of a remote lower.
	Version string `json:"version,omitempty"`
	Upper   string `json:"upper"`
	// Pid is the mount process: cowfs unmount waits for it to finish.
	Pid    int           `json:"pid"`
	Remote *RemoteStatus `json:"remote,omitempty"`
}

// RemoteStatus counts what a remote lower did.
type RemoteStatus struct {
	Hits         int64 `json:"cache_hits"`
	Misses       int64 `json:"cache_misses"`
	BytesFetched int64 `json:"bytes_fetched"`
	Retries      int64 `json:"retries"`
	Errors       int64 `json:"errors"`
	Corrupt      int64 `json:"corrupt_refetched"`
	Evicted      int64 `json:"evicted"`
	// Prefetch is nil unless the mount prefetches.
	Prefetch *object.PrefetchProgress `json:"prefetch,omitempty"`
}

// SnapshotResult describes a snapshot just taken.
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

// Handler serves requests; package fs's Mount is one.
type Handler interface {
	Snapshot(ctx context.Context, name string) (*SnapshotResult, error)
	Status() *Status
	// Push sends snapshot name to the mount's master.
	Push(ctx context.Context, name string) (int, error)
}

// Warmer is a Handler that can fetch its remote lower's objects ahead of
// use (cowfs warmup), calling progress now and then while it does.
type Warmer interface {
	Warmup(ctx context.Context, paths []string, progress func(object.PrefetchProgress)) (object.PrefetchProgress, error)
}

// Server listens on a socket until Close.
type Server struct {
	l    net.Listener
	path string
}

// Listen starts serving h on the unix socket at path, replacing a stale
// socket a crashed mount left there.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use by another mount", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	s := &Server{l: l, path: path}
	go s.serve(h, log)
	return s, nil
}

func (s *Server) serve(h Handler, log *slog.Logger) {
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var req Request
			if err := json.NewDecoder(c).Decode(&req); err != nil {
				json.NewEncoder(c).Encode(Reply{Error: "bad request: " + err.Error()})
				return
			}
			ctx, cancel := requestContext(c, req)
			defer cancel()
			var rep Reply
			switch req.Op {
			case "snapshot":
				r, err := h.Snapshot(ctx, req.Name)
				if err != nil {
					rep.Error = err.Error()
					log.Error("snapshot", "name", req.Name, "err", err)
				}
				rep.Snapshot = r
			case "push":
				n, err := h.Push(ctx, req.Name)
				if err != nil {
					rep.Error = err.Error()
					log.Error("push", "name", req.Name, "err", err)
				}
				rep.Pushed = n
			case "status":
				rep.Status = h.Status()
			case "warmup":
				wh, ok := h.(Warmer)
				if !ok {
					rep.Error = "this mount cannot warm up"
					break
				}
				enc := json.NewEncoder(c)
				p, err := wh.Warmup(ctx, req.Paths, func(p object.PrefetchProgress) {
					enc.Encode(Reply{Warmup: &p, More: true})
				})
				if err != nil {
					rep.Error = err.Error()
					log.Error("warmup", "paths", req.Paths, "err", err)
				}
				rep.Warmup = &p
			default:
				rep.Error = fmt.Sprintf("unknown op %q", req.Op)
			}
			json.NewEncoder(c).Encode(rep)
		}()
	}
}

// replyMargin is how long before the caller's deadline a request is given
// up on, so that the reply saying so reaches the caller in time.
const replyMargin = 500 * time.Millisecond

// requestContext is the life of a request: until the caller's deadline,
// less replyMargin, or until the caller hangs up. A snapshot its caller
// no longer waits for must not be made: the caller was told it failed,
// and a retry would find the name taken (or a push never done).
func requestContext(c net.Conn, req Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	if !req.Deadline.IsZero() {
		var cancelDl context.CancelFunc
		ctx, cancelDl = context.WithDeadline(ctx, req.Deadline.Add(-replyMargin))
		prev := cancel
		cancel = func() { cancelDl(); prev() }
	}
	// The caller sends nothing after its request: a read returns when it
	// hangs up (or when the connection is closed after the reply).
	go func() {
		var b [1]byte
		c.Read(b[:])
		cancel()
	}()
	return ctx, cancel
}

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	err := s.l.Close()
	os.Remove(s.path)
	return err
}

// ErrNoMount reports that no cowfs mount answers on the socket.
var ErrNoMount = errors.New("no cowfs mount answers there")

// Call sends req to the mount at path and waits for its reply.
func Call(ctx context.Context, path string, req Request) (*Reply, error) {
	return CallEach(ctx, path, req, nil)
}

// CallEach is Call, and hands each progress reply before the last to
// progress (nil: none).
func CallEach(ctx context.Context, path string, req Request, progress func(*Reply)) (*Reply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %v", ErrNoMount, path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
		req.Deadline = dl
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	var rep Reply
	dec := json.NewDecoder(c)
	for {
		rep = Reply{}
		if err := dec.Decode(&rep); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("the mount process closed the request without a reply: it was unmounted or died meanwhile (%w)", err)
			}
			return nil, fmt.Errorf("reply from mount: %w", err)
		}
		if !rep.More {
			break
		}
		if progress != nil {
			progress(&rep)
		}
	}
	if rep.Error != "" {
		return &rep, errors.New(rep.Error)
	}
	return &rep, nil
}
