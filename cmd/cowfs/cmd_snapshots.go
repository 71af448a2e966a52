package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/fs"
)

func newSnapshotsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "snapshots",
		Short:   "List snapshots",
		Example: "  cowfs snapshots\n  cowfs snapshots rm crawl-old",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := refs.Open(fs.RefsDir(g.state))
			if err != nil {
				return err
			}
			list, err := d.List()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tCREATED\tPARENT\tROOT")
			for _, s := range list {
				parent := s.Parent
				if parent == "" {
					parent = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Name, s.Created.Local().Format(time.DateTime), parent, s.Root.Short())
			}
			return w.Flush()
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "rm NAME",
		Short:   "Remove a snapshot's name (its objects go at the next gc)",
		Example: "  cowfs snapshots rm crawl-old",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := refs.Open(fs.RefsDir(g.state))
			if err != nil {
				return err
			}
			return d.Remove(args[0])
		},
	})
	return cmd
}
