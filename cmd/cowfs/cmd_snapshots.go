package main

import (
	"context"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
)

// snapshotJSON is a line of cowfs snapshots --json.
type snapshotJSON struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Parent  string    `json:"parent"`
	Source  string    `json:"source"`
	Size    int64     `json:"size"`
	Unique  int64     `json:"unique"`
	Root    string    `json:"root"`
}

// checkpointJSON is a line of cowfs snapshots --remote URL --json.
type checkpointJSON struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Parent  string    `json:"parent"`
	Source  string    `json:"source"`
	Version string    `json:"version"`
	Leases  int       `json:"leases"`
}

func newSnapshotsCmd(g *globals) *cobra.Command {
	var asJSON bool
	var bucket, rmBucket string
	s3f, rmS3f := &s3Flags{}, &s3Flags{}
	cmd := &cobra.Command{
		Use:   "snapshots",
		Short: "List snapshots",
		Long: `List snapshots: name, when it was taken, the snapshot it descends from,
its logical size (the bytes of its files) and the bytes stored for it alone
(chunks no other snapshot shares).

On a master, snapshots workers pushed are listed as pushed/NAME: they are
kept apart from the master's own, so NAME and pushed/NAME are two snapshots.
rm, diff, verify and restore take pushed/NAME too.

With --remote s3://BUCKET/PREFIX it lists the checkpoints pushed to the
bucket instead, oldest first, with how many running restores hold each with
a lease; snapshots rm NAME --remote s3://BUCKET/PREFIX removes one (its
objects go at the bucket's next gc, except what a running restore holds).`,
		Example: "  cowfs snapshots\n  cowfs snapshots rm crawl-old\n  cowfs snapshots rm pushed/crawl-old\n  cowfs snapshots diff crawl-1 crawl-2",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bucket != "" {
				return listCheckpoints(cmd, s3f, bucket, asJSON)
			}
			return listSnapshots(cmd, g.state, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonFlagHelp)
	cmd.Flags().StringVar(&bucket, "remote", "", "list the checkpoints pushed to the bucket s3://BUCKET/PREFIX instead")
	s3f.register(cmd)
	rm := &cobra.Command{
		Use:     "rm NAME",
		Short:   "Remove a snapshot's name (its objects go at the next gc)",
		Example: "  cowfs snapshots rm crawl-old\n  cowfs snapshots rm crawl-old --remote s3://cowfs/spiders/spider1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rmBucket != "" {
				ctx := context.Background()
				st, err := rmS3f.openRemote(ctx, rmBucket)
				if err != nil {
					return err
				}
				return st.RemoveCheckpoint(ctx, args[0])
			}
			_, d, err := openSnapshots(g.state)
			if err != nil {
				return err
			}
			return d.Remove(args[0])
		},
	}
	rm.Flags().StringVar(&rmBucket, "remote", "", "remove the checkpoint from the bucket s3://BUCKET/PREFIX instead")
	rmS3f.register(rm)
	cmd.AddCommand(rm, &cobra.Command{
		Use:     "diff A B",
		Short:   "List paths added (+), removed (-) and changed (M) from snapshot A to B",
		Example: "  cowfs snapshots diff crawl-1 crawl-2",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, d, err := openSnapshots(g.state)
			if err != nil {
				return err
			}
			a, err := d.Get(args[0])
			if err != nil {
				return err
			}
			b, err := d.Get(args[1])
			if err != nil {
				return err
			}
			changes, err := object.Diff(context.Background(), store, a.Root.Object, b.Root.Object)
			if err != nil {
				return err
			}
			for _, c := range changes {
				fmt.Fprintf(cmd.OutOrStdout(), "%c %s\n", c.Kind, c.Path)
			}
			return nil
		},
	})
	return cmd
}

// listCheckpoints prints the checkpoints of the bucket url, as a table
// or as JSON lines.
func listCheckpoints(cmd *cobra.Command, f *s3Flags, url string, asJSON bool) error {
	ctx := context.Background()
	st, err := f.openRemote(ctx, url)
	if err != nil {
		return err
	}
	cs, err := st.ListCheckpoints(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		for _, c := range cs {
			if err := writeJSON(cmd.OutOrStdout(), checkpointJSON{c.Name, c.Created, c.Parent, c.Source, c.Version, c.Leases}); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tCREATED\tPARENT\tRESTORES\tSOURCE")
	for _, c := range cs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", c.Name, c.Created.Local().Format(time.DateTime), c.Parent, c.Leases, c.Source)
	}
	return w.Flush()
}

// listSnapshots prints every snapshot of state with its logical size and
// the bytes stored for it alone, as a table or as JSON lines.
func listSnapshots(cmd *cobra.Command, state string, asJSON bool) error {
	store, d, err := openSnapshots(state)
	if err != nil {
		return err
	}
	list, err := d.List()
	if err != nil {
		return err
	}
	pushed, err := d.Pushed().List()
	if err != nil {
		return err
	}
	for _, s := range pushed {
		s.Name = refs.PushedPrefix + s.Name
		list = append(list, s)
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].Created.Before(list[j].Created) })
	ctx := context.Background()
	logical := make([]int64, len(list))
	chunks := make([]map[object.Digest]bool, len(list))
	users := map[object.Digest]int{}
	for i, s := range list {
		chunks[i] = map[object.Digest]bool{}
		err := object.WalkEntries(ctx, store, s.Root.Object, func(e *object.Entry, f *object.File) error {
			if f != nil {
				logical[i] += f.Size
				for _, c := range f.Chunks {
					if !c.IsZero() && !chunks[i][c] {
						chunks[i][c] = true
						users[c]++
					}
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", s.Name, err)
		}
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	if !asJSON {
		fmt.Fprintln(w, "NAME\tCREATED\tPARENT\tSIZE\tUNIQUE\tROOT")
	}
	for i, s := range list {
		var unique int64
		for c := range chunks[i] {
			if users[c] == 1 {
				if n, err := store.Size(c); err == nil {
					unique += n - 2 // the blob header
				}
			}
		}
		if asJSON {
			err := writeJSON(cmd.OutOrStdout(), snapshotJSON{Name: s.Name, Created: s.Created, Parent: s.Parent,
				Source: s.Source, Size: logical[i], Unique: unique, Root: s.Root.Object.String()})
			if err != nil {
				return err
			}
			continue
		}
		parent := s.Parent
		if parent == "" {
			parent = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Created.Local().Format(time.DateTime), parent,
			humanBytes(logical[i]), humanBytes(unique), s.Root.Object.Short())
	}
	return w.Flush()
}
