package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs/remote/s3store"
)

// versionJSON is a line of cowfs versions --json.
type versionJSON struct {
	Version   string    `json:"version"`
	Published time.Time `json:"published"`
	Files     int64     `json:"files"`
	Bytes     int64     `json:"bytes"`
	Source    string    `json:"source,omitempty"`
	Leases    int       `json:"leases"`
}

func newVersionsCmd() *cobra.Command {
	var asJSON bool
	s3f := &s3Flags{}
	cmd := &cobra.Command{
		Use:   "versions s3://BUCKET/PREFIX",
		Short: "List a bucket's published versions, newest first",
		Long: `List the versions published to a bucket's prefix, newest first: the
version, when it was published, its files and their bytes, the host and
directory it was published from, and how many running mounts hold it with
a lease (gc --keep-versions keeps those; decision 0078).`,
		Example: "  cowfs versions s3://cowfs/spiders/spider1\n  cowfs versions s3://cowfs/spiders/spider1 --json | jq -r 'select(.leases > 0) | .version'",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			url := args[0]
			if _, _, err := s3store.ParseURL(url); err != nil {
				return usageError{err}
			}
			ctx := context.Background()
			st, err := s3f.open(ctx, url)
			if err != nil {
				return err
			}
			ps, err := st.Published(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				for _, p := range ps {
					if err := writeJSON(cmd.OutOrStdout(), versionJSON{p.Version, p.Published, p.Files, p.Bytes, p.Source, p.Leases}); err != nil {
						return err
					}
				}
				return nil
			}
			if len(ps) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "no version published under %s\n", url)
				return nil
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VERSION\tPUBLISHED\tFILES\tSIZE\tMOUNTS\tSOURCE")
			for _, p := range ps {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d\t%s\n", p.Digest.Short(), p.Published.Local().Format(time.DateTime), p.Files, humanBytes(p.Bytes), p.Leases, p.Source)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonFlagHelp)
	s3f.register(cmd)
	return cmd
}
