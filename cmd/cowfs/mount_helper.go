package main

import (
	"fmt"
	"os"
	"strings"
)

// mountHelper implements mount(8)'s helper protocol, so that
//
//	mount -t fuse.cowfs cowfs /mnt/ws -o lowerdir=/l,upperdir=/u,workdir=/w
//
// and the same line in /etc/fstab work, as they do for fuse-overlayfs. mount
// runs "mount.fuse.cowfs SOURCE DIR -o OPTIONS"; options mount(8) itself
// handles (rw, defaults, noauto, x-*, ...) are ignored.
func mountHelper(args []string) int {
	if err := runMountHelper(args); err != nil {
		fmt.Fprintln(os.Stderr, "mount.fuse.cowfs:", err)
		return 1
	}
	return 0
}

func runMountHelper(args []string) error {
	var dir string
	var opts []string
	var positional []string
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
		return fmt.Errorf("usage: mount.fuse.cowfs SOURCE DIR -o lowerdir=DIR[,upperdir=DIR,workdir=DIR][,state=DIR]")
	}
	dir = positional[1]
	f := &mountFlags{}
	g := &globals{state: defaultState()}
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "lowerdir":
			f.lower = v
		case "upperdir":
			f.upper = v
		case "workdir":
			f.work = v
		case "state":
			g.state = v
		case "debug":
			f.debug = true
		case "", "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime":
		default:
			if !strings.HasPrefix(k, "x-") && !strings.HasPrefix(k, "comment=") {
				return fmt.Errorf("unknown option %q", o)
			}
		}
	}
	if f.lower == "" {
		return fmt.Errorf("option lowerdir= is required")
	}
	if err := checkState(g.state, os.Stderr); err != nil {
		return err
	}
	return runMount(g, f, dir)
}
