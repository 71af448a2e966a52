package cowfs

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
)

// A snapshot whose caller stops waiting, by its deadline or by hanging
// up, is not made: the caller was told it failed, and a retry must not
// find the name taken.
func TestSnapshotCallerGivesUp(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	state, lower, mnt := filepath.Join(base, "state"), filepath.Join(base, "lower"), filepath.Join(base, "mnt")
	os.Mkdir(lower, 0o755)
	os.Mkdir(mnt, 0o755)
	os.WriteFile(filepath.Join(lower, "f"), []byte("x"), 0o644)
	ws := openT(t, Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: lower}})
	// Enough upper bytes that hashing them takes a while.
	big := make([]byte, 128<<20)
	rand.Read(big)
	if err := os.WriteFile(filepath.Join(mnt, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := statedir.ControlSocket(state, mnt)
	rd, err := refs.Open(statedir.RefsDir(state))
	if err != nil {
		t.Fatal(err)
	}

	// The deadline: the mount gives up replyMargin before it, in time to
	// say so. On a loaded machine (a -race run beside other suites) its
	// word can still come late, and the caller's own read deadline ends
	// the call: what must hold either way is that the snapshot is not
	// made (checked below).
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	_, err = Control{Socket: sock}.Snapshot(ctx, "late")
	cancel()
	switch {
	case err == nil:
		t.Fatal("snapshot with a 600 ms deadline succeeded; want it given up")
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Logf("the caller's deadline ended the call before the mount's reply: %v", err)
	case !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "deadline exceeded"):
		t.Fatalf("snapshot with a 600 ms deadline: %v; want the mount's word that it gave up", err)
	}

	// The hang-up: the caller goes away mid-snapshot.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewEncoder(c).Encode(controlRequest{Op: "snapshot", Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	c.Close()

	// A snapshot taken after it: its capture waits for the other's
	// hold to end. Then a second for the abandoned one to have reached
	// its ref, had it gone on.
	ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := ws.Snapshot(ctx, "ok"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	for _, name := range []string{"late", "gone"} {
		if _, err := rd.Get(name); err == nil {
			t.Errorf("snapshot %q was made after its caller gave up", name)
		}
	}
}

// A workspace whose control socket cannot be made is not opened, and
// leaves nothing mounted or locked: opening it again, once the socket's
// place is free, works.
func TestOpenControlSocketUnusable(t *testing.T) {
	base := t.TempDir()
	state, lower, mnt := filepath.Join(base, "state"), filepath.Join(base, "lower"), filepath.Join(base, "mnt")
	os.Mkdir(lower, 0o755)
	os.Mkdir(mnt, 0o755)
	sock := statedir.ControlSocket(state, mnt)
	// A directory that is not empty where the socket goes.
	if err := os.MkdirAll(filepath.Join(sock, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: lower}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, err := Open(ctx, spec)
	if err == nil {
		ws.Close()
		t.Fatal("opened with no control socket")
	}
	if !strings.Contains(err.Error(), "control socket") {
		t.Errorf("error %q does not name the control socket", err)
	}
	if ok, _ := fs.IsMountpoint(mnt); ok {
		t.Fatal("left mounted")
	}
	os.RemoveAll(sock)
	openT(t, spec)
}
