package remote_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/remote"
)

// logBuffer is a master's log, read by the test while the master writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the lines that contain s.
func (l *logBuffer) lines(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// A refused token leaves a line in the master's log with the peer's
// address and never the token; a flood from one peer leaves one line.
func TestRefusalLogged(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), []byte("x"), 0o644)
	var log logBuffer
	ms := startMaster(t, exp, remote.ServerConfig{Token: "s3cret-master-token", Logger: log.logger()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const wrong = "wrong-worker-token"
	c, err := remote.Dial(remote.ClientConfig{Addr: ms.addr, Token: wrong, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 5 {
		if _, err := c.Resolve(ctx, ""); err == nil {
			t.Fatal("a wrong token was taken")
		}
	}
	lines := log.lines("token")
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
}

// A failed TLS handshake leaves a line in the master's log with the peer's
// address.
func TestHandshakeFailureLogged(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), []byte("x"), 0o644)
	_, cert := newCA(t)
	var log logBuffer
	ms := startMaster(t, exp, remote.ServerConfig{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Logger: log.logger()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := remote.Dial(remote.ClientConfig{Addr: ms.addr, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Resolve(ctx, ""); err == nil {
		t.Fatal("plaintext to a TLS master worked")
	}
	lines := log.lines("TLS")
	t.Log(lines)
	if len(lines) == 0 || !strings.Contains(lines[0], "127.0.0.1:") {
		t.Errorf("no line with the peer's address for a failed handshake: %q", lines)
	}
}

// A read of what the worker has not cached, of a version the master has
// dropped, fails and the worker's log says the version is no longer kept.
func TestDroppedVersionRead(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), randBytes(3<<20), 0o644)
	writeFile(t, filepath.Join(exp, "opened"), randBytes(3<<20), 0o644)
	ms := startMaster(t, exp, remote.ServerConfig{KeepVersions: 1})
	var log logBuffer
	rm := newWorker(t).mount(ms.addr, mountOpts{timeout: 5 * time.Second, log: log.logger()})
	opened, err := os.Open(filepath.Join(rm.dir, "opened"))
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()

	writeFile(t, filepath.Join(exp, "f"), randBytes(2<<20), 0o644)
	writeFile(t, filepath.Join(exp, "opened"), randBytes(2<<20), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := rm.client.Resolve(ctx, ""); err != nil {
		t.Fatal(err)
	}
	store, err := object.OpenDirStore(ms.cfg.Objects)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := refs.Open(ms.cfg.Refs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := refs.GC(ctx, store, rd, 0, false); err != nil {
		t.Fatal(err)
	}

	for what, read := range map[string]func() error{
		"open": func() error {
			_, err := os.ReadFile(filepath.Join(rm.dir, "f"))
			return err
		},
		"read": func() error {
			_, err := opened.ReadAt(make([]byte, 4096), 2<<20)
			return err
		},
	} {
		err = within(t, 30*time.Second, what+" of a dropped version", read)
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("%s of a dropped version: %v, want EIO", what, err)
		}
		if lines := log.lines("op=" + what); len(lines) == 0 || !strings.Contains(lines[0], "no longer kept") {
			t.Errorf("the log does not say the version was dropped: %q", lines)
		} else {
			t.Log(lines[0])
		}
	}
}
