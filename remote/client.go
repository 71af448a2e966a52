package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/pb"
)

// maxObject bounds what a client accepts as one object: a tree of a
// directory with a million entries, or the file object of a 4 TiB file.
const maxObject = 256 << 20

// objectSize reports whether n, a size a master or a trace gives, is one
// an object may have: every size read off the wire is checked with it
// before anything is allocated for it.
func objectSize(n int64) bool { return n >= 0 && n <= maxObject }

// ResolveTimeout bounds a Resolve, which waits for the master's scan: the
// first scan of a 100k-file export reads every file.
const ResolveTimeout = 5 * time.Minute

// ErrUnauthenticated reports a missing or wrong token.
var ErrUnauthenticated = errors.New("the master refused the token")

// ErrUnavailable reports a master that did not answer in time.
var ErrUnavailable = errors.New("the master is unreachable")

// ErrMasterDamaged reports an object the master holds damaged and cannot
// restore: the files of its export no longer have those bytes.
var ErrMasterDamaged = errors.New("the master's copy is damaged and could not be restored from its export")

// ClientConfig describes how to reach a master.
type ClientConfig struct {
	Addr  string
	Token string
	// CAFile, when set, turns on TLS: the master's certificate must be
	// signed by a CA in this PEM file.
	CAFile string
	// CallTimeout bounds one attempt of a call; default 10s.
	CallTimeout time.Duration
	// Timeout bounds a call with all its retries; default 20s. A read
	// that cannot be served within it fails with EIO.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Client calls one master. Every call has a deadline and is retried with
// backoff and jitter while the master is unreachable; a broken object
// transfer resumes where it stopped.
type Client struct {
	cfg  ClientConfig
	conn *grpc.ClientConn
	ex   pb.ExportClient
	log  *slog.Logger

	retries, failures atomic.Int64
	// handshake is the last TLS setup problem a connection met, nil
	// once one connected (see handshakeWatch).
	handshake atomic.Pointer[error]
}

// Dial prepares a client. It does not connect: the first call does.
func Dial(cfg ClientConfig) (*Client, error) {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	creds := insecure.NewCredentials()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA %s: no PEM certificate in it", cfg.CAFile)
		}
		creds = credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	}
	c := &Client{cfg: cfg, log: cfg.Logger}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(handshakeWatch{TransportCredentials: creds, caFile: cfg.CAFile, last: &c.handshake}),
		// A chunk is 1 MiB; pieces are 256 KiB.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20), grpc.MaxCallSendMsgSize(maxObject+1<<10)),
		// A cold read streams chunks: reads of the socket a piece at a
		// time, not 32 KiB, and a window that a batch of read-ahead
		// (8 MiB) fills without waiting on gRPC's estimate of the link,
		// which starts at 64 KiB. The window bounds only what arrives
		// ahead of its reader, and a call asks for no more than that.
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(getPiece), grpc.WithWriteBufferSize(getPiece),
		// gRPC waits up to 2 minutes between reconnects by default, and
		// fails calls meanwhile with the last error: a master back after
		// an outage of minutes went unused for half a minute or more.
		// The calls' own retries (retryFor) bound the load.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: cfg.Token, secure: cfg.CAFile != ""}))
	}
	conn, err := grpc.NewClient(cfg.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("master %s: %w", cfg.Addr, err)
	}
	c.conn, c.ex = conn, pb.NewExportClient(conn)
	return c, nil
}

// Close drops the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Timeout is the bound of a call with all its retries (ClientConfig.Timeout).
func (c *Client) Timeout() time.Duration { return c.cfg.Timeout }

// Addr returns the master's address.
func (c *Client) Addr() string { return c.cfg.Addr }

// Retries and Failures count attempts that were retried and calls that
// failed for good.
func (c *Client) Retries() int64  { return c.retries.Load() }
func (c *Client) Failures() int64 { return c.failures.Load() }

// retry runs attempt until it succeeds, fails for good, or the call's
// deadline passes: Timeout from now, or ctx's own deadline if that is
// sooner (a read's --io-timeout, which started before this call). attempt
// gets a context bounded by CallTimeout.
func (c *Client) retry(ctx context.Context, what string, attempt func(context.Context) error) error {
	return c.retryFor(ctx, what, c.cfg.CallTimeout, c.cfg.Timeout, attempt)
}

// retryFor is retry with other bounds, for calls whose size the caller
// knows better (a push).
func (c *Client) retryFor(ctx context.Context, what string, callTimeout, timeout time.Duration, attempt func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	backoff := 50 * time.Millisecond
	for n := 1; ; n++ {
		actx, acancel := context.WithTimeout(ctx, callTimeout)
		err := attempt(actx)
		acancel()
		if err == nil {
			return nil
		}
		code := status.Code(err)
		switch code {
		case codes.Unauthenticated, codes.PermissionDenied:
			c.failures.Add(1)
			return fmt.Errorf("%s: %w (%s): %s", what, ErrUnauthenticated, status.Convert(err).Message(), c.tokenHint())
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Canceled:
			// Worth another try, if there is time; not a TLS setup
			// that cannot work.
			if code == codes.Unavailable {
				if tlsErr := c.tlsFailure(ctx, err); tlsErr != nil {
					c.failures.Add(1)
					return fmt.Errorf("%s: %w", what, tlsErr)
				}
			}
		default:
			c.failures.Add(1)
			return fmt.Errorf("%s: %s", what, status.Convert(err).Message())
		}
		// Full jitter: workers that lost the master at the same moment
		// do not all come back at the same moment.
		sleep := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		backoff = min(2*backoff, 2*time.Second)
		dl, _ := ctx.Deadline()
		// A master that does not answer at all is given up on after
		// Timeout, whatever the call's own bound.
		gone := code == codes.Unavailable && time.Since(start)+sleep > c.cfg.Timeout
		if ctx.Err() != nil || time.Until(dl) < sleep || gone {
			c.failures.Add(1)
			if code == codes.Canceled && ctx.Err() == nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return fmt.Errorf("%s: %w %s after %d attempts in %v: %s", what, ErrUnavailable, c.cfg.Addr, n,
				time.Since(start).Round(time.Millisecond), status.Convert(err).Message())
		}
		c.retries.Add(1)
		// The first retry of a call is a warning, so that the log
		// at its default level says why reads wait; the rest, which
		// an outage multiplies by every waiting read, are debug.
		level := slog.LevelDebug
		if n == 1 {
			level = slog.LevelWarn
		}
		c.log.Log(ctx, level, "retrying", "master", c.cfg.Addr, "call", what, "attempt", n, "err", err)
		time.Sleep(sleep)
		if code == codes.Unavailable {
			// Dial now, not when the channel's own backoff ends.
			c.conn.ResetConnectBackoff()
		}
	}
}

// tokenHint says what to change when the master refuses this client's
// token: whether it sent one tells a missing --token-file from a wrong one.
func (c *Client) tokenHint() string {
	if c.cfg.Token == "" {
		return "this client sent none: pass --token-file with the token the master serves with (cowfs serve --token-file)"
	}
	return "check that --token-file holds the token the master serves with (cowfs serve --token-file)"
}

// Resolve asks for the current version of the export's subtree path.
func (c *Client) Resolve(ctx context.Context, path string) (object.Digest, error) {
	what := "resolve"
	if path != "" {
		what += " " + path
	}
	// The master scans the tree to answer: the first scan of a big
	// export reads all of it. Retries join the scan in progress.
	return c.versionCall(ctx, what, ResolveTimeout, ResolveTimeout, func(ctx context.Context) ([]byte, error) {
		r, err := c.ex.Resolve(ctx, &pb.ResolveRequest{Path: path})
		return r.GetVersion(), err
	})
}

// versionCall runs a call that answers with a version digest, retried as
// retryFor does.
func (c *Client) versionCall(ctx context.Context, what string, callTimeout, timeout time.Duration, call func(context.Context) ([]byte, error)) (object.Digest, error) {
	var v object.Digest
	err := c.retryFor(ctx, what, callTimeout, timeout, func(ctx context.Context) error {
		raw, err := call(ctx)
		if err != nil {
			return err
		}
		if v, err = digestOf(raw); err != nil {
			return status.Errorf(codes.Internal, "version: %v", err)
		}
		return nil
	})
	return v, err
}

// Get fetches object d's bytes, unverified: the caller checks them against
// d (a Cache does), so a Client is not the object.Getter its method set
// makes it: what it returns may not hash to d. An object the master lacks
// is an error wrapping object.ErrNotFound. A transfer that breaks resumes
// from the bytes already received.
func (c *Client) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	return c.get(ctx, d, false)
}

// GetVerified is Get for an object whose bytes came damaged: the master
// checks its copy, and restores a damaged one from its export before it
// sends it, or fails with ErrMasterDamaged.
func (c *Client) GetVerified(ctx context.Context, d object.Digest) ([]byte, error) {
	return c.get(ctx, d, true)
}

func (c *Client) get(ctx context.Context, d object.Digest, verify bool) ([]byte, error) {
	var buf []byte
	want := int64(-1) // the size the first message gave, which the rest must give too
	lost, missing := false, false
	err := c.retry(ctx, "get "+d.Short(), func(ctx context.Context) error {
		st, err := c.ex.Get(ctx, &pb.GetRequest{Digest: d[:], Offset: int64(len(buf)), Verify: verify})
		if err != nil {
			return err
		}
		for {
			r, err := st.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				lost = status.Code(err) == codes.DataLoss
				missing = status.Code(err) == codes.NotFound
				return err
			}
			switch size := r.GetSize(); {
			case want < 0:
				if !objectSize(size) {
					return status.Errorf(codes.Internal, "get: object of %d bytes", size)
				}
				want, buf = size, make([]byte, 0, size)
			case size != want:
				// Else a master could grow the object past any bound
				// by raising the size as it sends.
				return status.Errorf(codes.Internal, "get: object of %d bytes, then %d", want, size)
			}
			if int64(len(buf)+len(r.GetData())) > want {
				return status.Errorf(codes.Internal, "object longer than its size")
			}
			buf = append(buf, r.GetData()...)
		}
	})
	if lost && err != nil {
		return nil, fmt.Errorf("get %s: %w", d.Short(), ErrMasterDamaged)
	}
	if missing && err != nil {
		return nil, fmt.Errorf("%w (%w)", err, object.ErrNotFound)
	}
	return buf, err
}

// Has asks which of ds the master can still give.
func (c *Client) Has(ctx context.Context, ds []object.Digest) ([]bool, error) {
	req := &pb.HasRequest{Digests: make([][]byte, len(ds))}
	for i := range ds {
		req.Digests[i] = ds[i][:]
	}
	var has []bool
	err := c.retry(ctx, "has", func(ctx context.Context) error {
		r, err := c.ex.Has(ctx, req)
		if err != nil {
			return err
		}
		if len(r.GetHas()) != len(ds) {
			return status.Errorf(codes.Internal, "%d answers to %d questions", len(r.GetHas()), len(ds))
		}
		has = r.GetHas()
		return nil
	})
	return has, err
}

// ExportClientOf returns the raw gRPC client, for tools and tests that
// stand between a worker and a master.
func ExportClientOf(c *Client) pb.ExportClient { return c.ex }
