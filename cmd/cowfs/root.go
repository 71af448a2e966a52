package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

type globals struct {
	state string
	// stateGiven is whether --state or COWFS_STATE named the state;
	// if not, a command given a mountpoint uses the mount's (stateOf).
	stateGiven bool
	// started is set once cobra has parsed the command line and runs
	// the command: an error before then is a usage error.
	started bool
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

// execute runs the command line args. Whatever cobra refuses before the
// command runs (an unknown command or flag, a missing argument or required
// flag, a flag's value it cannot parse) is a usageError.
func execute(args []string) error {
	g := &globals{}
	root := newRoot(g)
	root.SetArgs(args)
	err := root.Execute()
	if err != nil && !g.started {
		return usageError{err}
	}
	return err
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "cowfs",
		Short: "Copy-on-write workspaces for crawler tasks",
		Long: `cowfs mounts a workspace: a read-only lower directory under a private,
writable upper layer. Processes in the workspace see one ordinary directory;
what they change goes to the upper, and the lower is never modified.

Exit codes: 0 ok, 1 any other failure, 2 usage, 3 not found (no such
snapshot, mount, bucket or published version), 4 master or object store
unreachable, 5 corrupt (damage found), 6 denied (token, credentials or
TLS refused); see docs/cli.md.`,
		Version:       versionLine(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			// Cobra checks these only after this hook: here, so
			// that they are usage errors too.
			if err := cmd.ValidateRequiredFlags(); err != nil {
				return err
			}
			if err := cmd.ValidateFlagGroups(); err != nil {
				return err
			}
			g.started = true
			g.stateGiven = cmd.Flags().Changed("state") || os.Getenv("COWFS_STATE") != ""
			for c := cmd; c != nil; c = c.Parent() {
				switch c.Name() {
				case "version", "help", "completion":
					return nil // no state directory involved
				}
			}
			if os.Getenv(readyEnv) != "" {
				// A mount process: the command that hands it its
				// mount checked the state directory and said what it
				// changed there. One started ahead (internal/prestart)
				// changes nothing before it is handed a mount, which
				// may never come.
				return nil
			}
			return checkState(g.state, cmd.ErrOrStderr())
		},
	}
	root.PersistentFlags().StringVar(&g.state, "state", defaultState(),
		"state directory for uppers and metadata (env COWFS_STATE)")
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newMountCmd(g), newServeCmd(g), newStatusCmd(g), newWarmupCmd(g), newUnmountCmd(g), newSnapshotCmd(g), newRestoreCmd(g), newSnapshotsCmd(g), newVerifyCmd(g), newGCCmd(g), newPushCmd(g), newPublishCmd(g), newVersionsCmd(), newWorkspacesCmd(g), newVersionCmd())
	registerCompletions(root, g)
	return root
}

// checkState runs before every command that uses the state directory. It
// refuses an empty one (which would be the current directory) and one
// that belongs to another user, and makes one that group or other may
// enter private, saying so on w. Closing the top directory is enough:
// cowfs makes everything beneath it 0700 (directories) or 0600 and 0400
// (files, objects) now, and what an older cowfs made more open (objects
// 0444, directories 0755) cannot be reached by anyone else once the top
// cannot be entered. A state directory that does not exist yet is made
// 0700 by what first needs it.
func checkState(state string, w io.Writer) error {
	if state == "" {
		return errors.New("the state directory is empty: give --state DIR, or leave --state and COWFS_STATE unset for the default")
	}
	st, err := os.Stat(state)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("state directory %s is not a directory", state)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("state directory %s belongs to uid %d, not to you (uid %d): give --state a directory of your own", state, sys.Uid, os.Geteuid())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(state, 0o700); err != nil {
			return fmt.Errorf("state directory %s is open to other users (mode %04o) and could not be made private: %w", state, perm, err)
		}
		fmt.Fprintf(w, "cowfs: state directory %s was open to other users (mode %04o); made it 0700\n", state, perm)
	}
	return nil
}
