package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cowfs versions rollback makes the version before the newest the newest
// again, or the one --to names: a fresh mount reads it, and versions
// shows the rollback; a version already newest is nothing to do; a
// bucket of one version, or a version it lacks, is not found.
func TestBucketRollbackCLI(t *testing.T) {
	t.Parallel()
	bucket := sharedS3(t).Bucket(t)
	e := newEnv(t)
	url := "s3://" + bucket + "/spiders"
	spider := filepath.Join(e.lower, "spider.py")
	var versions []string
	for _, s := range []string{"good", "bad"} {
		if err := os.WriteFile(spider, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		lines, stderr, code := publishJSON(t, "--state", e.state, "publish", e.lower, url)
		if code != 0 {
			t.Fatalf("publish: exit %d: %s", code, stderr)
		}
		v, _ := lines[len(lines)-1]["version"].(string)
		versions = append(versions, v)
	}
	good, bad := strings.TrimPrefix(versions[0], "sha256-")[:12], strings.TrimPrefix(versions[1], "sha256-")[:12]
	state := t.TempDir()
	if out := cli(t, state, "versions", "rollback", url); !strings.Contains(out, "rolled "+url+" back to version "+good) {
		t.Errorf("versions rollback: %s", out)
	}
	cli(t, state, "mount", e.mnt, "--remote", url, "--io-timeout", "10s")
	got, err := os.ReadFile(filepath.Join(e.mnt, "spider.py"))
	unmountCLI(t, e.mnt)
	if err != nil || string(got) != "good" {
		t.Errorf("a fresh mount after the rollback reads %q, %v; want the good version", got, err)
	}
	vs := jsonLines[publishedLine](t, cli(t, state, "versions", url, "--json"))
	if len(vs) != 3 || vs[0].Version != versions[0] || vs[0].Again.IsZero() || !vs[0].Again.Equal(vs[2].Published) || !vs[1].Again.IsZero() {
		t.Errorf("versions --json after the rollback: %+v", vs)
	}
	if out := cli(t, state, "versions", url); !strings.Contains(out, "rollback to the publish of") {
		t.Errorf("versions after the rollback: %s", out)
	}
	// Forward again, by name, as JSON; then the same again.
	rs := jsonLines[publishedLine](t, cli(t, state, "versions", "rollback", url, "--to", bad, "--json"))
	if len(rs) != 1 || rs[0].Version != versions[1] || !rs[0].Again.Equal(vs[1].Published) {
		t.Errorf("versions rollback --to %s --json: %+v", bad, rs)
	}
	if out := cli(t, state, "versions", "rollback", url, "--to", versions[1]); !strings.Contains(out, "is the newest already") {
		t.Errorf("a rollback to the newest: %s", out)
	}

	one := "s3://" + bucket + "/one"
	if _, stderr, code := publishJSON(t, "--state", e.state, "publish", e.lower, one); code != 0 {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"versions", "rollback", one}, exitNotFound, "nothing to roll back to"},
		{[]string{"versions", "rollback", url, "--to", "ffffffff"}, exitNotFound, "no version published matching ffffffff"},
		{[]string{"versions", "rollback", url, "--to", "sha256-"}, exitUsage, "give a version"},
		{[]string{"versions", "rollback", "s3:///p"}, exitUsage, "names no bucket"},
		{[]string{"versions", "rollback", "s3://" + bucket + "/empty"}, exitNotFound, "nothing to roll back to"},
	} {
		out, code := run(t, append([]string{"--state", state}, c.args...)...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("cowfs %s: exit %d, %q; want %d, saying %q", strings.Join(c.args, " "), code, out, c.code, c.want)
		}
	}
}
