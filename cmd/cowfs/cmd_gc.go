package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs/cow/refs"
)

func newGCCmd(g *globals) *cobra.Command {
	var grace time.Duration
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove objects no snapshot, restore or live snapshot needs",
		Long: `Remove objects that no snapshot and no mounted restore reaches. Safe while
mounts run and snapshots are taken: gc first waits for snapshots in progress,
keeps every object a snapshot uses while it runs, and keeps unreachable objects
younger than --grace.`,
		Example: "  cowfs snapshots rm crawl-old && cowfs gc\n  cowfs gc --dry-run",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, d, err := openSnapshots(g.state)
			if err != nil {
				return err
			}
			st, err := refs.GC(context.Background(), store, d, grace, dryRun)
			if err != nil {
				return err
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "gc: %d objects live, %s %d (%s), kept %d younger than %s\n",
				st.Live, verb, st.Removed, humanBytes(st.RemovedBytes), st.Young, grace)
			return nil
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", time.Hour, "keep unreachable objects younger than this")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would be removed")
	return cmd
}
