package main

import (
	"bufio"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jsonLines parses out as one JSON object per line into a slice of T,
// failing on anything else (a line of text, an object spread over lines).
func jsonLines[T any](t *testing.T, out string) []T {
	t.Helper()
	var all []T
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var v T
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("not one JSON object a line: %v: %q in %s", err, sc.Text(), out)
		}
		all = append(all, v)
	}
	return all
}

// --json prints one object per result, on stdout, with the field names
// docs/cli.md lists; unknown fields fail the parse, so a field added
// means a test (and the doc) changed too.
func TestJSONOutput(t *testing.T) {
	e := newEnv(t)
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	writeRandom(t, filepath.Join(e.mnt, "pages"), 1<<20)

	type snapshotResult struct {
		Name         string `json:"name"`
		Root         string `json:"root"`
		Hold         int64  `json:"hold"`
		Files        int    `json:"files"`
		Dirs         int    `json:"dirs"`
		BytesRead    int64  `json:"bytes_read"`
		ChunksReused int    `json:"chunks_reused"`
		DirsReused   int    `json:"dirs_reused"`
		Flushed      int    `json:"flushed"`
	}
	snaps := jsonLines[snapshotResult](t, cli(t, e.state, "snapshot", e.mnt, "one", "--json"))
	if len(snaps) != 1 || snaps[0].Name != "one" || !strings.HasPrefix(snaps[0].Root, "sha256-") || snaps[0].Files < 3 {
		t.Errorf("snapshot --json: %+v", snaps)
	}
	cli(t, e.state, "snapshot", e.mnt, "two")

	type status struct {
		Mountpoint string          `json:"mountpoint"`
		Source     string          `json:"source"`
		Version    string          `json:"version"`
		Upper      string          `json:"upper"`
		Pid        int             `json:"pid"`
		Remote     json.RawMessage `json:"remote"`
		Dead       bool            `json:"dead"`
	}
	for _, args := range [][]string{{"status", "--json"}, {"status", e.mnt, "--json"}} {
		st := jsonLines[status](t, cli(t, e.state, args...))
		if len(st) != 1 || st[0].Mountpoint != e.mnt || st[0].Source != e.lower || st[0].Pid == 0 {
			t.Errorf("%v: %+v", args, st)
		}
	}
	unmountCLI(t, e.mnt)

	type snapshot struct {
		Name    string `json:"name"`
		Created string `json:"created"`
		Parent  string `json:"parent"`
		Source  string `json:"source"`
		Size    int64  `json:"size"`
		Unique  int64  `json:"unique"`
		Root    string `json:"root"`
	}
	list := jsonLines[snapshot](t, cli(t, e.state, "snapshots", "--json"))
	if len(list) != 2 || list[0].Name != "one" || list[1].Name != "two" || list[0].Size < 1<<20 || list[0].Source != e.mnt ||
		list[0].Root != snaps[0].Root || list[0].Created == "" {
		t.Errorf("snapshots --json: %+v", list)
	}

	type problem struct {
		Paths        []string `json:"paths"`
		Object       string   `json:"object"`
		Kind         string   `json:"kind"`
		Error        string   `json:"error"`
		RepairedFrom string   `json:"repaired_from"`
	}
	type verify struct {
		Name     string    `json:"name"`
		Root     string    `json:"root"`
		OK       bool      `json:"ok"`
		Problems []problem `json:"problems"`
	}
	v := jsonLines[verify](t, cli(t, e.state, "verify", "one", "--json"))
	if len(v) != 1 || !v[0].OK || v[0].Name != "one" || v[0].Root != snaps[0].Root || v[0].Problems == nil || len(v[0].Problems) != 0 {
		t.Errorf("verify --json: %+v", v)
	}
	flipByte(t, chunkObjects(t, e.state)[0])
	out, code := run(t, "--state", e.state, "verify", "one", "--json")
	if code != exitCorrupt {
		t.Errorf("verify --json of a damaged snapshot: exit %d: %s", code, out)
	}
	// stderr (the error, the store's log) is mixed into out: the JSON
	// line is the one that starts with {.
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "{") {
			line += l + "\n"
		}
	}
	v = jsonLines[verify](t, line)
	if len(v) != 1 || v[0].OK || len(v[0].Problems) != 1 || v[0].Problems[0].Paths[0] != "pages" || v[0].Problems[0].Error == "" {
		t.Errorf("verify --json of a damaged snapshot: %+v", v)
	}
	out, _ = run(t, "--state", e.state, "verify", "one", "--repair", "--json")
	line = ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "{") {
			line += l + "\n"
		}
	}
	v = jsonLines[verify](t, line)
	if len(v) != 1 || v[0].OK || len(v[0].Problems) != 1 || v[0].Problems[0].Kind != "chunk" || !strings.HasPrefix(v[0].Problems[0].Object, "sha256-") {
		t.Errorf("verify --repair --json: %+v\n%s", v, out)
	}

	type gc struct {
		Live         int   `json:"live"`
		Removed      int   `json:"removed"`
		RemovedBytes int64 `json:"removed_bytes"`
		Young        int   `json:"young"`
		DryRun       bool  `json:"dry_run"`
		GraceSeconds int64 `json:"grace_seconds"`
	}
	cli(t, e.state, "snapshots", "rm", "two")
	g := jsonLines[gc](t, cli(t, e.state, "gc", "--json", "--grace", "0s", "--dry-run"))
	if len(g) != 1 || g[0].Live == 0 || !g[0].DryRun || g[0].GraceSeconds != 0 {
		t.Errorf("gc --json: %+v", g)
	}
}

// publishedLine is a line of cowfs versions --json, and of versions
// rollback --json.
type publishedLine struct {
	Version   string    `json:"version"`
	Published time.Time `json:"published"`
	Files     int64     `json:"files"`
	Bytes     int64     `json:"bytes"`
	Source    string    `json:"source"`
	Leases    int       `json:"leases"`
	Again     time.Time `json:"again"`
}
