package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/fs"
)

// openSnapshots opens the object store and refs of a state directory.
func openSnapshots(state string) (*object.DirStore, *refs.Dir, error) {
	store, err := object.OpenDirStore(fs.ObjectsDir(state))
	if err != nil {
		return nil, nil, err
	}
	d, err := refs.Open(fs.RefsDir(state))
	return store, d, err
}

func newVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify NAME",
		Short: "Re-hash every object of a snapshot",
		Long: `Read every object snapshot NAME reaches (trees, file objects and every
chunk) and check each against its digest. Exits non-zero and lists the bad
paths if anything does not match or is missing.`,
		Example: "  cowfs verify crawl-2026-11-23T10",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, d, err := openSnapshots(g.state)
			if err != nil {
				return err
			}
			s, err := d.Get(args[0])
			if err != nil {
				return err
			}
			probs, err := object.Verify(context.Background(), store, s.Root)
			if err != nil {
				return fmt.Errorf("verify %s: %w", s.Name, err)
			}
			for _, p := range probs {
				fmt.Fprintf(cmd.ErrOrStderr(), "BAD %s: %v\n", p.Path, p.Err)
			}
			if len(probs) > 0 {
				return fmt.Errorf("snapshot %s: %d problems", s.Name, len(probs))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s: ok (root %s)\n", s.Name, s.Root)
			return nil
		},
	}
}
