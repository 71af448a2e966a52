package cowfs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A read of what the worker has not cached, of a version the master has
// dropped, fails and the worker's log says the version is no longer kept.
func TestDroppedVersionRead(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), randBytes(3<<20), 0o644)
	writeFile(t, filepath.Join(exp, "opened"), randBytes(3<<20), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{KeepVersions: 1})
	var log remotetest.LogBuffer
	rm := mountRemote(remotetest.NewWorker(t), ms.Addr, remotetest.ViewOptions{Timeout: 5 * time.Second, Log: log.Logger()})
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
	store, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := refs.Open(ms.Config.Refs)
	if err != nil {
		t.Fatal(err)
	}
	agePacks(t, ms.Config.Objects)
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
		if lines := log.Lines("op=" + what); len(lines) == 0 || !strings.Contains(lines[0], "no longer kept") {
			t.Errorf("the log does not say the version was dropped: %q", lines)
		} else {
			t.Log(lines[0])
		}
	}
}
