package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs/cow/object"
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
	// Again is, for the key of a rollback, when the version was first
	// published.
	Again time.Time `json:"again,omitzero"`
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
a lease (gc --keep-versions keeps those; decision 0078). A rollback's key
says when the version was first published.`,
		Example: "  cowfs versions s3://cowfs/spiders/spider1\n  cowfs versions s3://cowfs/spiders/spider1 --json | jq -r 'select(.leases > 0) | .version'",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			url := args[0]
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
					if err := writeJSON(cmd.OutOrStdout(), versionJSON{p.Version, p.Published, p.Files, p.Bytes, p.Source, p.Leases, p.Again}); err != nil {
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
				src := p.Source
				if !p.Again.IsZero() {
					src = fmt.Sprintf("rollback to the publish of %s: %s", p.Again.Local().Format(time.DateTime), src)
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d\t%s\n", p.Digest.Short(), p.Published.Local().Format(time.DateTime), p.Files, humanBytes(p.Bytes), p.Leases, src)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonFlagHelp)
	s3f.register(cmd)
	cmd.AddCommand(newRollbackCmd())
	return cmd
}

func newRollbackCmd() *cobra.Command {
	var asJSON bool
	var to string
	s3f := &s3Flags{}
	cmd := &cobra.Command{
		Use:   "rollback s3://BUCKET/PREFIX [--to V]",
		Short: "Make an earlier published version the newest again",
		Long: `Make an earlier version the newest again, with one write and nothing
uploaded: the bucket holds its objects already. Without --to, the version
published before the newest (another tree than the newest); --to names one
by its digest, or the start of one, as cowfs versions prints it. Fresh
mounts then get it; running mounts, and remounts of their mountpoints,
keep the version they mounted. A rollback waits while a gc of the bucket
runs, as a publish does, and refuses a version gc --keep-versions removed.`,
		Example: "  cowfs versions rollback s3://cowfs/spiders/spider1\n  cowfs versions rollback s3://cowfs/spiders/spider1 --to 3f9a2c41d0be",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			url := args[0]
			ctx := context.Background()
			st, err := s3f.open(ctx, url)
			if err != nil {
				return err
			}
			vs, err := distinctVersions(ctx, st)
			if err != nil {
				return err
			}
			var target s3store.Version
			switch {
			case to != "":
				if target, err = findVersion(st, vs, to); err != nil {
					return err
				}
			case len(vs) < 2:
				return fmt.Errorf("%s: %w before the newest: nothing to roll back to", url, s3store.ErrNoVersion)
			default:
				target = vs[1]
			}
			if len(vs) > 0 && vs[0].Digest == target.Digest {
				fmt.Fprintf(cmd.ErrOrStderr(), "version %s is the newest already: nothing to do\n", target.Digest.Short())
				return nil
			}
			info, err := st.Republish(ctx, target.Digest)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), versionJSON{Version: info.Version, Published: info.Published, Files: info.Files, Bytes: info.Bytes, Source: info.Source, Again: info.Again})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rolled %s back to version %s, first published %s from %s (%d files, %s): fresh mounts get it, running mounts keep theirs\n",
				url, target.Digest.Short(), info.Again.Local().Format(time.DateTime), info.Source, info.Files, humanBytes(info.Bytes))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonFlagHelp)
	cmd.Flags().StringVar(&to, "to", "", "the version to roll back to: its digest, or the start of one (default: the one before the newest)")
	s3f.register(cmd)
	return cmd
}

// distinctVersions returns the bucket's versions newest first, a version
// published more than once (the same tree again, a rollback) once, at its
// newest.
func distinctVersions(ctx context.Context, st *s3store.Store) ([]s3store.Version, error) {
	vs, err := st.Versions(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[object.Digest]bool{}
	return slices.DeleteFunc(vs, func(v s3store.Version) bool {
		dup := seen[v.Digest]
		seen[v.Digest] = true
		return dup
	}), nil
}

// findVersion returns the one of vs whose digest starts with prefix
// (with or without its "sha256-").
func findVersion(st *s3store.Store, vs []s3store.Version, prefix string) (s3store.Version, error) {
	want := strings.TrimPrefix(prefix, "sha256-")
	var found []s3store.Version
	for _, v := range vs {
		if strings.HasPrefix(strings.TrimPrefix(v.Digest.String(), "sha256-"), want) {
			found = append(found, v)
		}
	}
	switch {
	case want == "":
		return s3store.Version{}, usagef("give a version: its digest, or the start of one")
	case len(found) == 0:
		return s3store.Version{}, fmt.Errorf("%s: %w matching %s (cowfs versions %s lists them)", st.URL(), s3store.ErrNoVersion, prefix, st.URL())
	case len(found) > 1:
		return s3store.Version{}, usagef("%s names %d versions: give more of its digest", prefix, len(found))
	}
	return found[0], nil
}
