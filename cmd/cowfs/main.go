// Command cowfs mounts copy-on-write workspaces. Each command lives in its
// own file and only wires flags to the fs and cow packages.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// started is when this process's own code began: every package it
// imports was initialized by then. A mount logs how long it took from
// here.
var started = time.Now()

func main() {
	// mount(8) runs /sbin/mount.fuse.cowfs SOURCE DIR -o OPTIONS.
	if strings.HasPrefix(filepath.Base(os.Args[0]), "mount.fuse.cowfs") {
		os.Exit(mountHelper(os.Args[1:]))
	}
	if err := execute(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "cowfs:", err)
		os.Exit(exitCode(err))
	}
}
