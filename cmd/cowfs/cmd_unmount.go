package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/fs"
)

func newUnmountCmd(g *globals) *cobra.Command {
	var lazy bool
	cmd := &cobra.Command{
		Use:   "unmount MNT",
		Short: "Unmount a cowfs workspace",
		Long: `Unmount the cowfs mount at MNT. The mount process flushes its metadata and
exits; the command returns once it has (a gc or a new mount at MNT right
after sees the mount wholly gone). A mount whose process died (the directory answers "transport endpoint
is not connected") is detached.`,
		Example: "  cowfs unmount /root/crawlab_workspace/spider1\n  cowfs unmount --lazy /mnt/ws   # detach now, finish when the last user leaves",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Ask the mount process who it is before it goes.
			pid := 0
			abs, absErr := filepath.Abs(args[0])
			if absErr == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				if st, err := cowfs.ControlOf(g.stateOf(abs), abs).Status(ctx); err == nil {
					pid = st.Pid
				}
				cancel()
			}
			if err := unmount(args[0], lazy); err != nil {
				return err
			}
			if pid == 0 && absErr == nil {
				// A dead mount's process cannot remove its record
				// of its state (mountstate.go).
				os.Remove(stateRecord(abs))
			}
			if pid > 0 && !lazy {
				waitExit(pid, 30*time.Second)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&lazy, "lazy", false, "detach even if the mount is busy")
	return cmd
}

func unmount(dir string, lazy bool) error {
	var st unix.Stat_t
	err := unix.Stat(dir, &st)
	if errors.Is(err, syscall.ENOTCONN) {
		// The server is gone; only the kernel's mount is left.
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detach dead mount %s: %w", dir, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	if ok, err := fs.IsMountpoint(dir); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%s is %w", dir, errNotMounted)
	}
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	for i := 0; ; i++ {
		err := unix.Unmount(dir, flags)
		if err == nil {
			return nil
		}
		if errors.Is(err, syscall.EBUSY) && i < 10 {
			// A process may be just closing its last file.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("unmount %s: still in use (see fuser -m %s, or use --lazy)", dir, dir)
		}
		if errors.Is(err, syscall.EPERM) && os.Geteuid() != 0 {
			return fusermountU(dir, lazy)
		}
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
}

// waitExit waits until process pid is gone (or a zombie), at most d.
func waitExit(pid int, d time.Duration) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if refs.ProcessGone(pid) {
			return
		}
	}
}
