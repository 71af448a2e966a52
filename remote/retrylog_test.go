package remote_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A call retried because the master does not answer leaves a warning that
// names the master, so that a mount's log at the default level says why
// its reads wait; one per call, however many times it is retried.
func TestRetryLoggedAsWarning(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var log remotetest.LogBuffer
	c, err := remote.Dial(remote.ClientConfig{Addr: addr, CallTimeout: 200 * time.Millisecond, Timeout: 2 * time.Second, Logger: log.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Resolve(ctx, ""); !errors.Is(err, remote.ErrUnavailable) {
		t.Fatalf("resolve from a master that is not there: %v", err)
	}
	lines := log.Lines("retrying")
	if len(lines) == 0 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], addr) {
		t.Fatalf("retries logged as %q, want a warning naming %s", lines, addr)
	}
	if warned := log.Lines("level=WARN"); len(warned) != 1 {
		t.Errorf("%d warnings for one call's %d retries, want 1: %q", len(warned), len(lines), warned)
	}
}
