package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// cowfs publish, then cowfs mount --remote s3://... on another state
// directory reads the published files with no master, and unmounts; a
// missing bucket, a bad URL and a token for a bucket are refused with
// their message and nothing mounted.
func TestMountBucketCLI(t *testing.T) {
	srv := s3test.Run(t)
	bucket := srv.Bucket(t)
	srv.Env(t)
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
	if out, code := run(t, "--state", state, "status", e.mnt); code != 0 || !strings.Contains(out, url) {
		t.Errorf("status: exit %d: %s; want the bucket named", code, out)
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
