package remote_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A TLS problem does not fix itself: the call fails at once, says it is
// TLS and what to change, instead of retrying until --io-timeout and
// calling the master unreachable.
func TestTLSErrorsNamed(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), []byte("x"), 0o644)
	caFile, cert := newCA(t)
	tlsMaster := remotetest.StartMaster(t, exp, remote.ServerConfig{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	plainMaster := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	otherCA, _ := newCA(t)
	_, port, _ := net.SplitHostPort(tlsMaster.Addr)
	for _, c := range []struct {
		name string
		cfg  remote.ClientConfig
		want string
	}{
		{"plaintext to TLS", remote.ClientConfig{Addr: tlsMaster.Addr}, "--tls-ca"},
		{"another CA", remote.ClientConfig{Addr: tlsMaster.Addr, CAFile: otherCA}, "--tls-ca"},
		{"TLS to plaintext", remote.ClientConfig{Addr: plainMaster.Addr, CAFile: caFile}, "does not speak TLS"},
		{"name not in the certificate", remote.ClientConfig{Addr: net.JoinHostPort("localhost", port), CAFile: caFile}, "localhost"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Timeout = 10 * time.Second
			cl, err := remote.Dial(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			_, err = cl.Resolve(ctx, "")
			took := time.Since(start)
			t.Logf("%v (after %v)", err, took.Round(time.Millisecond))
			if !errors.Is(err, remote.ErrTLS) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v; want a TLS error that says %q", err, c.want)
			}
			if errors.Is(err, remote.ErrUnavailable) {
				t.Errorf("a TLS problem reported as an unreachable master: %v", err)
			}
			// Retried, it would take the whole Timeout; half of it
			// is slack for a handshake on a loaded machine.
			if took > c.cfg.Timeout/2 {
				t.Errorf("took %v: a TLS problem was retried", took.Round(time.Millisecond))
			}
		})
	}
}
