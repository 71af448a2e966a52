package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
)

// statusJSON is a line of cowfs status --json: a mount's status, and
// whether its mount process is gone.
type statusJSON struct {
	*cowfs.Status
	Dead bool `json:"dead"`
}

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [MNT]",
		Short: "Show running mounts: source, pinned version, cache and prefetch",
		Long: `Show the mount at MNT, or every mount of the state directory: its source
(a directory, a snapshot, or a master's export), the version a remote mount
pinned, and for a remote mount the cache hits and misses, bytes fetched,
retries, errors and the progress of --prefetch.`,
		Example: "  cowfs status /root/crawlab_workspace/spider1\n  cowfs status --json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var socks []string
			state := g.state
			if len(args) == 1 {
				mnt, err := filepath.Abs(args[0])
				if err != nil {
					return err
				}
				state = g.stateOf(mnt)
				socks = []string{statedir.ControlSocket(state, mnt)}
			} else {
				socks, _ = filepath.Glob(filepath.Join(g.state, "run", "*.sock"))
			}
			var out []*cowfs.Status
			for _, s := range socks {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				st, err := cowfs.Control{Socket: s}.Status(ctx)
				cancel()
				if err != nil {
					if len(args) == 1 {
						// A killed mount process leaves no one
						// on its socket: the mount is dead, not
						// missing.
						if d, ok := deadCowfs(args[0]); ok {
							return fmt.Errorf("%s is a dead cowfs mount: its mount process exited; run: cowfs unmount %s", args[0], d)
						}
						if errors.Is(err, cowfs.ErrNoWorkspace) {
							return fmt.Errorf("%s is %w of state %s", args[0], errNoCowfsMount, state)
						}
						return err
					}
					continue // a stale socket of a crashed mount
				}
				out = append(out, st)
			}
			var dead []string
			if len(args) == 0 {
				dead = deadMountsOf(state)
			}
			if asJSON {
				for _, st := range out {
					if err := writeJSON(cmd.OutOrStdout(), statusJSON{Status: st}); err != nil {
						return err
					}
				}
				// A dead mount has only its mountpoint to show.
				for _, d := range dead {
					if err := writeJSON(cmd.OutOrStdout(), statusJSON{Status: &cowfs.Status{Mountpoint: d}, Dead: true}); err != nil {
						return err
					}
				}
				return nil
			}
			if len(out) == 0 && len(dead) == 0 {
				fmt.Println("no mounts")
			}
			for _, st := range out {
				printStatus(st)
			}
			for _, d := range dead {
				fmt.Printf("%s\n  dead: its mount process exited; run: cowfs unmount %s\n", d, d)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonFlagHelp)
	return cmd
}

func printStatus(st *cowfs.Status) {
	fmt.Printf("%s\n  source:  %s\n", st.Mountpoint, st.Source)
	if st.Version != "" {
		fmt.Printf("  version: %s\n", st.Version)
	}
	fmt.Printf("  upper:   %s\n", st.Upper)
	r := st.Remote
	if r == nil {
		return
	}
	fmt.Printf("  cache:   %d hits, %d misses, %s fetched, %d retries, %d errors, %d corrupt refetched, %d evicted, %d dir prefetch errors\n",
		r.Hits, r.Misses, humanBytes(r.BytesFetched), r.Retries, r.Errors, r.Corrupt, r.Evicted, r.DirPrefetchErrors)
	if tr := r.Trace; tr != nil {
		fmt.Printf("  trace:   from the %s, %d objects, %d fetched, %d errors\n", tr.Source, tr.Objects, tr.Fetched, tr.Errors)
	}
	if b := r.Bucket; b != nil {
		fmt.Printf("  bucket:  %d GET, %d HEAD, %d LIST, %s in; %d pack indexes, %d of them read from this machine's disk\n",
			b.Gets, b.Heads, b.Lists, humanBytes(b.BytesIn), b.Indexes, b.IndexesKept)
	}
	if l := r.Lease; l != nil {
		switch {
		case l.Held && l.Error != "":
			fmt.Printf("  lease:   held, put %s; the last renewal failed: %s\n", l.Renewed.Local().Format(time.DateTime), l.Error)
		case l.Held:
			fmt.Printf("  lease:   held, put %s\n", l.Renewed.Local().Format(time.DateTime))
		case l.Error != "":
			fmt.Printf("  lease:   not held (a gc --keep-versions may remove this version): %s\n", l.Error)
		default:
			fmt.Printf("  lease:   not held yet\n")
		}
	}
	if p := r.Prefetch; p != nil {
		var b strings.Builder
		fmt.Fprintf(&b, "  prefetch: %s, %d files, %d/%d chunks, %s/%s", p.State, p.Files, p.ChunksDone, p.Chunks,
			humanBytes(p.BytesDone), humanBytes(p.Bytes))
		if p.Error != "" {
			fmt.Fprintf(&b, ": %s", p.Error)
		}
		fmt.Println(b.String())
	}
}

// errNoCowfsMount says that no mount of the state answers at a path.
var errNoCowfsMount = errors.New("not a cowfs mount")

// deadMounts lists the cowfs mounts on this machine whose mount process
// is gone (kill -9, a crash): the kernel answers ENOTCONN for them until
// they are unmounted, and no control socket answers.
func deadMounts() []string {
	var out []string
	for _, m := range cowfsMounts() {
		if fs.IsDead(m.dir) {
			out = append(out, m.dir)
		}
	}
	return out
}

// deadMountsOf lists the dead mounts that recorded state as theirs
// (mountstate.go): those of other state directories, and of programs
// that record none, are not this state's to report.
func deadMountsOf(state string) []string {
	abs, err := filepath.Abs(state)
	if err != nil {
		return nil
	}
	var out []string
	for _, d := range deadMounts() {
		if s, err := os.Readlink(stateRecord(d)); err == nil && s == abs {
			out = append(out, d)
		}
	}
	return out
}

// mountEntry is a cowfs mount as /proc/self/mountinfo shows it.
type mountEntry struct {
	dir string
	// source tells the lower (Spec's fsname): cowfs:DIR,
	// cowfs:remote:ADDR[/PATH], cowfs:restore:NAME[@ADDR].
	source string
}

// cowfsMounts lists the cowfs mounts this process sees, whoever made
// them.
func cowfsMounts() []mountEntry {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []mountEntry
	for _, line := range strings.Split(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPEROPTS
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 5 || sep+2 >= len(f) || f[sep+1] != "fuse.cowfs" {
			continue
		}
		out = append(out, mountEntry{dir: unescapeMountinfo(f[4]), source: unescapeMountinfo(f[sep+2])})
	}
	return out
}

// deadCowfs reports whether mnt is among the dead cowfs mounts, and
// returns it as they name it.
func deadCowfs(mnt string) (string, bool) {
	// Compared by control socket: one mountpoint, however spelled.
	key := statedir.ControlSocket("", mnt)
	for _, d := range deadMounts() {
		if statedir.ControlSocket("", d) == key {
			return d, true
		}
	}
	return "", false
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a
// path in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
