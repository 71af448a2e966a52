package cowfs_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/remote"
)

// A task runner written in Go gives a task a workspace over the master's
// export of a spider, snapshots what the task left, and pushes the
// snapshot to the master, where any other worker can restore it.
func ExampleOpen() {
	base, err := os.MkdirTemp("", "cowfs-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(base)
	// The master (cowfs serve) exports the spiders on loopback.
	export, workspace := filepath.Join(base, "spiders"), filepath.Join(base, "workspace")
	os.MkdirAll(filepath.Join(export, "spider1"), 0o755)
	os.WriteFile(filepath.Join(export, "spider1", "quotes.py"), []byte("# spider\n"), 0o644)
	os.Mkdir(workspace, 0o755)
	srv, err := remote.NewServer(remote.ServerConfig{Root: export,
		Objects: filepath.Join(base, "master", "objects"), Refs: filepath.Join(base, "master", "refs")})
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Stop()

	ctx := context.Background()
	ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: workspace, State: filepath.Join(base, "state"),
		Lower: cowfs.Lower{Remote: &cowfs.Remote{Addr: l.Addr().String(), Path: "spider1"}}})
	if err != nil {
		log.Fatal(err)
	}
	defer ws.Close()
	os.WriteFile(filepath.Join(workspace, "results.json"), []byte("[]"), 0o644)
	snap, err := ws.Snapshot(ctx, "run-1")
	if err != nil {
		log.Fatal(err)
	}
	pushed, err := ws.Push(ctx, "run-1")
	fmt.Println(snap.Name, snap.Files, pushed > 0, err)
	// Output: run-1 2 true <nil>
}
