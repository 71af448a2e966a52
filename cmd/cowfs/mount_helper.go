package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// mountHelper implements mount(8)'s helper protocol, so that
//
//	mount -t fuse.cowfs cowfs /mnt/ws -o lowerdir=/l,upperdir=/u,workdir=/w
//	mount -t fuse.cowfs cowfs /mnt/ws -o remote=master:7420,path=spider1,token_file=/etc/cowfs/token,_netdev
//
// and the same lines in /etc/fstab work, as they do for fuse-overlayfs.
// mount runs "mount.fuse.cowfs SOURCE DIR -o OPTIONS"; SOURCE is not used.
// Every flag of cowfs mount is an option, spelled with _ for - (cache_size=,
// token_file=), and state= is --state; overlayfs's lowerdir=, upperdir=,
// workdir= and ro are --lower, --upper, --work and --read-only. Options
// mount(8) and systemd handle themselves (defaults, _netdev, nofail,
// x-systemd.*, ...) are ignored.
func mountHelper(args []string) int {
	if err := runMountHelper(args); err != nil {
		fmt.Fprintln(os.Stderr, "mount.fuse.cowfs:", err)
		return 1
	}
	return 0
}

// mountOptionAliases are the -o spellings that are not a flag's name with
// _ for -: overlayfs's and mount(8)'s.
var mountOptionAliases = map[string]string{
	"lowerdir": "lower",
	"upperdir": "upper",
	"workdir":  "work",
	"ro":       "read-only",
}

// mountFlagsWithoutOption are the flags of cowfs mount that have no -o
// spelling, and why.
var mountFlagsWithoutOption = map[string]string{
	"foreground":     "mount(8) waits for the helper, so the mount process runs in the background (in the foreground as PID 1)",
	"no-passthrough": "hidden; the default",
	"help":           "not an option",
}

// mountOptionOf is the -o spelling of the cowfs mount flag name.
func mountOptionOf(flag string) string {
	for opt, f := range mountOptionAliases {
		if f == flag {
			return opt
		}
	}
	return strings.ReplaceAll(flag, "-", "_")
}

// ignoredMountOption reports whether mount(8), systemd or the kernel's
// generic mount code handle the option, so the helper leaves it alone.
func ignoredMountOption(o string) bool {
	k, _, _ := strings.Cut(o, "=")
	switch k {
	case "", "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev", "nofail",
		"dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime", "comment":
		return true
	}
	return strings.HasPrefix(k, "x-")
}

// helperArgs turns mount options into the command line of cmd, a cowfs
// mount command; state= goes to g. Every unknown option is named in the
// error.
func helperArgs(cmd *cobra.Command, g *globals, opts []string) ([]string, error) {
	var args, unknown []string
	for _, o := range opts {
		if ignoredMountOption(o) {
			continue
		}
		k, v, hasValue := strings.Cut(o, "=")
		if k == "state" {
			g.state, g.stateGiven = v, true
			continue
		}
		name, ok := mountOptionAliases[k]
		if !ok {
			name = strings.ReplaceAll(k, "_", "-")
		}
		var fl *pflag.Flag
		if _, excluded := mountFlagsWithoutOption[name]; !excluded {
			fl = cmd.Flags().Lookup(name)
		}
		switch {
		case fl == nil:
			unknown = append(unknown, o)
		case hasValue:
			args = append(args, "--"+name+"="+v)
		default:
			args = append(args, "--"+name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, usagef("unknown option %s (the options are cowfs mount's flags with _ for -, state=, lowerdir=, upperdir=, workdir=, ro)", strings.Join(unknown, ", "))
	}
	return args, nil
}

func runMountHelper(args []string) error {
	var opts, positional []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-o" && i+1 < len(args):
			opts = append(opts, strings.Split(args[i+1], ",")...)
			i++
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, strings.Split(a[2:], ",")...)
		case strings.HasPrefix(a, "-"):
			// -n (no mtab), -v, -s, -f: nothing to do.
		default:
			positional = append(positional, a)
		}
	}
	if len(positional) != 2 {
		return usagef("usage: mount.fuse.cowfs SOURCE DIR -o lowerdir=DIR[,upperdir=DIR,workdir=DIR] | -o remote=ADDR[,path=P,token_file=F] [,state=DIR,...]")
	}
	g := &globals{state: defaultState(), stateGiven: os.Getenv("COWFS_STATE") != ""}
	cmd := newMountCmd(g)
	flags, err := helperArgs(cmd, g, opts)
	if err != nil {
		return err
	}
	if err := cmd.ParseFlags(flags); err != nil {
		return usagef("%w", err)
	}
	if !cmd.Flags().Changed("lower") && !cmd.Flags().Changed("remote") {
		return usagef("option lowerdir= or remote= is required")
	}
	if err := checkState(g.state, os.Stderr); err != nil {
		return err
	}
	return cmd.RunE(cmd, positional[1:])
}
