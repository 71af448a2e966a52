package fs

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/fs/control"
)

// A snapshot whose caller stops waiting, by its deadline or by hanging
// up, is not made: the caller was told it failed, and a retry must not
// find the name taken.
func TestSnapshotCallerGivesUp(t *testing.T) {
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	writeT(t, filepath.Join(lower, "f"), []byte("x"))
	m := mountState(t, filepath.Join(base, "mnt"), Options{Lower: lower, State: state})
	// Enough upper bytes that hashing them takes a while.
	if err := os.WriteFile(filepath.Join(m.Dir, "big"), randBytes(128<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := ControlSocket(state, m.Dir)
	rd, err := refs.Open(RefsDir(state))
	if err != nil {
		t.Fatal(err)
	}

	// The deadline: the mount gives up in time to say so.
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	_, err = control.Call(ctx, sock, control.Request{Op: "snapshot", Name: "late"})
	cancel()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("snapshot with a 600 ms deadline: %v; want the mount's word that it gave up", err)
	}

	// The hang-up: the caller goes away mid-snapshot.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewEncoder(c).Encode(control.Request{Op: "snapshot", Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	c.Close()

	// A snapshot taken after it: its capture waits for the other's
	// hold to end. Then a second for the abandoned one to have reached
	// its ref, had it gone on.
	ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.Snapshot(ctx, "ok"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	for _, name := range []string{"late", "gone"} {
		if _, err := rd.Get(name); err == nil {
			t.Errorf("snapshot %q was made after its caller gave up", name)
		}
	}
}
