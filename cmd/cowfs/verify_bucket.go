package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/s3store"
)

// bucketVerifyJSON is the line of cowfs verify --remote s3://... --json.
type bucketVerifyJSON struct {
	URL         string        `json:"url"`
	Versions    int           `json:"versions"`
	Checkpoints int           `json:"checkpoints"`
	OK          bool          `json:"ok"`
	Trees       int           `json:"trees"`
	Files       int           `json:"files"`
	Chunks      int           `json:"chunks"`
	Bytes       int64         `json:"bytes"`
	Problems    []problemJSON `json:"problems"`
}

// verifyBucket runs cowfs verify of what the bucket url keeps: the
// checkpoint name, or the version a digest or a prefix of one names, or
// (neither given) every published version and checkpoint.
func verifyBucket(cmd *cobra.Command, f *s3Flags, url, name, version string, asJSON bool) error {
	if _, _, err := s3store.ParseURL(url); err != nil {
		return usageError{fmt.Errorf("--remote: %w", err)}
	}
	if name != "" && version != "" {
		return usagef("give a checkpoint NAME or --version, not both")
	}
	ctx := context.Background()
	st, err := f.open(ctx, url)
	if err != nil {
		return err
	}
	roots, err := bucketRoots(ctx, st, name, version)
	if err != nil {
		return err
	}
	// Held, so that a gc with --keep-versions beside the verify does not
	// remove what it reads (decision 0078); then found again, in case a
	// gc ended before the leases were put and removed some.
	var vs []object.Digest
	held := map[object.Digest]bool{}
	for _, r := range roots {
		if !held[r.Version] {
			held[r.Version] = true
			vs = append(vs, r.Version)
		}
	}
	if release, err := st.HoldVersions(ctx, vs, "verify"); err != nil {
		slog.Warn("verify holds no lease on what it reads: a gc beside it may remove objects it then reports missing", "err", err)
	} else {
		defer release()
		if roots, err = bucketRoots(ctx, st, name, version); err != nil {
			return err
		}
	}
	res := bucketVerifyJSON{URL: url, Problems: []problemJSON{}}
	for _, r := range roots {
		if strings.HasPrefix(r.Name, "checkpoint ") {
			res.Checkpoints++
		} else {
			res.Versions++
		}
	}
	var progress func(s3store.VerifyStats)
	if w := cmd.ErrOrStderr(); isTerminal(w) {
		progress = verifyProgress(w)
		defer fmt.Fprintln(w)
	}
	probs, stats, err := st.Verify(ctx, roots, progress)
	if err != nil {
		return fmt.Errorf("verify %s: %w", url, err)
	}
	res.OK = len(probs) == 0
	res.Trees, res.Files, res.Chunks, res.Bytes = stats.Trees, stats.Files, stats.Chunks, stats.Bytes
	for _, p := range probs {
		fmt.Fprintf(cmd.ErrOrStderr(), "BAD %s %s: %s %s: %v\n", p.Root, orRoot(p.Path), p.Kind, p.Object.Short(), p.Err)
		res.Problems = append(res.Problems, problemJSON{Root: p.Root, Paths: []string{p.Path}, Object: p.Object.String(), Kind: p.Kind, Error: p.Err.Error()})
	}
	if asJSON {
		if err := writeJSON(cmd.OutOrStdout(), res); err != nil {
			return err
		}
	}
	if len(probs) > 0 {
		return fmt.Errorf("%s is %w: %d problems (docs/deploy.md, \"A bucket instead of a master\", says how to repair it)", url, errDamaged, len(probs))
	}
	if !asJSON {
		fmt.Fprintf(cmd.OutOrStdout(), "%s: ok: %d versions and %d checkpoints reach %d files, %d trees and %d chunks (%s), each read and checked\n",
			url, res.Versions, res.Checkpoints, res.Files, res.Trees, res.Chunks, humanBytes(res.Bytes))
	}
	return nil
}

// orRoot names the version object's own problem, which has no path.
func orRoot(path string) string {
	if path == "" {
		return "(the version object)"
	}
	return path
}

// bucketRoots returns what verifyBucket reads: the versions newest
// first, then the checkpoints oldest first.
func bucketRoots(ctx context.Context, st *s3store.Store, name, version string) ([]s3store.VerifyRoot, error) {
	if name != "" {
		d, err := st.Checkpoint(ctx, name)
		if err != nil {
			return nil, err
		}
		return []s3store.VerifyRoot{{Name: "checkpoint " + name, Version: d}}, nil
	}
	vs, err := distinctVersions(ctx, st)
	if err != nil {
		return nil, err
	}
	if version != "" {
		v, err := findVersion(st, vs, version)
		if err != nil {
			return nil, err
		}
		return []s3store.VerifyRoot{{Name: "version " + v.Digest.Short(), Version: v.Digest}}, nil
	}
	var roots []s3store.VerifyRoot
	for _, v := range vs {
		roots = append(roots, s3store.VerifyRoot{Name: "version " + v.Digest.Short(), Version: v.Digest})
	}
	cs, err := st.ListCheckpoints(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		d, _ := object.ParseDigest(c.Version)
		roots = append(roots, s3store.VerifyRoot{Name: "checkpoint " + c.Name, Version: d})
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("%w and no checkpoint pushed under %s", s3store.ErrNoVersion, st.URL())
	}
	return roots, nil
}

// verifyProgress returns a progress report for a terminal: a line
// written over, at most once a second.
func verifyProgress(w io.Writer) func(s3store.VerifyStats) {
	var last time.Time
	return func(s s3store.VerifyStats) {
		if time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		fmt.Fprintf(w, "\rverifying: %d trees, %d files, %d chunks, %s read", s.Trees, s.Files, s.Chunks, humanBytes(s.Bytes))
	}
}
