package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Each exit code docs/cli.md promises, from the command that gives it.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("s3cret\n"), 0o600)
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("nope\n"), 0o600)
	addr := startServe(t, e.lower, "--token-file", tok)
	plain := t.TempDir()

	// A snapshot with a damaged chunk, and one without.
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	writeRandom(t, filepath.Join(e.mnt, "pages"), 1<<20)
	cli(t, e.state, "snapshot", e.mnt, "damaged")
	unmountCLI(t, e.mnt)
	flipByte(t, chunkObjects(t, e.state)[0])

	if out, _ := run(t, "--help"); !strings.Contains(out, "3 not found") {
		t.Errorf("cowfs --help does not list the exit codes: %s", out)
	}
	for _, c := range []struct {
		name string
		args []string
		want int
	}{
		{"ok", []string{"snapshots"}, exitOK},
		{"unknown command", []string{"frobnicate"}, exitUsage},
		{"unknown flag", []string{"snapshots", "--bogus"}, exitUsage},
		{"missing argument", []string{"mount"}, exitUsage},
		{"too many arguments", []string{"gc", "extra"}, exitUsage},
		{"required flag", []string{"serve"}, exitUsage},
		{"flag without its partner", []string{"verify", "damaged", "--remote", addr}, exitUsage},
		{"bad duration", []string{"gc", "--grace", "soon"}, exitUsage},
		{"no such snapshot", []string{"verify", "missing"}, exitNotFound},
		{"rm of no such snapshot", []string{"snapshots", "rm", "missing"}, exitNotFound},
		{"restore of no such snapshot", []string{"restore", "missing", e.mnt}, exitNotFound},
		{"restore of no such snapshot on the master", []string{"restore", "missing", e.mnt, "--remote", addr, "--token-file", tok}, exitNotFound},
		{"snapshot of no mount", []string{"snapshot", plain, "x"}, exitNotFound},
		{"status of no mount", []string{"status", plain}, exitNotFound},
		{"unmount of no mount", []string{"unmount", plain}, exitNotFound},
		{"unreachable master", []string{"mount", e.mnt, "--remote", "127.0.0.1:1", "--io-timeout", "1s"}, exitUnreachable},
		{"damage found", []string{"verify", "damaged"}, exitCorrupt},
		{"token refused", []string{"mount", e.mnt, "--remote", addr, "--token-file", bad}, exitDenied},
		{"anything else", []string{"mount", e.mnt, "--lower", filepath.Join(plain, "nonexistent")}, exitFailure},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, code := run(t, append([]string{"--state", e.state}, c.args...)...)
			if code != c.want {
				t.Errorf("cowfs %v: exit %d, want %d: %s", c.args, code, c.want, out)
			}
			if mounted(t, e.mnt) {
				t.Fatal("something was mounted")
			}
		})
	}
}
