package remote

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// bearer puts the token on every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false so that a token also works on loopback
// without TLS; across machines, use TLS, or the token travels in the clear.
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// tokenCheck refuses calls without the bearer token, and logs each
// refusal with the peer's address (never the token). The health service
// stays open: a load balancer probes it without credentials.
type tokenCheck struct {
	want    [32]byte
	log     *peerLog
	refused *atomic.Int64
}

func (t tokenCheck) ok(ctx context.Context, method string) error {
	if strings.HasPrefix(method, "/grpc.health.v1.Health/") {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var got string
	if v := md.Get("authorization"); len(v) == 1 {
		got, _ = strings.CutPrefix(v[0], "Bearer ")
	}
	// Comparing digests of equal length keeps the compare constant-time
	// in the token's length as well as its bytes.
	sum := sha256.Sum256([]byte(got))
	if subtle.ConstantTimeCompare(sum[:], t.want[:]) != 1 {
		which := "wrong"
		if got == "" {
			which = "missing"
		}
		addr := "unknown"
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			addr = p.Addr.String()
		}
		t.refused.Add(1)
		t.log.warn(addr, "refused a call: "+which+" token", "method", method)
		return status.Error(codes.Unauthenticated, "missing or wrong token")
	}
	return nil
}

// peerLog logs warnings about peers, at most one line per peer host and
// kind of warning in peerLogEvery: a peer that retries a wrong token in a
// loop, or many connections of one host, cannot flood the log. The next
// line says how many were left out.
type peerLog struct {
	log *slog.Logger
	mu  sync.Mutex
	// last maps host and message to the last line written and what was
	// left out since.
	last map[string]*peerLine
}

type peerLine struct {
	at      time.Time
	skipped int
}

const (
	peerLogEvery = 10 * time.Second
	// peerLogMax bounds what the map holds: past it, lines older than
	// peerLogEvery are forgotten.
	peerLogMax = 4096
)

func newPeerLog(log *slog.Logger) *peerLog {
	return &peerLog{log: log, last: map[string]*peerLine{}}
}

// warn logs msg about the peer at addr (host:port) with args, unless a
// line with msg about the same host was written less than peerLogEvery ago.
func (l *peerLog) warn(addr, msg string, args ...any) {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	key := host + "\x00" + msg
	now := time.Now()
	l.mu.Lock()
	e := l.last[key]
	if e != nil && now.Sub(e.at) < peerLogEvery {
		e.skipped++
		l.mu.Unlock()
		return
	}
	skipped := 0
	if e != nil {
		skipped = e.skipped
	}
	if len(l.last) >= peerLogMax {
		for k, old := range l.last {
			if now.Sub(old.at) >= peerLogEvery {
				delete(l.last, k)
			}
		}
	}
	if len(l.last) < peerLogMax || e != nil {
		l.last[key] = &peerLine{at: now}
	}
	l.mu.Unlock()
	args = append([]any{"peer", addr}, args...)
	if skipped > 0 {
		args = append(args, "more_since_last_line", skipped)
	}
	l.log.Warn(msg, args...)
}

func (t tokenCheck) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := t.ok(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (t tokenCheck) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := t.ok(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
