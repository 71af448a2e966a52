package prestart

import "testing"

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
	} {
		if got := Background(c.args); got != c.want {
			t.Errorf("Background(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}
