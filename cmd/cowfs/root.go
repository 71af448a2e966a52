package main

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type globals struct {
	state string
}

func defaultState() string {
	if s := os.Getenv("COWFS_STATE"); s != "" {
		return s
	}
	if os.Geteuid() == 0 {
		return "/var/lib/cowfs"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "cowfs")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "cowfs")
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "cowfs",
		Short: "Copy-on-write workspaces for crawler tasks",
		Long: `cowfs mounts a workspace: a read-only lower directory under a private,
writable upper layer. Processes in the workspace see one ordinary directory;
what they change goes to the upper, and the lower is never modified.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.state, "state", defaultState(),
		"state directory for uppers and metadata (env COWFS_STATE)")
	root.AddCommand(newMountCmd(g), newServeCmd(g), newStatusCmd(g), newUnmountCmd(g), newSnapshotCmd(g), newRestoreCmd(g), newSnapshotsCmd(g), newVerifyCmd(g), newGCCmd(g), newVersionCmd())
	return root
}
