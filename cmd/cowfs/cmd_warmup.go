package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/object"
)

func newWarmupCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "warmup MNT [PATH...]",
		Short: "Fetch a remote workspace's files ahead of use",
		Long: `Fetch every file and directory beneath each PATH of the remote mount at MNT
(all of it without a PATH) into the worker's cache, and return once they are
there: reading them later needs no master. A PATH is relative to MNT, or an
absolute path inside it; it names the master's file, whatever the workspace
changed since. Symlinks are not followed.

On a terminal a progress bar shows how far it got; otherwise each line of
output is one JSON object (state, files, bytes, bytes_done, ...), the last
with state "done" or "failed". Interrupting it stops the fetch; what was
fetched stays cached. mount --prefetch fetches the same way, in the
background.`,
		Example: `  cowfs warmup /root/crawlab_workspace/spider1 crawlab_project/spiders
  cowfs warmup /root/crawlab_workspace/spider1            # all of it`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mnt, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			paths, err := warmupPaths(mnt, args[1:])
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			show := newWarmupJSON(os.Stdout)
			if f := os.Stdout; term.IsTerminal(int(f.Fd())) {
				show = newWarmupBar(f)
			}
			state := g.stateOf(mnt)
			p, err := cowfs.ControlOf(state, mnt).Warmup(ctx, paths,
				func(p object.PrefetchProgress) { show(p, false) })
			if p != nil {
				show(*p, true)
			}
			if errors.Is(err, cowfs.ErrNoWorkspace) {
				if d, ok := deadCowfs(args[0]); ok {
					return fmt.Errorf("%s is a dead cowfs mount: its mount process exited; run: cowfs unmount %s", args[0], d)
				}
				return fmt.Errorf("%s is %w of state %s", args[0], errNoCowfsMount, state)
			}
			if err = fromMount(err); err != nil {
				return fmt.Errorf("warmup %s: %w", args[0], err)
			}
			return nil
		},
	}
}

// warmupPaths turns the PATH arguments into paths relative to mnt.
func warmupPaths(mnt string, args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		p := a
		if filepath.IsAbs(a) {
			rel, err := filepath.Rel(mnt, filepath.Clean(a))
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				return nil, fmt.Errorf("PATH %s is not inside %s", a, mnt)
			}
			p = rel
		}
		p = filepath.ToSlash(filepath.Clean(p))
		if p == ".." || strings.HasPrefix(p, "../") {
			return nil, fmt.Errorf("PATH %s is not inside %s", a, mnt)
		}
		if p == "." {
			p = ""
		}
		out = append(out, p)
	}
	return out, nil
}

// newWarmupJSON shows progress as one JSON line per update.
func newWarmupJSON(w io.Writer) func(p object.PrefetchProgress, last bool) {
	enc := json.NewEncoder(w)
	return func(p object.PrefetchProgress, last bool) { enc.Encode(p) }
}

// newWarmupBar shows progress as a bar of bytes on the terminal w: a
// spinner while the files are being listed, then the bytes fetched.
func newWarmupBar(w io.Writer) func(p object.PrefetchProgress, last bool) {
	bar := progressbar.NewOptions64(-1, progressbar.OptionSetWriter(w), progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription("listing"), progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(0), progressbar.OptionSetPredictTime(true))
	known := false
	return func(p object.PrefetchProgress, last bool) {
		if p.State != "listing" && !known {
			known = true
			bar.ChangeMax64(max(p.Bytes, 1))
		}
		bar.Describe(fmt.Sprintf("%s: %d files", p.State, p.Files))
		bar.Set64(p.BytesDone)
		if last {
			bar.Finish()
			fmt.Fprintf(w, "\n%s: %d files, %s\n", p.State, p.Files, humanize.IBytes(uint64(p.Bytes)))
		}
	}
}
