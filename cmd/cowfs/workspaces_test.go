package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/statedir"
)

// ageWorkspace makes the workspace of mnt look last used two days ago.
func ageWorkspace(t *testing.T, state, mnt string) string {
	t.Helper()
	upper, _ := statedir.MountDirs(state, mnt)
	dir := filepath.Dir(upper)
	old := time.Now().Add(-48 * time.Hour)
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// mountAt mounts a workspace over lower at mnt, in the background.
func mountAt(t *testing.T, state, mnt, lower string) {
	t.Helper()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, mnt)
	if out, code := run(t, "--state", state, "mount", mnt, "--lower", lower); code != 0 {
		t.Fatalf("mount %s: exit %d: %s", mnt, code, out)
	}
}

func unmountAt(t *testing.T, mnt string) {
	t.Helper()
	if out, code := run(t, "unmount", mnt); code != 0 {
		t.Fatalf("unmount %s: exit %d: %s", mnt, code, out)
	}
}

func listWorkspaces(t *testing.T, state string) map[string]cowfs.WorkspaceInfo {
	t.Helper()
	out, code := run(t, "--state", state, "workspaces", "--json")
	if code != 0 {
		t.Fatalf("workspaces: exit %d: %s", code, out)
	}
	got := map[string]cowfs.WorkspaceInfo{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var w cowfs.WorkspaceInfo
		if err := json.Unmarshal([]byte(line), &w); err != nil {
			t.Fatalf("workspaces --json line %q: %v", line, err)
		}
		got[w.Dir] = w
	}
	return got
}

// TestWorkspacesPrune lists and prunes real workspaces: an old unmounted
// one goes; a mounted one and a fresh one stay, whatever their age.
func TestWorkspacesPrune(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := t.TempDir()
	old, live, fresh := e.mnt, filepath.Join(base, "live"), filepath.Join(base, "fresh")
	for _, m := range []string{old, live, fresh} {
		mountAt(t, e.state, m, e.lower)
		if err := os.WriteFile(filepath.Join(m, "items.jl"), []byte(strings.Repeat("x", 1<<16)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []string{old, fresh} {
		unmountAt(t, m)
	}
	oldDir, liveDir := ageWorkspace(t, e.state, old), ageWorkspace(t, e.state, live)
	freshDir := filepath.Dir(fsUpper(e.state, fresh))

	ws := listWorkspaces(t, e.state)
	if len(ws) != 3 {
		t.Fatalf("workspaces: %d, want 3: %+v", len(ws), ws)
	}
	for dir, w := range ws {
		if w.Bytes < 1<<16 {
			t.Errorf("%s: %d bytes, want at least the 64 KiB written", dir, w.Bytes)
		}
	}
	if w := ws[oldDir]; w.Mounted || w.Mountpoint != old || time.Since(w.LastUse) < 24*time.Hour {
		t.Errorf("old workspace: %+v", w)
	}
	if w := ws[liveDir]; !w.Mounted || w.Pid == 0 || w.Mountpoint != live {
		t.Errorf("mounted workspace: %+v", w)
	}
	if w := ws[freshDir]; w.Mounted || time.Since(w.LastUse) > time.Hour {
		t.Errorf("fresh workspace: %+v", w)
	}

	out, code := run(t, "--state", e.state, "workspaces", "prune", "--older-than", "24h", "--dry-run")
	if code != 0 || !strings.Contains(out, "would remove "+oldDir) || strings.Count(out, "would remove /") != 1 {
		t.Fatalf("prune --dry-run: exit %d: %s", code, out)
	}
	if _, err := os.Stat(oldDir); err != nil {
		t.Fatalf("dry run removed %s: %v", oldDir, err)
	}
	out, code = run(t, "--state", e.state, "workspaces", "prune", "--older-than", "24h")
	if code != 0 || !strings.Contains(out, "removed "+oldDir) || !strings.Contains(out, "removed 1 workspaces, ") {
		t.Fatalf("prune: exit %d: %s", code, out)
	}
	if _, err := os.Stat(oldDir); !os.IsNotExist(err) {
		t.Errorf("old workspace still there: %v", err)
	}
	for _, d := range []string{liveDir, freshDir} {
		if _, err := os.Stat(filepath.Join(d, "upper", "items.jl")); err != nil {
			t.Errorf("prune removed what it must keep: %v", err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(live, "items.jl")); err != nil || len(got) != 1<<16 {
		t.Errorf("the mounted workspace after prune: %d bytes, %v", len(got), err)
	}

	if out, code := run(t, "--state", e.state, "workspaces", "prune"); code != 2 || !strings.Contains(out, "older-than") {
		t.Errorf("prune without --older-than: exit %d: %s", code, out)
	}
}

func fsUpper(state, mnt string) string {
	u, _ := statedir.MountDirs(state, mnt)
	return u
}

// TestWorkspacesPruneRacesMount starts a mount of an old workspace while
// prune runs: either the mount wins and its upper stays whole under it,
// or prune wins and the mount fails or starts a fresh upper; never a
// mount over a removed upper.
func TestWorkspacesPruneRacesMount(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts many times")
	}
	t.Parallel()
	e := newEnv(t)
	mountAt(t, e.state, e.mnt, e.lower)
	unmountAt(t, e.mnt)
	for i := 0; i < 6; i++ {
		dir := ageWorkspace(t, e.state, e.mnt)
		var wg sync.WaitGroup
		var mountOut, pruneOut string
		var mountCode, pruneCode int
		wg.Add(2)
		go func() {
			defer wg.Done()
			mountOut, mountCode = run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower)
		}()
		go func() {
			defer wg.Done()
			// Each round lets the mount get further before prune
			// looks: before its log, at its locks, serving.
			time.Sleep(time.Duration(i) * 40 * time.Millisecond)
			pruneOut, pruneCode = run(t, "--state", e.state, "workspaces", "prune", "--older-than", "24h")
		}()
		wg.Wait()
		if pruneCode != 0 {
			t.Fatalf("round %d: prune: exit %d: %s", i, pruneCode, pruneOut)
		}
		if mountCode != 0 {
			if mounted(t, e.mnt) {
				t.Fatalf("round %d: mount failed but left a mount: %s", i, mountOut)
			}
			t.Logf("round %d: mount lost to prune: %s", i, mountOut)
			mountAt(t, e.state, e.mnt, e.lower)
		}
		name := "round" + string(rune('0'+i))
		if err := os.WriteFile(filepath.Join(e.mnt, name), []byte("w"), 0o644); err != nil {
			t.Fatalf("round %d: write through the mount: %v", i, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "upper", name)); err != nil {
			t.Fatalf("round %d: the mount's write is not in its upper (prune said %q): %v", i, pruneOut, err)
		}
		t.Logf("round %d: prune said %q", i, pruneOut)
		unmountAt(t, e.mnt)
	}
}
