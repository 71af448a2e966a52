package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/remote/s3store"
)

func newGCCmd(g *globals) *cobra.Command {
	var grace time.Duration
	var keep int
	var dryRun, asJSON bool
	var bucket string
	s3f := &s3Flags{}
	cmd := &cobra.Command{
		Use:   "gc [--remote s3://BUCKET/PREFIX]",
		Short: "Remove objects no snapshot, restore or live snapshot needs",
		Long: `Remove objects that no snapshot and no mounted restore reaches. Safe while
mounts run and snapshots are taken: gc first waits for snapshots in progress,
keeps every object a snapshot uses while it runs, and keeps unreachable objects
younger than --grace.

With --remote s3://BUCKET/PREFIX it collects the bucket instead: objects no
published version and no checkpoint reaches, older than --grace. It runs
only while no publish or push to the bucket does (each takes a lock under
PREFIX/locks/), and removes nothing if it cannot read every version and
checkpoint whole. --keep-versions N removes the keys of published versions
older than the newest N first, except a version a running mount holds (each
mount of a bucket keeps a lease on its version, renewed hourly and ignored
once 6 hours old) and a version superseded less than --grace ago; what they
alone reached is then removed as well.`,
		Example: "  cowfs snapshots rm crawl-old && cowfs gc\n  cowfs gc --dry-run\n  cowfs gc --remote s3://cowfs/spiders/spider1 --grace 24h\n  cowfs gc --remote s3://cowfs/spiders/spider1 --keep-versions 10",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bucket != "" {
				return gcBucket(cmd, s3f, bucket, s3store.GCOptions{Grace: grace, KeepVersions: keep, DryRun: dryRun}, asJSON)
			}
			if cmd.Flags().Changed("keep-versions") {
				return usagef("--keep-versions is of a bucket's versions: give --remote s3://BUCKET/PREFIX (a master keeps its newest versions with cowfs serve --keep-versions)")
			}
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
	cmd.Flags().IntVar(&keep, "keep-versions", 0, "with --remote: keep the newest N published versions and those mounts hold (0: keep every version)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would be removed")
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonFlagHelp)
	cmd.Flags().StringVar(&bucket, "remote", "", "collect the bucket s3://BUCKET/PREFIX instead of the state directory")
	s3f.register(cmd)
	return cmd
}

// gcBucket collects the bucket url names.
func gcBucket(cmd *cobra.Command, f *s3Flags, url string, opts s3store.GCOptions, asJSON bool) error {
	grace, dryRun := opts.Grace, opts.DryRun
	if _, _, err := s3store.ParseURL(url); err != nil {
		return usageError{fmt.Errorf("--remote: %w", err)}
	}
	if grace < 0 {
		return usagef("--grace must not be negative")
	}
	if opts.KeepVersions < 0 {
		return usagef("--keep-versions must not be negative (0 keeps every version)")
	}
	ctx := context.Background()
	dst, err := f.open(ctx, url)
	if err != nil {
		return err
	}
	st, err := dst.GC(ctx, opts)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(cmd.OutOrStdout(), struct {
			s3store.GCStats
			GraceSeconds int64 `json:"grace_seconds"`
		}{st, int64(grace / time.Second)})
	}
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "gc of %s: %d versions and %d checkpoints reach %d objects, %s %d, kept %d younger than %s\n",
		url, st.Versions, st.Checkpoints, st.Live, verb, st.Removed, st.Young, grace)
	if st.VersionsRemoved > 0 || opts.KeepVersions > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "gc of %s: %s %d versions older than the newest %d; kept %d a mount holds and %d superseded less than %s ago\n",
			url, verb, st.VersionsRemoved, opts.KeepVersions, st.VersionsLeased, st.VersionsYoung, grace)
	}
	if st.Packs > 0 || st.PacksRemoved > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "gc of %s: %d packs hold a reached object, %s %d packs; %d indexes written anew without them\n",
			url, st.Packs, verb, st.PacksRemoved, st.IndexesRewritten)
	}
	if st.IndexesMerged > 0 {
		verb := "merged"
		if dryRun {
			verb = "would merge"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "gc of %s: %s %d indexes of few objects into fewer\n", url, verb, st.IndexesMerged)
	}
	if st.PacksRepacked > 0 {
		verb := "repacked"
		if dryRun {
			verb = "would repack"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "gc of %s: %s %d packs more dead than live (%s kept, %s dead)\n",
			url, verb, st.PacksRepacked, humanBytes(st.RepackedBytes), humanBytes(st.DeadBytes))
	}
	if st.TracesRemoved > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "gc of %s: %s %d traces no mount put for %d days\n", url, verb, st.TracesRemoved, int(s3store.TraceAge.Hours()/24))
	}
	return nil
}
