package main

import (
	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs"
)

func newRestoreCmd(g *globals) *cobra.Command {
	f := &mountFlags{}
	cmd := &cobra.Command{
		Use:   "restore NAME MNT [--remote ADDR|s3://BUCKET/PREFIX]",
		Short: "Mount a snapshot read-only beneath a fresh writable layer",
		Long: `Mount snapshot NAME at MNT beneath a fresh, empty upper. Nothing is copied,
so a restore takes the same time whatever the snapshot's size. The snapshot's
files can never be changed through the mount: a process that appends to a file
writes to its own upper. Any number of restores of one snapshot can be mounted
at once, each with its own upper; restoring again gives a fresh upper again.

With --remote, NAME is a snapshot on that master (sent there with cowfs
snapshot --push from any worker): it is fetched lazily and verified like a
mount --remote, and cached for every mount of this state directory. With
--remote s3://BUCKET/PREFIX, NAME is a checkpoint pushed to that bucket
(cowfs snapshot --push of a mount of it, or cowfs push --remote s3://...),
with no master involved.`,
		Example: `  cowfs restore crawl-2026-11-23T10 /root/crawlab_workspace/spider1-resume

  # on another worker, from the master
  cowfs restore crawl-2026-11-23T10 /root/crawlab_workspace/spider1-resume --remote master:7420 --token-file /etc/cowfs/token

  # on any machine, from a bucket
  cowfs restore crawl-2026-11-23T10 /root/crawlab_workspace/spider1-resume --remote s3://cowfs/spiders/spider1`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.snapshot = args[0]
			f.timeoutSet = cmd.Flags().Changed("timeout")
			f.foregroundSet = cmd.Flags().Changed("foreground")
			f.access.changed = cmd.Flags().Changed
			f.remote.changed = cmd.Flags().Changed
			return runMount(g, f, args[1])
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.foreground, "foreground", false, "stay attached until unmounted (the default as PID 1, a container's entrypoint)")
	fl.BoolVar(&f.debug, "debug", false, "log every FUSE request")
	fl.DurationVar(&f.timeout, "timeout", cowfs.DefaultStartTimeout, "how long to wait for the mount to become ready (with --remote, unless set: 5m plus --io-timeout, as the master may scan a big export first)")
	fl.IntVar(&f.procs, "procs", cowfs.DefaultProcs(), "CPUs the mount process may use at once (GOMAXPROCS); one more while it starts, fetches from its remote, or takes in a snapshot's lower")
	registerReadAhead(fl, f)
	registerWriteback(fl, f)
	registerMetricsAddr(fl, &f.metricsAddr)
	f.access.register(fl)
	f.remote.register(fl)
	f.log.register(fl, "<state>/restores/mount.log in the background, stderr with --foreground")
	fl.MarkHidden("path")
	return cmd
}
