package cowfs_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/pb"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// localSnapshot records, in the master's own namespace, a snapshot of a
// tree that is not under the export: one file "key" holding content.
func localSnapshot(t *testing.T, ctx context.Context, ms *remotetest.Master, name, content string) object.Digest {
	t.Helper()
	store, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := object.EncodeBlob([]byte(content))
	bd, err := store.Put(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	fo, _ := object.EncodeFile(&object.File{Size: int64(len(content)), Chunks: []object.Digest{bd}})
	fd, err := store.Put(ctx, fo)
	if err != nil {
		t.Fatal(err)
	}
	tree, _ := object.EncodeTree(&object.Tree{Entries: []object.Entry{{Name: "key", Mode: unix.S_IFREG | 0o600, Size: int64(len(content)), Object: fd}}})
	td, err := store.Put(ctx, tree)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := refs.Open(ms.Config.Refs)
	if err != nil {
		t.Fatal(err)
	}
	err = rd.Create(refs.Snapshot{Name: name, Root: object.Entry{Mode: unix.S_IFDIR | 0o700, Object: td},
		Created: time.Now().UTC(), Source: "/secret"})
	if err != nil {
		t.Fatal(err)
	}
	return td
}

// The wire serves the export and the snapshots workers pushed, never the
// master's own snapshots (of trees outside the export) unless
// ServeSnapshots says so; a push takes no name it could shadow.
func TestWireServesOnlyExport(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), []byte("exported"), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	secretRoot := localSnapshot(t, ctx, ms, "priv", "top secret")
	localSnapshot(t, ctx, ms, "priv2", "top secret 2")

	a := mountRemote(remotetest.NewWorker(t), ms.Addr, remotetest.ViewOptions{})
	raw := remote.ExportClientOf(a.client)
	// A local snapshot's name is answered exactly as a missing one.
	_, errPriv := raw.GetRef(ctx, &pb.GetRefRequest{Name: "priv"})
	_, errNope := raw.GetRef(ctx, &pb.GetRefRequest{Name: "nope"})
	if status.Code(errPriv) != codes.NotFound || status.Code(errNope) != codes.NotFound ||
		strings.ReplaceAll(status.Convert(errPriv).Message(), "priv", "nope") != status.Convert(errNope).Message() {
		t.Fatalf("GetRef of the master's own snapshot: %v; of a missing one: %v; want both NotFound alike", errPriv, errNope)
	}

	// A worker may push a name the master's own snapshot holds: the
	// namespaces are apart, and each restores its own.
	writeFile(t, filepath.Join(a.dir, "mine"), []byte("pushed by a"), 0o644)
	snap, err := a.m.Snapshot(ctx, "priv")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.push(ctx, "priv"); err != nil {
		t.Fatalf("push of a name the master's own snapshot holds: %v", err)
	}
	if n, err := a.push(ctx, "priv"); err != nil || n != 0 {
		t.Errorf("second push of the same snapshot: %d objects, %v; want 0, no error", n, err)
	}
	v, err := a.client.GetRef(ctx, "priv")
	if err != nil {
		t.Fatal(err)
	}
	b := mountRemote(remotetest.NewWorker(t), ms.Addr, remotetest.ViewOptions{Version: v})
	if got, err := os.ReadFile(filepath.Join(b.dir, "mine")); err != nil || string(got) != "pushed by a" {
		t.Errorf("restore of pushed priv: mine %q, %v", got, err)
	}
	if _, err := os.Lstat(filepath.Join(b.dir, "key")); err == nil {
		t.Error("restore of pushed priv holds the master's own priv")
	}
	rd, err := refs.Open(ms.Config.Refs)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := rd.Get("priv"); err != nil || s.Root.Object != secretRoot {
		t.Errorf("the master's own priv after the push: %v, %v", s.Root.Object, err)
	}
	pushed, err := rd.Get(refs.PushedPrefix + "priv")
	if err != nil || pushed.Root.Object.String() != snap.Root {
		t.Errorf("pushed/priv on the master: %v, %v; want root %s", pushed.Root, err, snap.Root)
	}
	// And the master's own snapshot may take a name a worker pushed.
	if _, err := a.m.Snapshot(ctx, "later"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.push(ctx, "later"); err != nil {
		t.Fatal(err)
	}
	localSnapshot(t, ctx, ms, "later", "the master's own later")

	// gc keeps what only a pushed snapshot reaches ("mine" is on no
	// other tree of the master).
	store, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	agePacks(t, ms.Config.Objects)
	if _, err := refs.GC(ctx, store, rd, 0, false); err != nil {
		t.Fatal(err)
	}
	if probs, err := object.Verify(ctx, store, pushed.Root.Object); err != nil || len(probs) != 0 {
		t.Errorf("pushed priv after gc: %v, %v", probs, err)
	}

	// A snapshot pushed to a master without the pushed namespace, its ref
	// among the master's own, is still served once the master restarts.
	legacy := pushed
	legacy.Name, legacy.Source = "legacy", refs.PushedSource
	if err := rd.Create(legacy); err != nil {
		t.Fatal(err)
	}
	ms.Restart()
	if vl, err := a.client.GetRef(ctx, "legacy"); err != nil || vl != v {
		t.Errorf("GetRef of a snapshot pushed before the namespaces: %v, %v; want %v", vl, err, v)
	}
	if _, err := rd.Get(refs.PushedPrefix + "legacy"); err != nil {
		t.Errorf("pushed/legacy: %v", err)
	}

	// With ServeSnapshots the master's own snapshots are served too; a
	// name both hold is the pushed one's, and a push may not take a name
	// either holds.
	ms.Stop()
	ms.Config.ServeSnapshots = true
	ms.Start(ms.Addr)
	v2, err := a.client.GetRef(ctx, "priv2")
	if err != nil {
		t.Fatalf("GetRef of the master's own snapshot with ServeSnapshots: %v", err)
	}
	c := mountRemote(remotetest.NewWorker(t), ms.Addr, remotetest.ViewOptions{Version: v2})
	if got, err := os.ReadFile(filepath.Join(c.dir, "key")); err != nil || string(got) != "top secret 2" {
		t.Errorf("restore of the master's own priv2: %q, %v", got, err)
	}
	if v3, err := a.client.GetRef(ctx, "priv"); err != nil || v3 != v {
		t.Errorf("GetRef of a name both hold: %v, %v; want the pushed version %v", v3, err, v)
	}
	if _, err := a.m.Snapshot(ctx, "priv2"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.push(ctx, "priv2"); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("push of the name of the master's own served snapshot: %v", err)
	}
	if _, err := rd.Get(refs.PushedPrefix + "priv2"); err == nil {
		t.Error("the refused push left a ref")
	}
}
