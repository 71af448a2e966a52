package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// cowfs verify --remote s3://... reads every version (or the one
// --version names), says ok, and lets go of its leases; a damaged
// version object is exit 5 with the version and what is wrong named, in
// text and JSON; credentials that only read still verify, and say they
// hold nothing; misuse is a usage error, and a version the bucket lacks
// not found.
func TestBucketVerifyCLI(t *testing.T) {
	t.Parallel()
	srv := sharedS3(t)
	bucket := srv.Bucket(t)
	e := newEnv(t)
	url := "s3://" + bucket + "/spiders"
	var versions []string
	for i := range 2 {
		if err := os.WriteFile(filepath.Join(e.lower, "items.json"), []byte(strconv.Itoa(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		lines, stderr, code := publishJSON(t, "--state", e.state, "publish", e.lower, url)
		if code != 0 {
			t.Fatalf("publish: exit %d: %s", code, stderr)
		}
		v, _ := lines[len(lines)-1]["version"].(string)
		versions = append(versions, v)
	}
	state := t.TempDir()
	if out := cli(t, state, "verify", "--remote", url); !strings.Contains(out, url+": ok: 2 versions and 0 checkpoints reach") {
		t.Errorf("verify --remote: %s", out)
	}
	type result struct {
		URL         string `json:"url"`
		Versions    int    `json:"versions"`
		Checkpoints int    `json:"checkpoints"`
		OK          bool   `json:"ok"`
		Trees       int    `json:"trees"`
		Files       int    `json:"files"`
		Chunks      int    `json:"chunks"`
		Bytes       int64  `json:"bytes"`
		Problems    []struct {
			Root         string   `json:"root"`
			Paths        []string `json:"paths"`
			Object       string   `json:"object"`
			Kind         string   `json:"kind"`
			Error        string   `json:"error"`
			RepairedFrom string   `json:"repaired_from"`
		} `json:"problems"`
	}
	short := strings.TrimPrefix(versions[0], "sha256-")[:12]
	rs := jsonLines[result](t, cli(t, state, "verify", "--remote", url, "--version", short, "--json"))
	if len(rs) != 1 || !rs[0].OK || rs[0].Versions != 1 || rs[0].Files == 0 || rs[0].Chunks == 0 || rs[0].Bytes == 0 || len(rs[0].Problems) != 0 {
		t.Errorf("verify --version %s --json: %+v", short, rs)
	}
	// Its leases went with it.
	for _, v := range jsonLines[publishedLine](t, cli(t, state, "versions", url, "--json")) {
		if v.Leases != 0 {
			t.Errorf("version %s held by %d leases after verify", v.Version, v.Leases)
		}
	}
	reader := []string{"AWS_ACCESS_KEY_ID=" + s3test.ReadOnlyAccessKey, "AWS_SECRET_ACCESS_KEY=" + s3test.ReadOnlySecretKey}
	if out, code := runEnv(t, reader, "--state", state, "verify", "--remote", url); code != 0 || !strings.Contains(out, "holds no lease") || !strings.Contains(out, ": ok: 2 versions") {
		t.Errorf("verify with credentials that only read: exit %d: %s", code, out)
	}

	// The older version's object damaged.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := "spiders/objects/" + strings.TrimPrefix(versions[0], "sha256-")
	if _, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
		Body: bytes.NewReader([]byte("t\x01 not the tree that was published"))}); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, "--state", state, "verify", "--remote", url, "--json")
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "{") {
			lines = append(lines, l)
		}
	}
	rs = jsonLines[result](t, strings.Join(lines, "\n"))
	if code != exitCorrupt || !strings.Contains(out, "BAD version "+short+" (the version object): version") || len(rs) != 1 || rs[0].OK {
		t.Fatalf("verify of a damaged version: exit %d: %s", code, out)
	}
	if p := rs[0].Problems; len(p) != 1 || p[0].Root != "version "+short || p[0].Kind != "version" || p[0].Object != versions[0] ||
		len(p[0].Paths) != 1 || p[0].Paths[0] != "" || !strings.Contains(p[0].Error, "corrupt") {
		t.Errorf("the problem: %+v", p)
	}
	if out, code := run(t, "--state", state, "verify", "--remote", url, "--version", versions[1]); code != 0 {
		t.Errorf("verify of the version that is whole: exit %d: %s", code, out)
	}

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"verify", "--remote", url, "--version", "ffffffff"}, exitNotFound, "no version published matching ffffffff"},
		{[]string{"verify", "nope", "--remote", url}, exitNotFound, "no checkpoint nope"},
		{[]string{"verify", "--remote", "s3://" + bucket + "/empty"}, exitNotFound, "no version published and no checkpoint pushed"},
		{[]string{"verify", "--remote", url, "--repair"}, exitUsage, "a bucket's objects are uploaded again by cowfs publish"},
		{[]string{"verify", "nope", "--remote", url, "--version", short}, exitUsage, "not both"},
		{[]string{"verify", "--remote", url, "--token-file", "/dev/null"}, exitUsage, "--token-file applies only with a master's --remote"},
		{[]string{"verify", "x", "--version", short}, exitUsage, "--version applies only with --remote s3://"},
		{[]string{"verify"}, exitUsage, "give the snapshot NAME"},
		{[]string{"verify", "--remote", "s3:///p"}, exitUsage, "names no bucket"},
	} {
		out, code := run(t, append([]string{"--state", state}, c.args...)...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("cowfs %s: exit %d, %q; want %d, saying %q", strings.Join(c.args, " "), code, out, c.code, c.want)
		}
	}
}
