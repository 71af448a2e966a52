package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/refs"
)

func newSnapshotCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var push, asJSON bool
	cmd := &cobra.Command{
		Use:   "snapshot MNT NAME",
		Short: "Take an immutable snapshot of a live mount",
		Long: `Record the merged view of the mount at MNT, as it is at one instant, as
snapshot NAME. Processes in the mount keep running and keep their open files;
their writes wait only while what changed is turned into objects, and what they
write afterwards is not in the snapshot. A snapshot is never changed again:
restore it with "cowfs restore NAME DIR". NAME must not exist yet.

A snapshot of a mount --remote holds everything it needs on this worker.
With --push it is also sent to the mount's master (only what the master
lacks), so that "cowfs restore --remote" works on any worker.`,
		Example: "  cowfs snapshot /root/crawlab_workspace/spider1 crawl-2026-11-23T10\n  cowfs snapshot /root/crawlab_workspace/spider1 crawl-2026-11-23T10 --push",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			mnt, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			// Here, not only in the mount: the control socket speaks
			// JSON, which would turn a name that is not UTF-8 into
			// another, valid one.
			if err := refs.ValidName(args[1]); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			state := g.stateOf(mnt)
			ws := cowfs.ControlOf(state, mnt)
			r, err := ws.Snapshot(ctx, args[1])
			if err = fromMount(err); err != nil {
				return fmt.Errorf("snapshot of %s: %w", mnt, err)
			}
			if asJSON && !push {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			if !asJSON {
				fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s: root %s, %d files, %d dirs, %s read, %d chunks and %d dirs reused, writes held %s\n",
					r.Name, r.Root, r.Files, r.Dirs, humanBytes(r.BytesRead), r.ChunksReused, r.DirsReused, r.Hold.Round(time.Microsecond))
			}
			if !push {
				return nil
			}
			pushed, err := ws.Push(ctx, args[1])
			if err = fromMount(err); err != nil {
				if asJSON {
					writeJSON(cmd.OutOrStdout(), r)
				}
				return fmt.Errorf("snapshot %s was taken here, but not pushed (cowfs push %s tries again): %w", args[1], args[1], err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), struct {
					*cowfs.SnapshotResult
					Pushed int `json:"pushed"`
				}{r, pushed})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pushed %s to the mount's master or bucket: %d objects sent\n", args[1], pushed)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up after this long")
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonFlagHelp)
	cmd.Flags().BoolVar(&push, "push", false, "also send the snapshot to the mount's master or bucket (mount --remote only)")
	return cmd
}
