package cowfs

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

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
)

// The control socket is the local protocol between the cowfs CLI and a
// running workspace: one JSON request and one JSON reply per connection
// on a unix socket in the state directory that only the workspace's owner
// can open. It carries what a workspace must serve itself, such as a
// snapshot of its live view. Control is its client.

// controlRequest is one call.
type controlRequest struct {
	Op   string `json:"op"` // "snapshot", "push", "status", "warmup"
	Name string `json:"name,omitempty"`
	// Paths are what a warmup fetches, relative to the mountpoint;
	// none: everything.
	Paths []string `json:"paths,omitempty"`
	// Deadline is when the caller stops waiting for the reply; the
	// workspace gives up on the request a little before.
	Deadline time.Time `json:"deadline,omitzero"`
}

// controlReply answers a controlRequest: Error, or the op's result.
type controlReply struct {
	Error    string          `json:"error,omitempty"`
	Snapshot *SnapshotResult `json:"snapshot,omitempty"`
	Status   *Status         `json:"status,omitempty"`
	// Pushed counts the objects a push sent.
	Pushed int `json:"pushed,omitempty"`
	// Warmup is how far a warmup got.
	Warmup *object.PrefetchProgress `json:"warmup,omitempty"`
	// More says that this reply tells progress and another follows.
	More bool `json:"more,omitempty"`
	// peerPid is the replying process as the caller's pid namespace
	// sees it (SO_PEERCRED); 0 when unknown.
	peerPid int
}

// SnapshotResult describes a snapshot just taken.
type SnapshotResult = fs.SnapshotResult

// Status describes a running workspace.
type Status struct {
	Mountpoint string `json:"mountpoint"`
	// Source is the lower: a directory, "snapshot NAME", or the remote
	// export's address and path.
	Source string `json:"source"`
	// Version is the pinned version of a remote lower.
	Version string `json:"version,omitempty"`
	Upper   string `json:"upper"`
	// Pid is the process that serves the workspace: cowfs unmount waits
	// for it to finish.
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
	// DirPrefetchErrors counts background fetches of a crawled
	// directory's files that failed; a read then fetched for itself.
	DirPrefetchErrors int64 `json:"dir_prefetch_errors"`
	// Trace is nil unless the mount replays a trace of what an earlier
	// mount of the export read (decisions 0064, 0070).
	Trace *TraceStatus `json:"trace,omitempty"`
	// Bucket is nil unless the lower is a bucket.
	Bucket *BucketRequests `json:"bucket,omitempty"`
	// Lease is nil unless the lower is a bucket's published version.
	Lease *LeaseStatus `json:"lease,omitempty"`
	// Prefetch is nil unless the workspace prefetches.
	Prefetch *object.PrefetchProgress `json:"prefetch,omitempty"`
}

// TraceStatus is the trace a remote mount replays.
type TraceStatus struct {
	// Source is where it came from: "worker" (this worker's last mount
	// of the export), or "master" or "bucket" (the last any worker gave
	// the source).
	Source string `json:"source"`
	// Objects is how many objects it lists; Fetched how many of those
	// its batches asked for (the rest were held, or the task got there
	// first); Errors how many batches failed, which ends the replay.
	Objects int64 `json:"objects"`
	Fetched int64 `json:"fetched"`
	Errors  int64 `json:"errors"`
}

// BucketRequests counts what a mount asked of its bucket, by the
// store's own count (s3store.Stats): requests made, the SDK's attempts
// again not among them (those are RemoteStatus.Retries), from opening
// the bucket and finding its newest version on.
type BucketRequests struct {
	Gets    int64 `json:"gets"`
	Heads   int64 `json:"heads"`
	Lists   int64 `json:"lists"`
	BytesIn int64 `json:"bytes_in"`
	// Indexes is how many pack indexes the mount loaded, IndexesKept
	// how many of them it read from the worker's disk (decision 0081): a
	// prefix gc has not merged shows many.
	Indexes     int64 `json:"indexes"`
	IndexesKept int64 `json:"indexes_kept"`
}

// LeaseStatus is a bucket mount's hold on its version (decision 0078):
// whether its lease is in the bucket, when it was last put, and why the
// last put failed, if it did (a worker whose credentials only read).
type LeaseStatus struct {
	Held    bool      `json:"held"`
	Renewed time.Time `json:"renewed,omitzero"`
	Error   string    `json:"error,omitempty"`
}

// controlServer listens on a workspace's socket until Close.
type controlServer struct {
	l    net.Listener
	path string
}

// listenControl starts serving w on the unix socket at path, replacing a
// stale socket a crashed mount process left there.
func listenControl(path string, w *Workspace, log *slog.Logger) (*controlServer, error) {
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
	s := &controlServer{l: l, path: path}
	go s.serve(w, log)
	return s, nil
}

func (s *controlServer) serve(w *Workspace, log *slog.Logger) {
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var req controlRequest
			if err := json.NewDecoder(c).Decode(&req); err != nil {
				json.NewEncoder(c).Encode(controlReply{Error: "bad request: " + err.Error()})
				return
			}
			ctx, cancel := requestContext(c, req)
			defer cancel()
			var rep controlReply
			switch req.Op {
			case "snapshot":
				r, err := w.Snapshot(ctx, req.Name)
				if err != nil {
					rep.Error = err.Error()
					log.Error("snapshot", "name", req.Name, "err", err)
				}
				rep.Snapshot = r
			case "push":
				n, err := w.Push(ctx, req.Name)
				if err != nil {
					rep.Error = err.Error()
					log.Error("push", "name", req.Name, "err", err)
				}
				rep.Pushed = n
			case "status":
				rep.Status = w.Status()
			case "warmup":
				enc := json.NewEncoder(c)
				p, err := w.Warmup(ctx, req.Paths, func(p object.PrefetchProgress) {
					enc.Encode(controlReply{Warmup: &p, More: true})
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
func requestContext(c net.Conn, req controlRequest) (context.Context, context.CancelFunc) {
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
func (s *controlServer) Close() error {
	err := s.l.Close()
	os.Remove(s.path)
	return err
}

// ErrNoWorkspace reports that no workspace answers on a control socket.
var ErrNoWorkspace = errors.New("no cowfs mount answers there")

// Control is a client of a running workspace's control socket: how the
// CLI asks a mount process for what only it can do.
type Control struct {
	// Socket is the workspace's control socket.
	Socket string
}

// ControlOf is the client of the workspace at mountpoint, of state.
func ControlOf(state, mountpoint string) Control {
	return Control{Socket: statedir.ControlSocket(state, mountpoint)}
}

// Snapshot has the workspace record its merged view as snapshot name.
func (c Control) Snapshot(ctx context.Context, name string) (*SnapshotResult, error) {
	rep, err := c.call(ctx, controlRequest{Op: "snapshot", Name: name})
	if err != nil {
		return nil, err
	}
	return rep.Snapshot, nil
}

// Push has the workspace send snapshot name to its master, and returns
// how many objects it sent.
func (c Control) Push(ctx context.Context, name string) (int, error) {
	rep, err := c.call(ctx, controlRequest{Op: "push", Name: name})
	if err != nil {
		return 0, err
	}
	return rep.Pushed, nil
}

// Status describes the workspace.
func (c Control) Status(ctx context.Context) (*Status, error) {
	rep, err := c.call(ctx, controlRequest{Op: "status"})
	if err != nil {
		return nil, err
	}
	if rep.Status == nil {
		return nil, errors.New("the mount process sent no status")
	}
	// The mount process knows its pid in its own pid namespace (1 as a
	// container's entrypoint); the kernel gives the caller's view of it.
	if rep.peerPid > 0 {
		rep.Status.Pid = rep.peerPid
	}
	return rep.Status, nil
}

// Warmup has a remote workspace fetch what lies beneath paths (relative
// to the mountpoint; none: all of it) into the machine's cache, and hands
// progress (nil: none) how far it got now and then.
func (c Control) Warmup(ctx context.Context, paths []string, progress func(object.PrefetchProgress)) (*object.PrefetchProgress, error) {
	var each func(*controlReply)
	if progress != nil {
		each = func(r *controlReply) {
			if r.Warmup != nil {
				progress(*r.Warmup)
			}
		}
	}
	rep, err := c.callEach(ctx, controlRequest{Op: "warmup", Paths: paths}, each)
	if rep != nil && rep.Warmup != nil {
		return rep.Warmup, err
	}
	return nil, err
}

// call sends req and waits for the reply.
func (c Control) call(ctx context.Context, req controlRequest) (*controlReply, error) {
	return c.callEach(ctx, req, nil)
}

// callEach is call, and hands each progress reply before the last to
// progress (nil: none).
func (c Control) callEach(ctx context.Context, req controlRequest, progress func(*controlReply)) (*controlReply, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %v", ErrNoWorkspace, c.Socket, err)
	}
	defer conn.Close()
	peer := peerPid(conn)
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
		req.Deadline = dl
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, err
	}
	var rep controlReply
	dec := json.NewDecoder(conn)
	for {
		rep = controlReply{}
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
	rep.peerPid = peer
	if rep.Error != "" {
		return &rep, errors.New(rep.Error)
	}
	return &rep, nil
}

// peerPid returns the pid of the process at the other end of a unix
// socket connection, as this process's pid namespace sees it; 0 if it
// cannot tell.
func peerPid(conn net.Conn) int {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}
