package remote_test

import (
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

// Resolve serves nothing outside the export, however the path is spelt:
// every path that leaves it is refused, and no byte of a file outside it
// reaches the master's store. GetRef takes plain names only.
func TestResolveNoEscape(t *testing.T) {
	base := t.TempDir()
	exp := filepath.Join(base, "export")
	outside := filepath.Join(base, "outside")
	secret := []byte("outside the export")
	writeFile(t, filepath.Join(outside, "secret"), secret, 0o644)
	writeFile(t, filepath.Join(exp, "sub/f"), []byte("x"), 0o644)
	os.Symlink(outside, filepath.Join(exp, "abs"))
	os.Symlink("../outside", filepath.Join(exp, "rel"))
	os.Symlink("../../outside", filepath.Join(exp, "sub/up"))
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(exp, "sub/file"))
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	c, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw := remote.ExportClientOf(c)
	for _, p := range []string{"..", "../", "../outside", "./..", "sub/../..", "sub/./../../outside", "sub/..",
		outside, "/" + exp, "//" + outside, "abs", "abs/", "rel", "rel/.", "sub/up", "sub/up/", "sub/file", "abs/secret"} {
		_, err := raw.Resolve(ctx, &pb.ResolveRequest{Path: p})
		if code := status.Code(err); code != codes.InvalidArgument && code != codes.NotFound {
			t.Errorf("resolve %q: %v, want refused", p, err)
		}
	}
	// The export as a whole: its symlinks are symlinks.
	if _, err := raw.Resolve(ctx, &pb.ResolveRequest{Path: ""}); err != nil {
		t.Fatal(err)
	}
	store, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	inside, _ := object.EncodeBlob([]byte("x"))
	if ok, _ := store.Has(ctx, object.Sum(inside)); !ok {
		t.Fatal("the export's own file is not in the master's store: the check below would prove nothing")
	}
	blob, _ := object.EncodeBlob(secret)
	if ok, _ := store.Has(ctx, object.Sum(blob)); ok {
		t.Error("the master stored the bytes of a file outside the export")
	}
	for _, name := range []string{"../refs", "pushed/x", ".pushed", "a/b"} {
		if _, err := raw.GetRef(ctx, &pb.GetRefRequest{Name: name}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("GetRef %q: %v, want InvalidArgument", name, err)
		}
	}
}
