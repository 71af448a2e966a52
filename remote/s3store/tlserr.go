package s3store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// ErrTLS: TLS with the endpoint cannot work as configured (a certificate
// this machine does not trust, one not valid for the endpoint's name, or
// one side speaking TLS and the other not). Asking again cannot cure it,
// so such a request is not retried.
var ErrTLS = errors.New("TLS with the object store failed")

// httpToHTTPS is net/http's error when an https:// endpoint answers in
// plain HTTP; it wraps nothing a caller could test for.
const httpToHTTPS = "server gave HTTP response to HTTPS client"

// certProblem is the TLS problem err holds, in words, with what to
// change; "" if err is none.
func (s *Store) certProblem(err error) string {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknown):
		if s.cfg.CAFile == "" {
			return fmt.Sprintf("its certificate is not signed by a CA this machine trusts (%v): pass --s3-ca with the CA (PEM) that signed it", unknown)
		}
		return fmt.Sprintf("its certificate is not signed by the CA in --s3-ca %s (%v): pass --s3-ca with the CA (PEM) that signed the endpoint's certificate", s.cfg.CAFile, unknown)
	case errors.As(err, &hostname):
		return fmt.Sprintf("its certificate is not valid for %s (%v): use a name or address the certificate lists in --s3-endpoint, or give the endpoint a certificate for %s", hostname.Host, hostname, hostname.Host)
	case errors.As(err, &invalid):
		return fmt.Sprintf("its certificate is not valid (%v): give the endpoint a valid certificate", invalid)
	case errors.As(err, &record), strings.Contains(err.Error(), httpToHTTPS):
		return fmt.Sprintf("it does not speak TLS: use %s", s.withScheme("http"))
	}
	return ""
}

// withScheme is the endpoint's URL with another scheme.
func (s *Store) withScheme(scheme string) string {
	u, err := url.Parse(s.endpoint)
	if err != nil || u.Host == "" {
		return s.endpoint
	}
	u.Scheme = scheme
	return u.String()
}

// plainToTLS reports whether err is an http:// endpoint dropping the
// connection because it speaks TLS: it closes at the first plain bytes,
// which looks like a network failure until a TLS handshake is tried.
func (s *Store) plainToTLS(err error) bool {
	u, perr := url.Parse(s.endpoint)
	if perr != nil || u.Scheme != "http" {
		return false
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return false
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	return speaksTLS(host)
}

// speaksTLS reports whether a TLS handshake with addr gets as far as a
// certificate. It trusts nothing it hears: the answer only names an error.
func speaksTLS(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// notRetriedTLS tells the SDK's retryer that a certificate problem is
// not worth another attempt.
func notRetriedTLS(err error) aws.Ternary {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
	)
	if errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &record) || strings.Contains(err.Error(), httpToHTTPS) {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}
