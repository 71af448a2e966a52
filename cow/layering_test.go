package cow

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// The layering of the module, checked: which packages may never reach
// which, directly or through others. The rules are kept here, beside the
// engine at the bottom of the stack, because most of them keep things
// out of it; they cover the whole module.
//
// A path ending in "/..." stands for that path and every package beneath
// it; any other path for that package alone.
//
// cow/internal (helpers shared by the engine, the lowers and the scanner)
// needs no rule of its own for who imports it: the go tool refuses an
// import of it from outside cow/, and then go list fails this test with
// the importer named.
var layerRules = []struct {
	pkgs  string
	never []string
	why   string
}{
	{
		pkgs:  "github.com/cowfs/cowfs/cow/...",
		never: []string{"github.com/hanwen/go-fuse/...", "google.golang.org/grpc/..."},
		why:   "the engine, the lowers, the scanner, the object store and the refs work without a kernel mount or a network",
	},
	{
		pkgs:  "github.com/cowfs/cowfs/cow/lower/...",
		never: []string{"github.com/cowfs/cowfs/cow", "github.com/cowfs/cowfs/cow/scan/...", "github.com/dgraph-io/badger/..."},
		why:   "a lower is read by the engine, the scanner and the master; it knows nothing of the upper or its metadata",
	},
	{
		pkgs:  "github.com/cowfs/cowfs/cow/scan/...",
		never: []string{"github.com/cowfs/cowfs/cow", "github.com/dgraph-io/badger/..."},
		why:   "the master scans its export without the copy-up engine or its metadata database; the engine's scan cache comes in as a scan.Cache",
	},
	{
		pkgs: "github.com/cowfs/cowfs/cow/internal/...",
		never: []string{"github.com/cowfs/cowfs/cow", "github.com/cowfs/cowfs/cow/lower/...", "github.com/cowfs/cowfs/cow/scan/...",
			"github.com/dgraph-io/badger/..."},
		why: "the helpers shared by the engine, the lowers and the scanner sit below all three",
	},
	{
		pkgs:  "github.com/cowfs/cowfs/cow/object/...",
		never: []string{"github.com/cowfs/cowfs/cow", "github.com/cowfs/cowfs/cow/lower/...", "github.com/cowfs/cowfs/cow/scan/...", "github.com/dgraph-io/badger/..."},
		why:   "the object format and store are read by the master, which needs neither the copy-up engine nor its metadata database",
	},
	{
		pkgs:  "github.com/cowfs/cowfs/cow/refs/...",
		never: []string{"github.com/cowfs/cowfs/cow", "github.com/dgraph-io/badger/..."},
		why:   "snapshot names are read by the master, which needs neither the copy-up engine nor its metadata database",
	},
	{
		pkgs: "github.com/cowfs/cowfs/cow/names/...",
		never: []string{"github.com/cowfs/cowfs/cow", "github.com/cowfs/cowfs/cow/lower/...", "github.com/cowfs/cowfs/cow/scan/...",
			"github.com/cowfs/cowfs/cow/object/...", "github.com/dgraph-io/badger/..."},
		why: "name checks are a leaf every layer may use",
	},
	{
		pkgs:  "github.com/cowfs/cowfs/fs/...",
		never: []string{"google.golang.org/grpc/..."},
		why:   "fs adapts the kernel; a remote lower comes in as a lower.Layer",
	},
	{
		pkgs:  "github.com/cowfs/cowfs/remote/...",
		never: []string{"github.com/hanwen/go-fuse/...", "github.com/cowfs/cowfs/fs/..."},
		why:   "the master serves objects and never mounts",
	},
	{
		pkgs:  "github.com/cowfs/cowfs/cow/...",
		never: []string{"github.com/prometheus/...", "github.com/cowfs/cowfs/metrics/..."},
		why:   "the engine keeps plain counters; package metrics reads them at scrape time",
	},
	{
		pkgs:  "github.com/cowfs/cowfs/fs/...",
		never: []string{"github.com/prometheus/...", "github.com/cowfs/cowfs/metrics/..."},
		why:   "the kernel adapter offers a hook (fs.Options.Instrument) and counters; package metrics does the rest",
	},
	{
		pkgs:  "github.com/cowfs/cowfs/remote/...",
		never: []string{"github.com/prometheus/...", "github.com/cowfs/cowfs/metrics/..."},
		why:   "the wire offers hooks and counters; package metrics does the rest",
	},
	{
		pkgs:  "github.com/cowfs/cowfs/metrics/...",
		never: []string{"github.com/cowfs/cowfs/cow/...", "github.com/cowfs/cowfs/fs/...", "github.com/cowfs/cowfs/remote/..."},
		why:   "metrics is handed what it reads, so that every layer may be measured without importing another",
	},
	{
		pkgs:  "github.com/cowfs/cowfs/remote/...",
		never: []string{"github.com/cowfs/cowfs/cow", "github.com/dgraph-io/badger/..."},
		why:   "the master and the worker's cache read lowers and scan through cow/lower and cow/scan, without the copy-up engine or its metadata database",
	},
}

// layerTestExceptions are rules a package's tests (not the package) break
// today, each with what must change; a listed exception that no longer
// applies fails the test, so the list only shrinks.
var layerTestExceptions = map[[2]string]string{}

// TestLayering checks layerRules against the import graph go list reports,
// for every package of the module and, with layerTestExceptions, for its
// test binary.
func TestLayering(t *testing.T) {
	t.Parallel()
	imports := listImports(t)
	used := map[[2]string]bool{}
	for pkg := range imports {
		under, isTest := strings.CutSuffix(pkg, ".test")
		if strings.Contains(pkg, " ") || !strings.HasPrefix(pkg, "github.com/cowfs/cowfs/") {
			continue // a test variant, reached from its test binary
		}
		for _, r := range layerRules {
			if !matchPath(r.pkgs, under) {
				continue
			}
			for _, never := range r.never {
				chain := importChain(imports, pkg, never)
				if chain == nil {
					continue
				}
				key := [2]string{under, never}
				if _, ok := layerTestExceptions[key]; ok && isTest {
					used[key] = true
					continue
				}
				t.Errorf("%s reaches %s (%s): %s", pkg, never, r.why, strings.Join(chain, " -> "))
			}
		}
	}
	for key, what := range layerTestExceptions {
		if !used[key] {
			t.Errorf("the tests of %s no longer reach %s (%s): remove the exception", key[0], key[1], what)
		}
	}
	checkMeetingPoint(t, imports)
}

// meetingPoints are the packages that may import fs and remote together:
// the workspace package (the module's root), which wires a remote lower
// into a mount, and the commands built on it. Anywhere else, a package
// that needs both is doing the workspace package's job.
var meetingPoints = []string{"github.com/cowfs/cowfs", "github.com/cowfs/cowfs/cmd/..."}

// checkMeetingPoint fails for a package of the module, not a test, that
// imports both fs and remote and is not a meeting point.
func checkMeetingPoint(t *testing.T, imports map[string][]string) {
	for pkg, imps := range imports {
		if strings.Contains(pkg, " ") || strings.HasSuffix(pkg, ".test") || !matchPath("github.com/cowfs/cowfs/...", pkg) {
			continue
		}
		if slices.ContainsFunc(meetingPoints, func(p string) bool { return matchPath(p, pkg) }) {
			continue
		}
		fsImp := slices.ContainsFunc(imps, func(p string) bool { return matchPath("github.com/cowfs/cowfs/fs/...", p) })
		remoteImp := slices.ContainsFunc(imps, func(p string) bool { return matchPath("github.com/cowfs/cowfs/remote/...", p) })
		if fsImp && remoteImp {
			t.Errorf("%s imports both fs and remote: only %v may (the workspace package wires a remote lower into a mount)", pkg, meetingPoints)
		}
	}
}

// listImports runs go list over the module, tests included, and returns
// each package's direct imports. Test variants are named as go list names
// them ("p [q.test]"), so a test binary's graph is its own.
func listImports(t *testing.T) map[string][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-test",
		"-f", "{{.ImportPath}}\t{{join .Imports \"\\t\"}}", "github.com/cowfs/cowfs/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	imports := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		imports[f[0]] = f[1:]
	}
	if len(imports) == 0 || imports["github.com/cowfs/cowfs/cow"] == nil {
		t.Fatalf("go list listed no import of this package:\n%s", out)
	}
	return imports
}

// importChain returns a shortest chain of imports from pkg to a package
// matching pattern, or nil if there is none.
func importChain(imports map[string][]string, pkg, pattern string) []string {
	prev := map[string]string{pkg: ""}
	queue := []string{pkg}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p != pkg && matchPath(pattern, plainPath(p)) {
			var chain []string
			for ; p != ""; p = prev[p] {
				chain = append([]string{plainPath(p)}, chain...)
			}
			return chain
		}
		for _, q := range imports[p] {
			if _, seen := prev[q]; !seen {
				prev[q] = p
				queue = append(queue, q)
			}
		}
	}
	return nil
}

// plainPath drops the test variant from a path go list printed.
func plainPath(p string) string {
	p, _, _ = strings.Cut(p, " ")
	return p
}

// matchPath reports whether path is pattern, or lies beneath a pattern
// that ends in "/...".
func matchPath(pattern, path string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}
