package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=..."; left
// empty, the build info go build records says which version this is.
var version string

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the cowfs version (as cowfs --version does)",
		Example: "  cowfs version\n  cowfs --version",
		Args:    cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), versionLine())
		},
	}
}

// versionLine is "cowfs VERSION (commit REV[, modified]; GO OS/ARCH)":
// the version given with -ldflags, else the module's version from the
// build info, with the commit and whether the tree had uncommitted
// changes when go build recorded them.
func versionLine() string {
	bi, _ := debug.ReadBuildInfo()
	return versionFrom(version, bi)
}

// versionFrom is versionLine for a given -ldflags version and build info
// (nil: none).
func versionFrom(v string, bi *debug.BuildInfo) string {
	rev, modified := "", false
	if bi != nil {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	build := ""
	if rev != "" {
		build = "commit " + rev[:min(12, len(rev))]
		if modified {
			build += ", modified"
		}
		build += "; "
	}
	return fmt.Sprintf("cowfs %s (%s%s %s/%s)", v, build, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
