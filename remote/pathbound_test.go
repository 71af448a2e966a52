package remote_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/pb"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A path too deep is the caller's mistake, said so, and not logged whole:
// a 3000-part path got Internal and a 6 KB log line.
func TestResolveDeepPath(t *testing.T) {
	var logs remotetest.LogBuffer
	ms := remotetest.StartMaster(t, t.TempDir(), remote.ServerConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := strings.TrimSuffix(strings.Repeat("a/", 3000), "/")
	_, err = remote.ExportClientOf(c).Resolve(ctx, &pb.ResolveRequest{Path: p})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "at most") {
		t.Errorf("resolve of a 3000-part path: %.300v, want InvalidArgument saying the bound", err)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if len(line) > 1024 {
			t.Errorf("a log line of %d bytes: %.200s...", len(line), line)
		}
	}
}
