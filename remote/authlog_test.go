package remote_test

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A refused token leaves a line in the master's log with the peer's
// address and never the token; a flood from one peer leaves one line.
func TestRefusalLogged(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), []byte("x"), 0o644)
	var log remotetest.LogBuffer
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{Token: "s3cret-master-token", Logger: log.Logger()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const wrong = "wrong-worker-token"
	c, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr, Token: wrong, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 5 {
		if _, err := c.Resolve(ctx, ""); err == nil {
			t.Fatal("a wrong token was taken")
		}
	}
	lines := log.Lines("token")
	if len(lines) != 1 {
		t.Fatalf("%d lines about the token for 5 refused calls from one peer, want 1: %q", len(lines), lines)
	}
	t.Log(lines[0])
	if !strings.Contains(lines[0], "127.0.0.1:") || !strings.Contains(lines[0], "WARN") {
		t.Errorf("refusal not logged as a warning with the peer's address: %s", lines[0])
	}
	if strings.Contains(lines[0], wrong) || strings.Contains(lines[0], "s3cret") {
		t.Errorf("the log holds a token: %s", lines[0])
	}
	// Each is counted, though one line was logged (metrics).
	if token, tls := ms.Server.Refused(); token != 5 || tls != 0 {
		t.Errorf("Refused() = %d, %d; want 5 calls refused for their token, no TLS failure", token, tls)
	}
}

// A failed TLS handshake leaves a line in the master's log with the peer's
// address.
func TestHandshakeFailureLogged(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), []byte("x"), 0o644)
	_, cert := newCA(t)
	var log remotetest.LogBuffer
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Logger: log.Logger()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Resolve(ctx, ""); err == nil {
		t.Fatal("plaintext to a TLS master worked")
	}
	// The client can give up before the master has finished failing the
	// handshake on its side: wait for the master's line.
	var lines []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if lines = log.Lines("TLS"); len(lines) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(lines) == 0 || !strings.Contains(lines[0], "127.0.0.1:") {
		t.Errorf("no line with the peer's address for a failed handshake: %q", lines)
	}
	if token, tls := ms.Server.Refused(); token != 0 || tls == 0 {
		t.Errorf("Refused() = %d, %d; want no token refused and the failed handshakes counted", token, tls)
	}
}
