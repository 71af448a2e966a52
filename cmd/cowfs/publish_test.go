package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/remote/s3store"
)

// publishJSON runs cowfs publish with stdout apart, and returns its JSON
// lines, its stderr and its exit code.
func publishJSON(t *testing.T, args ...string) ([]map[string]any, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("cowfs %v: timed out", args)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("stdout line %q is not JSON: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines, stderr.String(), code
}

// cowfs publish, off a terminal, prints JSON lines ending with the result;
// publishing an unchanged directory again uploads nothing but the new
// version's key; a bad URL, a missing bucket and wrong credentials each
// fail with their message.
func TestPublishCLI(t *testing.T) {
	t.Parallel()
	srv := sharedS3(t)
	bucket := srv.Bucket(t)
	e := newEnv(t)
	url := "s3://" + bucket + "/spiders/spider1"

	lines, stderr, code := publishJSON(t, "--state", e.state, "publish", e.lower, url)
	if code != 0 || len(lines) < 2 {
		t.Fatalf("publish: exit %d, %d lines; stderr: %s", code, len(lines), stderr)
	}
	last := lines[len(lines)-1]
	if last["result"] != "published" || last["url"] != url || last["files"] != float64(2) || last["uploaded"] != last["objects"] {
		t.Fatalf("publish result: %v", last)
	}
	if lines[0]["phase"] != "scanning" {
		t.Errorf("first progress line: %v", lines[0])
	}
	lines, stderr, code = publishJSON(t, "--state", t.TempDir(), "publish", e.lower, url)
	if code != 0 {
		t.Fatalf("publish again: exit %d: %s", code, stderr)
	}
	if again := lines[len(lines)-1]; again["uploaded"] != float64(0) || again["version"] != last["version"] {
		t.Fatalf("publishing an unchanged directory again: %v; want nothing uploaded, version %v", again, last["version"])
	}

	bucketStore, err := s3store.Open(context.Background(), s3store.Config{Bucket: bucket, Prefix: "spiders/spider1"})
	if err != nil {
		t.Fatal(err)
	}
	if vs, err := bucketStore.Versions(context.Background()); err != nil || len(vs) != 2 {
		t.Fatalf("versions: %v, %v", vs, err)
	}

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		says string
	}{
		{"not a URL", nil, []string{e.lower, bucket}, exitUsage, "is not an s3://BUCKET/PREFIX URL"},
		{"no concurrency", nil, []string{e.lower, url, "--concurrency", "0"}, exitUsage, "--concurrency must be at least 1"},
		{"missing dir", nil, []string{filepath.Join(e.lower, "nope"), url}, exitFailure, "no such file or directory"},
		{"missing bucket", nil, []string{e.lower, "s3://no-such-bucket/p"}, exitNotFound, `bucket "no-such-bucket" does not exist`},
		{"wrong secret", []string{"AWS_SECRET_ACCESS_KEY=wrong"}, []string{e.lower, url}, exitDenied, "refused the credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runEnv(t, tc.env, append([]string{"--state", t.TempDir(), "publish"}, tc.args...)...)
			if code != tc.code || !strings.Contains(out, tc.says) {
				t.Fatalf("exit %d, %q; want %d, saying %q", code, out, tc.code, tc.says)
			}
		})
	}
	if _, err := os.Stat(e.lower); err != nil {
		t.Fatal(err)
	}
}
