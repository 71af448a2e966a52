package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
)

// ErrTLS reports a TLS setup that cannot work: a certificate the client
// does not trust, or one side speaking TLS and the other not. It does not
// fix itself, so calls fail at once instead of retrying.
var ErrTLS = errors.New("TLS with the master failed")

// handshakeWatch is the client's transport credentials, keeping the last
// handshake failure that is a TLS setup problem: gRPC reports it only as
// an unavailable connection, its kind lost in a string.
type handshakeWatch struct {
	credentials.TransportCredentials
	caFile string
	last   *atomic.Pointer[error] // nil after a handshake that worked
}

func (w handshakeWatch) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, info, err := w.TransportCredentials.ClientHandshake(ctx, authority, conn)
	if err == nil {
		w.last.Store(nil)
		return c, info, nil
	}
	if tlsErr := tlsProblem(err, authority, w.caFile); tlsErr != nil {
		w.last.Store(&tlsErr)
	}
	return c, info, err
}

func (w handshakeWatch) Clone() credentials.TransportCredentials {
	return handshakeWatch{TransportCredentials: w.TransportCredentials.Clone(), caFile: w.caFile, last: w.last}
}

// handshakeLog is the master's transport credentials, logging each failed
// handshake with the peer's address: a worker with the wrong CA, or none,
// otherwise leaves no trace on the master.
type handshakeLog struct {
	credentials.TransportCredentials
	log    *peerLog
	failed *atomic.Int64
}

func (h handshakeLog) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, info, err := h.TransportCredentials.ServerHandshake(conn)
	// A connection closed before it said anything is a port probe (a
	// load balancer's TCP check), not a worker that failed.
	if err != nil && !errors.Is(err, io.EOF) {
		h.failed.Add(1)
		h.log.warn(conn.RemoteAddr().String(), "TLS handshake failed", "err", err)
	}
	return c, info, err
}

func (h handshakeLog) Clone() credentials.TransportCredentials {
	return handshakeLog{TransportCredentials: h.TransportCredentials.Clone(), log: h.log, failed: h.failed}
}

// tlsProblem names a handshake error that a retry cannot cure, with what
// to change; nil for anything else (a network error, a timeout).
func tlsProblem(err error, authority, caFile string) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("%w: the master's certificate is not signed by the CA in --tls-ca %s (%v): pass the CA that signed the master's certificate (cowfs serve --tls-cert) with --tls-ca", ErrTLS, caFile, err)
	case errors.As(err, &hostname):
		host := authority
		if h, _, err := net.SplitHostPort(authority); err == nil {
			host = h
		}
		return fmt.Errorf("%w: the master's certificate is not valid for %s (%v): reach the master by a name or address its certificate lists, or give it a certificate for %s", ErrTLS, host, err, host)
	case errors.As(err, &invalid):
		return fmt.Errorf("%w: the master's certificate is not valid (%v): give the master a valid certificate", ErrTLS, err)
	case errors.As(err, &record):
		return fmt.Errorf("%w: the master at %s does not speak TLS: leave out --tls-ca, or serve with --tls-cert and --tls-key", ErrTLS, authority)
	}
	return nil
}

// tlsFailure returns, for a call that found the master unavailable, the
// TLS problem behind it, if there is one.
func (c *Client) tlsFailure(ctx context.Context, callErr error) error {
	// Only while the call failed on a handshake: a master that had a bad
	// certificate and is now down is reported as down.
	if p := c.handshake.Load(); p != nil && strings.Contains(callErr.Error(), "handshake") {
		return *p
	}
	// A client without TLS to a master with it: the master drops the
	// connection at the first bytes, which gRPC reports as a missing
	// server preface. Knock once, in TLS, to tell it from a master that
	// is going down.
	if c.cfg.CAFile == "" && strings.Contains(callErr.Error(), "server preface") && speaksTLS(ctx, c.cfg.Addr) {
		return fmt.Errorf("%w: the master at %s speaks TLS and this client does not: pass --tls-ca with the CA that signed the master's certificate", ErrTLS, c.cfg.Addr)
	}
	return nil
}

// speaksTLS reports whether a TLS handshake with addr gets as far as a
// certificate. It trusts nothing it hears: the answer only names an error.
func speaksTLS(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
