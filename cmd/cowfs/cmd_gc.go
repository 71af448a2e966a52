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
	var dryRun, asJSON bool
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
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), struct {
					Live         int   `json:"live"`
					Removed      int   `json:"removed"`
					RemovedBytes int64 `json:"removed_bytes"`
					Young        int   `json:"young"`
					DryRun       bool  `json:"dry_run"`
					GraceSeconds int64 `json:"grace_seconds"`
				}{st.Live, st.Removed, st.RemovedBytes, st.Young, dryRun, int64(grace / time.Second)})
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
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonFlagHelp)
	return cmd
}
