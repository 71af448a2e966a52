package remote_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/pb"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A push of an object that does not decode (a blob over a chunk, a
// garbage tree) is refused as InvalidArgument, and the master stores
// nothing of it.
func TestPutRefusesUndecodable(t *testing.T) {
	ms := remotetest.StartMaster(t, t.TempDir(), remote.ServerConfig{})
	client, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	raw := remote.ExportClientOf(client)
	bigBlob := append([]byte{byte(object.KindBlob), 1}, make([]byte, object.ChunkSize+1)...)
	garbageTree := append([]byte{byte(object.KindTree), 1}, bytes.Repeat([]byte{0xff}, 64)...)
	for name, b := range map[string][]byte{"blob over a chunk": bigBlob, "garbage tree": garbageTree} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		put, err := raw.Put(ctx)
		if err != nil {
			t.Fatal(err)
		}
		put.Send(&pb.PutRequest{Object: b})
		if _, err := put.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("put of a %s: %v, want InvalidArgument", name, err)
		}
		cancel()
		h := object.Sum(b).String()[len("sha256-"):]
		if _, err := os.Stat(filepath.Join(ms.Config.Objects, h[:2], h[2:])); err == nil {
			t.Errorf("put of a %s: stored on the master", name)
		}
	}
}
