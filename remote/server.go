package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/scan"
	"github.com/cowfs/cowfs/remote/pb"
)

// ServerConfig describes an export.
type ServerConfig struct {
	// Root is the directory served. Nothing outside it is ever read:
	// symlinks are served as symlinks, never followed.
	Root string
	// Objects and Refs are the master's object store and ref directory
	// (its state directory's objects/ and refs/). Every version served
	// lives there as objects, so a worker can finish reading a version
	// after the files it came from changed. Snapshots workers push go to
	// the ref directory's pushed namespace (refs.Dir.Pushed).
	Objects, Refs string
	// Traces is where the master keeps what workers' mounts read
	// (PutTrace; decision 0070); none are kept when empty.
	Traces string
	// Token, when set, is the bearer token every call but health checks
	// must carry.
	Token string
	// TLS, when set, serves TLS with this configuration.
	TLS *tls.Config
	// KeepVersions is how many of the newest versions stay pinned
	// against cowfs gc; default 32.
	KeepVersions int
	Logger       *slog.Logger

	// ServeSnapshots lets workers restore the master's own snapshots as
	// well as pushed ones. Those may be of any tree, not only Root.
	ServeSnapshots bool

	// CountGets counts how many times each object is sent whole, for
	// Gets: a test's check that workers fetch each object once. Off in
	// a master that serves: it keeps an entry for every object it ever
	// sent.
	CountGets bool

	// ServerOptions are added to the gRPC server's before its own
	// interceptors: an interceptor among them sees every call, refused
	// ones included (metrics).
	ServerOptions []grpc.ServerOption
	// ScanDone, when set, is told how long each scan of the export took
	// and how it ended (metrics).
	ScanDone func(took time.Duration, err error)

	// Rescan is how often the versions handed out are scanned again in
	// the background, for changes the watch on Root does not report
	// (decision 0049): bytes written through a shared mapping, through
	// a hard link from outside Root, or by another host on a network
	// filesystem. Default one minute; negative: never.
	Rescan time.Duration
}

type counter = atomic.Int64

// Server serves one directory.
type Server struct {
	pb.UnimplementedExportServer
	lo    *lower.Dir
	store *object.DirStore
	refs  *refs.Dir
	scans scan.MemCache
	keep  int
	log   *slog.Logger
	grpc  *grpc.Server
	// traces: ServerConfig.Traces; traceMu makes puts one at a time.
	traces  string
	traceMu sync.Mutex

	// serveSnapshots: GetRef answers from the master's own snapshots
	// too (ServerConfig.ServeSnapshots).
	serveSnapshots bool

	resolving singleflight.Group
	// watch tells whether the export changed since a version was
	// scanned; known holds the last version of each path resolved, with
	// the watch's generation from before its scan began.
	watch       *treeWatch
	knownMu     sync.Mutex
	known       map[string]knownVersion
	rescanEvery time.Duration

	pinMu sync.Mutex
	// scanCtx bounds every scan: a stop cancels the scans in flight,
	// which no caller's own cancellation may (they are shared).
	scanCtx  context.Context
	stopScan context.CancelFunc

	gets  *sync.Map // object.Digest -> *counter, whole-object gets; nil unless CountGets
	bytes atomic.Int64
	// refused counts calls refused for their token, and connections
	// whose TLS handshake failed.
	refused  refusals
	scanDone func(took time.Duration, err error)

	// Damaged objects being restored from the export, or lost (see
	// damage.go): object.Digest -> *repair.
	damaged sync.Map
	rescans singleflight.Group
}

// NewServer opens the export. Serve starts answering.
func NewServer(cfg ServerConfig) (*Server, error) {
	lo, err := lower.OpenDirStrict(cfg.Root)
	if err != nil {
		return nil, err
	}
	if st, err := lo.Lstat(""); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		lo.Close()
		return nil, fmt.Errorf("export %s is not a directory", cfg.Root)
	}
	store, err := object.OpenDirStore(cfg.Objects)
	if err != nil {
		lo.Close()
		return nil, err
	}
	rd, err := refs.Open(cfg.Refs)
	if err != nil {
		lo.Close()
		return nil, err
	}
	// Not fatal: the export and what was pushed since are served all the
	// same, and the next start tries again.
	moved, adoptErr := rd.AdoptPushed()
	s := &Server{lo: lo, store: store, refs: rd, traces: cfg.Traces, keep: cfg.KeepVersions, serveSnapshots: cfg.ServeSnapshots, log: cfg.Logger, scanDone: cfg.ScanDone,
		known: map[string]knownVersion{}, rescanEvery: cfg.Rescan}
	if cfg.CountGets {
		s.gets = new(sync.Map)
	}
	s.scanCtx, s.stopScan = context.WithCancel(context.Background())
	if s.keep <= 0 {
		s.keep = 32
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.rescanEvery == 0 {
		s.rescanEvery = time.Minute
	}
	s.watch = newTreeWatch(cfg.Root, s.log)
	if s.rescanEvery > 0 {
		go s.rescanKnown()
	}
	for _, name := range moved {
		s.log.Info("snapshot pushed before pushed snapshots had a namespace of their own moved there", "name", refs.PushedPrefix+name)
	}
	if adoptErr != nil {
		s.log.Error("snapshots pushed before pushed snapshots had a namespace of their own are not served", "err", adoptErr)
	}
	// Pushed objects arrive whole: up to the largest object a client accepts.
	// The socket written a piece at a time, not 32 KiB (the worker's side
	// of it: client.go). The receive windows stay gRPC's: what a master
	// takes in (pushes) waits on its disk, and a worker's window is what
	// bounds what the master sends ahead.
	opts := append([]grpc.ServerOption{grpc.MaxRecvMsgSize(maxObject + 1<<10),
		grpc.ReadBufferSize(getPiece), grpc.WriteBufferSize(getPiece),
		grpc.ForceServerCodecV2(sendCodec{})}, cfg.ServerOptions...)
	peers := newPeerLog(s.log)
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(handshakeLog{TransportCredentials: credentials.NewTLS(cfg.TLS), log: peers, failed: &s.refused.tls}))
	}
	if cfg.Token != "" {
		tc := tokenCheck{want: sha256.Sum256([]byte(cfg.Token)), log: peers, refused: &s.refused.token}
		opts = append(opts, grpc.ChainUnaryInterceptor(tc.unary), grpc.ChainStreamInterceptor(tc.stream))
	}
	s.grpc = grpc.NewServer(opts...)
	pb.RegisterExportServer(s.grpc, s)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(pb.Export_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.grpc, hs)
	return s, nil
}

// Serve answers on l until Stop.
func (s *Server) Serve(l net.Listener) error { return s.grpc.Serve(l) }

// Stop ends every call at once and releases the export.
func (s *Server) Stop() {
	s.stopScan()
	s.grpc.Stop()
	s.watch.close()
	s.lo.Close()
}

// GracefulStop lets calls in flight finish, but for scans: a scan of a
// big export can take minutes, and its callers get Unavailable, which
// they retry against the master that comes next.
func (s *Server) GracefulStop() {
	s.stopScan()
	s.grpc.GracefulStop()
	s.watch.close()
	s.lo.Close()
}

// Gets returns how many times object d was sent whole (a resumed transfer
// is not counted again); 0 unless ServerConfig.CountGets.
func (s *Server) Gets(d object.Digest) int64 {
	if s.gets == nil {
		return 0
	}
	if n, ok := s.gets.Load(d); ok {
		return n.(*counter).Load()
	}
	return 0
}

// countGet counts a whole send of d, if counting (CountGets).
func (s *Server) countGet(d object.Digest) {
	if s.gets != nil {
		n, _ := s.gets.LoadOrStore(d, new(counter))
		n.(*counter).Add(1)
	}
}

// BytesSent returns the object bytes sent so far.
func (s *Server) BytesSent() int64 { return s.bytes.Load() }

// refusals count what the master refused; see Refused.
type refusals struct{ token, tls atomic.Int64 }

// Refused returns how many calls were refused for a missing or wrong
// token, and how many connections failed their TLS handshake (a port
// probe that closes before it says anything is not counted).
func (s *Server) Refused() (token, tls int64) { return s.refused.token.Load(), s.refused.tls.Load() }

// Resolve returns the version of the requested subtree as it is now:
// the version last scanned, if the export has not changed since that
// scan began, else a new scan's. Concurrent resolves of one path share
// one scan, if nothing changed since it began.
func (s *Server) Resolve(ctx context.Context, req *pb.ResolveRequest) (*pb.ResolveResponse, error) {
	sub, err := names.CleanRel(req.GetPath())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	gen, watched := s.watch.generation()
	if watched {
		if r := s.lastScan(ctx, sub, gen); r != nil {
			return r, nil
		}
	}
	ch := s.scanAt(sub, gen, watched)
	select {
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*pb.ResolveResponse), nil
	}
}

// knownVersion is the last version a scan of one path gave, and the
// watch's generation from before that scan began.
type knownVersion struct {
	resp *pb.ResolveResponse
	gen  uint64
}

// lastScan returns the version last scanned of sub if nothing changed
// since its scan began (the watch is at gen) and it is still kept,
// pinned and whole at the top; nil otherwise.
func (s *Server) lastScan(ctx context.Context, sub string, gen uint64) *pb.ResolveResponse {
	s.knownMu.Lock()
	k, ok := s.known[sub]
	s.knownMu.Unlock()
	if !ok || k.gen != gen {
		return nil
	}
	v := object.Digest(k.resp.GetVersion())
	// A version let go of (more than KeepVersions newer ones since) may
	// have lost objects to gc; one whose version object was found damaged
	// is stored again only by a scan.
	if has, err := s.store.Has(ctx, v); err != nil || !has {
		return nil
	}
	if kept, err := s.kept(v); err != nil || !kept {
		return nil
	}
	s.log.Info("resolved", "path", sub, "version", v.String(), "files", k.resp.GetFiles(), "bytes", k.resp.GetBytes(),
		"scanned", false)
	return k.resp
}

// scanAt starts a scan of sub, or joins one under way that began when the
// watch was at gen too; unwatched, any one under way.
func (s *Server) scanAt(sub string, gen uint64, watched bool) <-chan singleflight.Result {
	key := sub
	if watched {
		key = strconv.FormatUint(gen, 10) + "/" + sub
	}
	return s.resolving.DoChan(key, func() (any, error) {
		r, err := s.resolve(sub)
		if err == nil && watched {
			s.knownMu.Lock()
			if k, ok := s.known[sub]; !ok || k.gen <= gen {
				s.known[sub] = knownVersion{resp: r, gen: gen}
			}
			s.knownMu.Unlock()
		}
		return r, err
	})
}

// rescanKnown scans every path resolved before again, every s.rescanEvery,
// so that a change the watch did not report is served within that time.
func (s *Server) rescanKnown() {
	t := time.NewTicker(s.rescanEvery)
	defer t.Stop()
	for {
		select {
		case <-s.scanCtx.Done():
			return
		case <-t.C:
		}
		s.knownMu.Lock()
		was := make(map[string]knownVersion, len(s.known))
		for sub, k := range s.known {
			was[sub] = k
		}
		s.knownMu.Unlock()
		for sub, k := range was {
			gen, watched := s.watch.generation()
			if !watched {
				return // every resolve scans now
			}
			r := <-s.scanAt(sub, gen, watched)
			if r.Err != nil {
				// Gone from the export, or failing: the next resolve
				// scans and says why.
				s.knownMu.Lock()
				delete(s.known, sub)
				s.knownMu.Unlock()
				continue
			}
			if v := r.Val.(*pb.ResolveResponse).GetVersion(); k.gen == gen && !bytes.Equal(v, k.resp.GetVersion()) {
				s.log.Warn("the export changed without an inotify event: found by the periodic scan", "path", sub,
					"version", object.Digest(v).String())
			}
		}
	}
}

// cachedPuts stores scanned objects without an fsync each (the scan ends
// with one Sync before the version is handed out), in packs: a worker's
// cold open reads a file object and its chunk, which a scan stores side
// by side, and from files of their own each read would also cost their
// directory entries and inodes (docs/decisions/0068).
type cachedPuts struct{ *object.DirStore }

func (c cachedPuts) Put(ctx context.Context, b []byte) (object.Digest, error) {
	return c.PutPacked(ctx, b)
}

func (s *Server) resolve(sub string) (_ *pb.ResolveResponse, err error) {
	start := time.Now()
	if s.scanDone != nil {
		defer func() { s.scanDone(time.Since(start), err) }()
	}
	// The scan is shared by every caller waiting for it, so no one
	// caller's cancellation may stop it; a stop of the server does.
	ctx := s.scanCtx
	// From the scan's first object to the pin that keeps the version:
	// no gc removes what the scan stores or finds in its cache meanwhile
	// (object.DirStore.Hold).
	release, err := s.store.Hold(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "scan %q: %v", sub, err)
	}
	defer release()
	e, st, err := scan.Tree(ctx, s.lo, sub, cachedPuts{s.store}, &s.scans)
	if err != nil {
		return nil, s.scanError(sub, err)
	}
	if e.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, status.Errorf(codes.InvalidArgument, "%q is not a directory of the export", sub)
	}
	v, err := putVersion(ctx, cachedPuts{s.store}, e)
	if err == nil {
		err = s.store.Sync()
	}
	if err == nil {
		err = s.pin(v)
	}
	if err != nil {
		s.log.Error("store version", "path", sub, "err", err)
		return nil, status.Errorf(codes.Internal, "store version: %v", err)
	}
	s.log.Info("resolved", "path", sub, "version", v.String(), "files", st.Files, "bytes", st.Bytes,
		"scanned", true, "bytes_hashed", st.BytesRead, "took", time.Since(start))
	return &pb.ResolveResponse{Version: v[:], Files: st.Files, Bytes: st.Bytes}, nil
}

// scanError turns a failed scan of sub into the status a client acts on.
// An ENOENT or ENOTDIR says something about sub only if sub itself is
// missing or no directory now; from deeper in the tree it means the
// export changed under the scan, which a retry may get past (Aborted).
func (s *Server) scanError(sub string, err error) error {
	switch {
	case errors.Is(err, context.Canceled) && s.scanCtx.Err() != nil:
		return status.Error(codes.Unavailable, "the master is stopping")
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		st, lerr := s.lo.Lstat(sub)
		if errors.Is(lerr, unix.ENOENT) {
			return status.Errorf(codes.NotFound, "%q is not in the export", sub)
		}
		if lerr != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return status.Errorf(codes.InvalidArgument, "%q is not a directory of the export", sub)
		}
		s.log.Warn("scan: the export changed under it", "path", sub, "err", err)
		return status.Errorf(codes.Aborted, "scan %q: the export changed while it was read: %v", sub, err)
	case errors.Is(err, scan.ErrChanging):
		// Read again and again, with waits, and still changing: a file
		// being written all the time (a log) will not hold still for a
		// client's retry either. The message names it.
		s.log.Warn("scan", "path", sub, "err", err)
		return status.Errorf(codes.FailedPrecondition, "scan %q: %v", sub, err)
	default:
		s.log.Error("scan", "path", sub, "err", err)
		return status.Errorf(codes.Internal, "scan %q: %v", sub, err)
	}
}

const servePinPrefix = "serve-"

// kept reports whether version v is pinned against gc.
func (s *Server) kept(v object.Digest) (bool, error) {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	pins, err := s.refs.Pins()
	if err != nil {
		return false, err
	}
	for _, p := range pins {
		if strings.HasPrefix(p.Key, servePinPrefix) && p.Root == v {
			return true, nil
		}
	}
	return false, nil
}

// pin keeps version v from cowfs gc, and lets go of all but the newest
// KeepVersions versions: a worker still on an older one gets NotFound for
// what it has not fetched, and says so, rather than bytes of another
// version.
func (s *Server) pin(v object.Digest) error {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	pins, err := s.refs.Pins()
	if err != nil {
		return err
	}
	var mine []refs.Pin
	for _, p := range pins {
		if strings.HasPrefix(p.Key, servePinPrefix) {
			if p.Root == v {
				return nil // already kept
			}
			mine = append(mine, p)
		}
	}
	// Keys are the time of pinning, zero-padded, so they sort by age.
	key := fmt.Sprintf("%s%020d", servePinPrefix, time.Now().UnixNano())
	if err := s.refs.Pin(key, v); err != nil {
		return err
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].Key < mine[j].Key })
	for len(mine) >= s.keep {
		if err := s.refs.Unpin(mine[0].Key); err != nil {
			return err
		}
		mine = mine[1:]
	}
	return nil
}

// getPiece is the most a GetResponse carries: small enough that a broken
// transfer loses little, big enough that a 1 MiB chunk is four messages.
const getPiece = 256 << 10

// A worker's receive windows: a stream's holds a read-ahead batch, the
// connection's four of them.
const (
	streamWindow = 8 << 20
	connWindow   = 4 * streamWindow
)

// Get streams an object from the requested offset on.
func (s *Server) Get(req *pb.GetRequest, stream pb.Export_GetServer) error {
	d, err := digestOf(req.GetDigest())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "%v", err)
	}
	// Not verified unless asked: every worker checks each object against
	// its digest, and asks again with verify for one that came damaged.
	b, err := s.read(stream.Context(), d, req.GetVerify())
	switch {
	case errors.Is(err, object.ErrNotFound):
		return status.Errorf(codes.NotFound, "no object %s (a version older than the newest %d is no longer kept)", d.Short(), s.keep)
	case err != nil && status.Code(err) != codes.Unknown:
		return err // the outcome of a verify (damage.go)
	case err != nil:
		return status.Errorf(codes.Internal, "object %s: %v", d.Short(), err)
	}
	off := req.GetOffset()
	if off < 0 || off > int64(len(b)) {
		return status.Errorf(codes.OutOfRange, "offset %d of an object of %d bytes", off, len(b))
	}
	if off == 0 {
		s.countGet(d)
	}
	for {
		end := min(off+getPiece, int64(len(b)))
		if err := stream.Send(&pb.GetResponse{Size: int64(len(b)), Data: b[off:end]}); err != nil {
			return err
		}
		s.bytes.Add(end - off)
		if off = end; off == int64(len(b)) {
			return nil
		}
	}
}

// Has reports which objects the master can give.
func (s *Server) Has(ctx context.Context, req *pb.HasRequest) (*pb.HasResponse, error) {
	if len(req.GetDigests()) > 100000 {
		return nil, status.Error(codes.InvalidArgument, "more than 100000 digests in one call")
	}
	out := &pb.HasResponse{Has: make([]bool, len(req.GetDigests()))}
	for i, raw := range req.GetDigests() {
		d, err := digestOf(raw)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "digest %d: %v", i, err)
		}
		if out.Has[i], err = s.store.Has(ctx, d); err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
	}
	return out, nil
}

func digestOf(b []byte) (object.Digest, error) {
	var d object.Digest
	if len(b) != len(d) {
		return d, errors.New("a digest is " + strconv.Itoa(len(d)) + " bytes")
	}
	copy(d[:], b)
	return d, nil
}
