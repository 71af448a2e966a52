package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs"
)

func newWorkspacesCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "workspaces",
		Short: "List the workspaces (uppers) kept under the state directory",
		Long: `List the workspaces under --state: the upper and work directories each
mountpoint's mounts (mounts/<key>) and restores (restores/<key>) keep between
mounts, with the mountpoint, whether a mount uses it now, its size on disk and
its last use (the last mount or unmount, or the newest change to it).

A workspace is kept until removed: cowfs workspaces prune removes the
unmounted ones not used for a while.`,
		Example: "  cowfs workspaces\n  cowfs workspaces --json | jq -r 'select(.mounted | not) | .dir'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ws, err := cowfs.ListWorkspaces(g.state)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				for _, w := range ws {
					if err := writeJSON(out, w); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tMOUNTPOINT\tMOUNTED\tSIZE\tLAST USE\tDIR")
			for _, w := range ws {
				mnt, state := w.Mountpoint, "no"
				if mnt == "" {
					mnt = "?"
				}
				if w.Mounted {
					state = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", w.Kind, mnt, state, humanBytes(w.Bytes),
					w.LastUse.Local().Format("2006-01-02 15:04"), w.Dir)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonFlagHelp)
	cmd.AddCommand(newWorkspacesPruneCmd(g))
	return cmd
}

func newWorkspacesPruneCmd(g *globals) *cobra.Command {
	var olderThan time.Duration
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "prune --older-than DURATION",
		Short: "Remove unmounted workspaces not used for DURATION",
		Long: `Remove the workspaces under --state last used more than DURATION ago
(e.g. 24h, 168h). Never one that is mounted: its upper and work directories
are locked, and prune takes the same locks, so a mount starting meanwhile and
the removal exclude each other. No snapshot needs a workspace: what a
snapshot holds is in the object store, and a restore starts from a fresh
upper (docs/decisions/0054). Prints what it removed and the bytes freed.`,
		Example: "  cowfs workspaces prune --older-than 24h --dry-run\n  cowfs workspaces prune --older-than 168h",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if olderThan <= 0 {
				return usagef("--older-than: want a duration above 0 (e.g. 24h)")
			}
			pruned, err := cowfs.PruneWorkspaces(g.state, olderThan, dryRun)
			out := cmd.OutOrStdout()
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			var freed int64
			for _, w := range pruned {
				freed += w.Bytes
				if asJSON {
					if err := writeJSON(out, struct {
						cowfs.WorkspaceInfo
						Removed bool `json:"removed"`
					}{w, !dryRun}); err != nil {
						return err
					}
					continue
				}
				mnt := w.Mountpoint
				if mnt == "" {
					mnt = "?"
				}
				fmt.Fprintf(out, "%s %s (%s, %s, last used %s)\n", verb, w.Dir, mnt, humanBytes(w.Bytes), w.LastUse.Local().Format("2006-01-02 15:04"))
			}
			if !asJSON {
				fmt.Fprintf(out, "prune: %s %d workspaces, %s\n", verb, len(pruned), humanBytes(freed))
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&olderThan, "older-than", 0, "remove workspaces last used longer ago than this (required)")
	cmd.MarkFlagRequired("older-than")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would be removed")
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonFlagHelp)
	return cmd
}
