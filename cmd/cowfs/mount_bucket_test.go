package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// sharedS3 returns the test binary's SeaweedFS, with the AWS environment
// the cowfs processes of the tests use to reach it set for the whole
// process: the same for every bucket test, and t.Setenv is not allowed in
// a parallel test.
func sharedS3(t *testing.T) *s3test.Server {
	t.Helper()
	srv := s3test.Shared(t)
	s3test.SetCredentialEnv()
	os.Setenv("AWS_ENDPOINT_URL_S3", srv.Endpoint)
	return srv
}

// cowfs publish, then cowfs mount --remote s3://... on another state
// directory reads the published files with no master, and unmounts; a
// missing bucket, a bad URL and a token for a bucket are refused with
// their message and nothing mounted.
func TestMountBucketCLI(t *testing.T) {
	t.Parallel()
	srv := sharedS3(t)
	bucket := srv.Bucket(t)
	e := newEnv(t)
	url := "s3://" + bucket + "/spiders"
	if _, stderr, code := publishJSON(t, "--state", e.state, "publish", e.lower, url); code != 0 {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}

	state := t.TempDir()
	out, code := run(t, "--state", state, "mount", e.mnt, "--remote", url, "--s3-endpoint", srv.Endpoint, "--io-timeout", "10s")
	if code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	for _, p := range []string{"run.sh", "crawlab_project/spiders/quotes.py"} {
		got, err := os.ReadFile(filepath.Join(e.mnt, p))
		want, _ := os.ReadFile(filepath.Join(e.lower, p))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s through the mount: %q, %v; want %q", p, got, err, want)
		}
	}
	if out, code := run(t, "--state", state, "status", e.mnt); code != 0 || !strings.Contains(out, url) ||
		!strings.Contains(out, "0 dir prefetch errors") || !strings.Contains(out, "bucket:") {
		t.Errorf("status: exit %d: %s; want the bucket named, the directory prefetch's errors and the bucket's requests", code, out)
	}
	// The requests the mount made (a list to open, one for the newest
	// version, GETs of what it read) and the bytes, by the store's count.
	out, code = run(t, "--state", state, "status", e.mnt, "--json")
	var st struct {
		Remote struct {
			DirPrefetchErrors *int64 `json:"dir_prefetch_errors"`
			BytesFetched      int64  `json:"bytes_fetched"`
			Bucket            *struct {
				Gets, Lists int64
				BytesIn     int64 `json:"bytes_in"`
				Indexes     int64 `json:"indexes"`
			} `json:"bucket"`
		} `json:"remote"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v: %s", code, err, out)
	}
	if r := st.Remote; r.DirPrefetchErrors == nil || r.Bucket == nil || r.Bucket.Gets == 0 || r.Bucket.Lists < 2 || r.Bucket.BytesIn < r.BytesFetched || r.Bucket.Indexes != 1 {
		t.Errorf("status --json: %s; want dir_prefetch_errors, and the bucket's GETs, lists and bytes in (at least what was fetched), and its one index", out)
	}
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: exit %d: %s", code, out)
	}
	if mounted(t, e.mnt) {
		t.Fatal("still mounted after unmount")
	}

	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"missing bucket", []string{"--remote", "s3://no-such-bucket/p"}, `bucket "no-such-bucket" does not exist`},
		{"no bucket", []string{"--remote", "s3:///p"}, "names no bucket"},
		{"token", []string{"--remote", url, "--token-file", "/etc/hostname"}, "a bucket takes the AWS credentials"},
		{"bad endpoint", []string{"--remote", url, "--s3-endpoint", "ftp://x"}, "is not an http:// or https:// URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := run(t, append([]string{"--state", t.TempDir(), "mount", e.mnt}, tc.args...)...)
			if code == 0 || !strings.Contains(out, tc.says) {
				t.Errorf("exit %d, %q; want non-zero, saying %q", code, out, tc.says)
			}
			if mounted(t, e.mnt) {
				t.Error("mounted after a refused mount")
			}
		})
	}
}

// Checkpoints in the bucket through the CLI, with no master: snapshot
// --push of a mount of a bucket, cowfs push of it again (through the
// live mount, then from the state directory, then with --remote s3://),
// restore of it on another state directory; another snapshot under the
// name and a missing name are refused with their message.
func TestBucketCheckpointCLI(t *testing.T) {
	t.Parallel()
	srv := sharedS3(t)
	bucket := srv.Bucket(t)
	e := newEnv(t)
	url := "s3://" + bucket + "/spiders"
	if _, stderr, code := publishJSON(t, "--state", e.state, "publish", e.lower, url); code != 0 {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}
	state := t.TempDir()
	cli(t, state, "mount", e.mnt, "--remote", url, "--io-timeout", "10s")
	if err := os.WriteFile(filepath.Join(e.mnt, "crawl.db"), []byte("records 1-100"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := cli(t, state, "snapshot", e.mnt, "ckpt", "--push")
	if !strings.Contains(out, "pushed ckpt") {
		t.Errorf("snapshot --push: %s", out)
	}
	if out := cli(t, state, "push", "ckpt"); !strings.Contains(out, "pushed ckpt to "+url+": 0 objects sent") {
		t.Errorf("push again through the mount: %s", out)
	}
	if err := os.WriteFile(filepath.Join(e.mnt, "crawl.db"), []byte("records 1-200"), 0o644); err != nil {
		t.Fatal(err)
	}
	cli(t, state, "snapshot", e.mnt, "later")
	unmountCLI(t, e.mnt)
	// From the state directory, to the bucket the mount was over.
	if out := cli(t, state, "push", "ckpt"); !strings.Contains(out, "0 objects sent") {
		t.Errorf("push again, unmounted: %s", out)
	}
	if out := cli(t, state, "push", "later", "--remote", url, "--s3-endpoint", srv.Endpoint); !strings.Contains(out, "pushed later to "+url) {
		t.Errorf("push --remote s3://: %s", out)
	}

	other := t.TempDir()
	mnt2 := restoreAt(t, other, "ckpt", filepath.Join(t.TempDir(), "resume"), "--remote", url)
	for p, want := range map[string]string{"crawl.db": "records 1-100", "run.sh": "#!/bin/sh\necho ran\n"} {
		if got, err := os.ReadFile(filepath.Join(mnt2, p)); err != nil || string(got) != want {
			t.Errorf("%s restored from the bucket: %q, %v; want %q", p, got, err, want)
		}
	}
	// A snapshot of the restore is another snapshot than the bucket's
	// "later": under that name it is refused.
	cli(t, other, "snapshot", mnt2, "later")
	out, code := run(t, "--state", other, "push", "later", "--remote", url)
	if code == 0 || !strings.Contains(out, "another snapshot holds the name") {
		t.Errorf("push of another snapshot under a taken name: exit %d, %q", code, out)
	}
	// The bucket's checkpoints, the restore's lease on ckpt among them;
	// one removed, and removed again.
	type ckptLine struct {
		Name    string    `json:"name"`
		Created time.Time `json:"created"`
		Parent  string    `json:"parent"`
		Source  string    `json:"source"`
		Version string    `json:"version"`
		Leases  int       `json:"leases"`
	}
	cs := jsonLines[ckptLine](t, cli(t, other, "snapshots", "--remote", url, "--json"))
	if len(cs) != 2 || cs[0].Name != "ckpt" || cs[0].Leases != 1 || cs[1].Name != "later" || cs[1].Leases != 0 || !strings.HasPrefix(cs[1].Version, "sha256-") {
		t.Errorf("snapshots --remote --json beside a restore of ckpt: %+v", cs)
	}
	if out := cli(t, other, "snapshots", "--remote", url); !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "ckpt") {
		t.Errorf("snapshots --remote: %q", out)
	}
	// verify reads a checkpoint by its name, or with every version the
	// checkpoints too.
	if out := cli(t, other, "verify", "ckpt", "--remote", url); !strings.Contains(out, ": ok: 0 versions and 1 checkpoints") {
		t.Errorf("verify ckpt --remote: %s", out)
	}
	if out := cli(t, other, "verify", "--remote", url); !strings.Contains(out, ": ok: 1 versions and 2 checkpoints") {
		t.Errorf("verify --remote: %s", out)
	}
	unmountCLI(t, mnt2)
	cli(t, other, "snapshots", "rm", "ckpt", "--remote", url)
	if cs := jsonLines[ckptLine](t, cli(t, other, "snapshots", "--remote", url, "--json")); len(cs) != 1 || cs[0].Name != "later" {
		t.Errorf("snapshots --remote --json after ckpt was removed: %+v", cs)
	}
	if out, code := run(t, "--state", other, "snapshots", "rm", "ckpt", "--remote", url); code != exitNotFound || !strings.Contains(out, "no checkpoint ckpt") {
		t.Errorf("snapshots rm of a checkpoint removed already: exit %d: %s", code, out)
	}
	if out, code := run(t, "--state", other, "snapshots", "--remote", "s3:///p"); code != exitUsage || !strings.Contains(out, "names no bucket") {
		t.Errorf("snapshots --remote of a bad URL: exit %d: %s", code, out)
	}

	missing := filepath.Join(t.TempDir(), "m")
	os.MkdirAll(missing, 0o755)
	unmountOnCleanup(t, missing)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--state", t.TempDir(), "restore", "missing", missing, "--remote", url}, exitNotFound, "no checkpoint missing"},
		{[]string{"--state", state, "push", "later", "--remote", "s3:///p"}, exitUsage, "names no bucket"},
	} {
		out, code := run(t, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("cowfs %s: exit %d, %q; want %d, saying %q", strings.Join(c.args, " "), code, out, c.code, c.want)
		}
	}
	if mounted(t, missing) {
		t.Error("a refused restore left a mount")
	}
}

// cowfs gc --remote s3://... keeps what the published version reaches and
// says so; a bad URL is a usage error.
func TestBucketGCCLI(t *testing.T) {
	t.Parallel()
	srv := sharedS3(t)
	bucket := srv.Bucket(t)
	e := newEnv(t)
	url := "s3://" + bucket + "/spiders"
	if _, stderr, code := publishJSON(t, "--state", e.state, "publish", e.lower, url); code != 0 {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}
	type bucketGC struct {
		Versions         int  `json:"versions"`
		VersionsLeased   int  `json:"versions_leased"`
		VersionsYoung    int  `json:"versions_young"`
		VersionsRemoved  int  `json:"versions_removed"`
		Checkpoints      int  `json:"checkpoints"`
		Live             int  `json:"live"`
		Removed          int  `json:"removed"`
		Packs            int  `json:"packs"`
		PacksRemoved     int  `json:"packs_removed"`
		IndexesRewritten int  `json:"indexes_rewritten"`
		IndexesMerged    int  `json:"indexes_merged"`
		PacksRepacked    int  `json:"packs_repacked"`
		RepackedBytes    int  `json:"repacked_bytes"`
		DeadBytes        int  `json:"dead_bytes"`
		Young            int  `json:"young"`
		TracesRemoved    int  `json:"traces_removed"`
		DryRun           bool `json:"dry_run"`
		GraceSeconds     int  `json:"grace_seconds"`
	}
	for _, dry := range []string{"--dry-run", "--grace=0s"} {
		out := cli(t, e.state, "gc", "--remote", url, "--grace", "0s", dry, "--json")
		res := jsonLines[bucketGC](t, out)
		// Two packs: the trees' and the files'.
		if len(res) != 1 || res[0].Versions != 1 || res[0].Live == 0 || res[0].Removed != 0 || res[0].Packs != 2 || res[0].PacksRemoved != 0 || res[0].IndexesRewritten != 0 || res[0].IndexesMerged != 0 || res[0].PacksRepacked != 0 || res[0].DeadBytes != 0 || res[0].TracesRemoved != 0 {
			t.Errorf("gc %s --json: %s", dry, out)
		}
	}
	if out, code := run(t, "--state", e.state, "gc", "--remote", "s3:///p"); code != exitUsage || !strings.Contains(out, "names no bucket") {
		t.Errorf("gc of a bad URL: exit %d: %s", code, out)
	}
	if out, code := run(t, "--state", e.state, "gc", "--remote", url, "--grace", "-1s"); code != exitUsage {
		t.Errorf("gc --grace -1s: exit %d: %s", code, out)
	}
	if out, code := run(t, "--state", e.state, "gc", "--remote", url, "--keep-versions", "-1"); code != exitUsage || !strings.Contains(out, "--keep-versions") {
		t.Errorf("gc --keep-versions -1: exit %d: %s", code, out)
	}
	if out, code := run(t, "--state", e.state, "gc", "--keep-versions", "1"); code != exitUsage || !strings.Contains(out, "--remote") {
		t.Errorf("gc --keep-versions without --remote: exit %d: %s", code, out)
	}
	// The mount reads the version whole after gc, and holds it: a gc
	// --keep-versions 1 after a newer version is published keeps it
	// while the mount runs, and removes it after.
	state := t.TempDir()
	cli(t, state, "mount", e.mnt, "--remote", url)
	if got, err := os.ReadFile(filepath.Join(e.mnt, "run.sh")); err != nil || string(got) != "#!/bin/sh\necho ran\n" {
		t.Errorf("run.sh after gc: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(e.lower, "new.txt"), []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := publishJSON(t, "--state", e.state, "publish", e.lower, url); code != 0 {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}
	type kept struct{ versions, leased, removed int }
	gcKeep := func(args ...string) kept {
		t.Helper()
		res := jsonLines[bucketGC](t, cli(t, e.state, append([]string{"gc", "--remote", url, "--grace", "0s", "--keep-versions", "1", "--json"}, args...)...))
		if len(res) != 1 {
			t.Fatalf("gc --json: %d lines", len(res))
		}
		return kept{res[0].Versions, res[0].VersionsLeased, res[0].VersionsRemoved}
	}
	deadline := time.Now().Add(30 * time.Second)
	for gcKeep("--dry-run").leased != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the mount's lease on its version not seen by gc 30 s after the mount")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, code := run(t, "status", e.mnt, "--json"); code != 0 || !strings.Contains(out, `"lease":{"held":true,"renewed":"`) {
		t.Errorf("status --json of a mount holding its version: exit %d: %s", code, out)
	}
	if out, code := run(t, "status", e.mnt); code != 0 || !strings.Contains(out, "lease:   held, put ") {
		t.Errorf("status of a mount holding its version: exit %d: %s", code, out)
	}
	vs := jsonLines[publishedLine](t, cli(t, e.state, "versions", url, "--json"))
	if len(vs) != 2 || vs[0].Leases != 0 || vs[1].Leases != 1 || !vs[0].Published.After(vs[1].Published) || vs[0].Files != vs[1].Files+1 || !strings.HasSuffix(vs[1].Source, ":"+e.lower) {
		t.Errorf("versions --json beside a mount of the older one: %+v; want 2, newest first, the older held by 1 lease", vs)
	}
	if out := cli(t, e.state, "versions", url); !strings.HasPrefix(out, "VERSION") || strings.Count(out, "\n") != 3 {
		t.Errorf("versions: %q", out)
	}
	if got := gcKeep(); got != (kept{versions: 2, leased: 1}) {
		t.Errorf("gc --keep-versions 1 beside the mount: %+v, want the mounted version kept for its lease", got)
	}
	if got, err := os.ReadFile(filepath.Join(e.mnt, "run.sh")); err != nil || string(got) != "#!/bin/sh\necho ran\n" {
		t.Errorf("run.sh after gc --keep-versions: %q, %v", got, err)
	}
	unmountCLI(t, e.mnt)
	if got := gcKeep(); got != (kept{versions: 1, removed: 1}) {
		t.Errorf("gc --keep-versions 1 after the unmount: %+v, want the older version removed", got)
	}
	if out := cli(t, e.state, "gc", "--remote", url, "--keep-versions", "1"); !strings.Contains(out, "0 versions older than the newest 1") {
		t.Errorf("gc --keep-versions 1, text: %s", out)
	}
	if vs := jsonLines[publishedLine](t, cli(t, e.state, "versions", url, "--json")); len(vs) != 1 || vs[0].Leases != 0 {
		t.Errorf("versions --json after gc --keep-versions 1: %+v", vs)
	}
	if out, code := run(t, "--state", e.state, "versions", "s3:///p"); code != exitUsage || !strings.Contains(out, "names no bucket") {
		t.Errorf("versions of a bad URL: exit %d: %s", code, out)
	}
	if out, code := run(t, "--state", e.state, "versions", "s3://no-such-bucket/p"); code != exitNotFound {
		t.Errorf("versions of a missing bucket: exit %d: %s", code, out)
	}
}

// gc says what it merged: a prefix published to ten times holds ten
// indexes, which a dry run would merge, gc merges, and a mount then
// reads whole.
func TestBucketGCMergesCLI(t *testing.T) {
	t.Parallel()
	srv := sharedS3(t)
	url := "s3://" + srv.Bucket(t) + "/spiders"
	e := newEnv(t)
	for i := range 10 {
		if err := os.WriteFile(filepath.Join(e.lower, fmt.Sprintf("n%02d.py", i)), []byte(fmt.Sprintf("print(%d)\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, stderr, code := publishJSON(t, "--state", e.state, "publish", e.lower, url); code != 0 {
			t.Fatalf("publish %d: exit %d: %s", i, code, stderr)
		}
	}
	if out := cli(t, e.state, "gc", "--remote", url, "--dry-run"); !strings.Contains(out, "would merge 10 indexes of few objects") {
		t.Errorf("gc --dry-run of 10 indexes: %s", out)
	}
	if out := cli(t, e.state, "gc", "--remote", url); !strings.Contains(out, "merged 10 indexes of few objects") {
		t.Errorf("gc of 10 indexes: %s", out)
	}
	if out := cli(t, e.state, "gc", "--remote", url); strings.Contains(out, "merge") {
		t.Errorf("gc after the merge: %s", out)
	}
	cli(t, t.TempDir(), "mount", e.mnt, "--remote", url, "--no-dir-prefetch") // newEnv unmounts it
	for i := range 10 {
		if got, err := os.ReadFile(filepath.Join(e.mnt, fmt.Sprintf("n%02d.py", i))); err != nil || string(got) != fmt.Sprintf("print(%d)\n", i) {
			t.Errorf("n%02d.py after the merge: %q, %v", i, got, err)
		}
	}
}
