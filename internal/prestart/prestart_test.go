package prestart

import (
	"go/build"
	"slices"
	"testing"
)

// Background says yes to a command line cowfs hands to a mount process,
// and no to everything else, however little it parses.
func TestBackground(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"cowfs", "mount", "/mnt/ws", "--remote", "master:7070"}, true},
		{[]string{"/usr/local/bin/cowfs", "--state", "/var/lib/cowfs", "mount", "/mnt/ws", "--lower", "/srv"}, true},
		{[]string{"cowfs", "--state=/s", "restore", "snap1", "/mnt/ws"}, true},
		{[]string{"cowfs", "mount", "/mnt/ws", "--foreground=false"}, true},
		{[]string{"cowfs", "mount", "/mnt/ws", "--foreground=0"}, true},
		{[]string{"cowfs", "mount", "/mnt/ws", "--foreground=F"}, true},
		{[]string{"cowfs", "mount", "/mnt/ws", "--foreground=1"}, false},
		{[]string{"cowfs", "mount", "/mnt/ws", "--foreground="}, false},
		{[]string{"cowfs", "mount", "/mnt/ws", "--foreground"}, false},
		{[]string{"cowfs", "mount", "/mnt/ws", "--foreground=true"}, false},
		{[]string{"cowfs", "mount", "/mnt/ws", "--foreground=maybe"}, false},
		{[]string{"cowfs", "mount", "--help"}, false},
		{[]string{"cowfs", "mount", "-h"}, false},
		{[]string{"cowfs", "mount", "--", "/mnt/ws"}, false},
		{[]string{"cowfs", "--debug", "mount", "/mnt/ws"}, false},
		{[]string{"cowfs", "--state"}, false},
		{[]string{"cowfs", "serve", "--root", "/srv"}, false},
		{[]string{"cowfs", "status", "mount"}, false},
		{[]string{"cowfs"}, false},
		{[]string{"/sbin/mount.fuse.cowfs", "/srv", "/mnt/ws", "-o", "upperdir=/u"}, false},
		{[]string{"mount.fuse.cowfs", "/srv", "/mnt/ws"}, false},
		{[]string{"/opt/mount/cowfs", "mount", "/mnt/ws"}, true},
	} {
		if got := Background(c.args); got != c.want {
			t.Errorf("Background(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}

// The package imports os and syscall only: each import whose path sorts
// after the modules cowfs links would put its initialization, and the
// mount process's start, after most of the command's (see the package
// comment).
func TestImportsOnlyOSAndSyscall(t *testing.T) {
	p, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range p.Imports {
		if !slices.Contains([]string{"os", "syscall"}, imp) {
			t.Errorf("prestart imports %s", imp)
		}
	}
}
