package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cowfs/cowfs/cow/statedir"
)

// A running mount records which state directory it belongs to in the
// runtime directory, under its mountpoint's key: a symlink to the state
// directory. A command given a mountpoint (snapshot, status, unmount)
// finds the mount's state from there when --state and COWFS_STATE are not
// given. Kept out of the mountpoint (a task would see it) and out of the
// state directory (which is what is being looked for); a record a crash
// left behind names a state where no mount answers, which is what the
// command then reports.

// runtimeDir is where mounts record their state: /run/cowfs for root,
// else $XDG_RUNTIME_DIR/cowfs, else a directory of the user's in /tmp.
func runtimeDir() string {
	if os.Geteuid() == 0 {
		return "/run/cowfs"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "cowfs")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("cowfs-%d", os.Geteuid()))
}

// stateRecord is the record of the mount at mnt.
func stateRecord(mnt string) string {
	return filepath.Join(runtimeDir(), "mounts", statedir.Key(mnt))
}

// recordState records that the mount at mnt belongs to state, and
// returns what removes the record, which the mount calls once unmounted.
func recordState(mnt, state string) (remove func(), err error) {
	abs, err := filepath.Abs(state)
	if err != nil {
		return nil, err
	}
	p := stateRecord(mnt)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("record the mount's state: %w", err)
	}
	tmp := p + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(abs, tmp); err != nil {
		return nil, fmt.Errorf("record the mount's state: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("record the mount's state: %w", err)
	}
	return func() {
		// Only if it is still ours: a mount at mnt made since with
		// another state has replaced it.
		if got, err := os.Readlink(p); err == nil && got == abs {
			os.Remove(p)
		}
	}, nil
}

// stateOf returns the state directory of the mount at mnt: --state or
// COWFS_STATE when given, else the state the mount recorded, else the
// default.
func (g *globals) stateOf(mnt string) string {
	if g.stateGiven {
		return g.state
	}
	s, err := os.Readlink(stateRecord(mnt))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "cowfs: the state of the mount at %s: %v; using %s\n", mnt, err, g.state)
		}
		return g.state
	}
	return s
}
