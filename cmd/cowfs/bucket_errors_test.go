package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// Each way of failing to use a bucket exits with its code from docs/cli.md
// and says what was wrong and what to do, against a real SeaweedFS: a
// missing bucket or a prefix with nothing published (3), an endpoint that
// does not answer (4), a damaged object (5), wrong credentials or an
// identity that may not write (6). Nothing is mounted.
func TestBucketExitCodes(t *testing.T) {
	t.Parallel()
	srv := sharedS3(t)
	bucket := srv.Bucket(t)
	e := newEnv(t)
	url := "s3://" + bucket + "/spiders"
	if _, stderr, code := publishJSON(t, "--state", e.state, "publish", e.lower, url); code != 0 {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}
	// A prefix whose version object is damaged in the bucket.
	damaged := "s3://" + bucket + "/damaged"
	lines, stderr, code := publishJSON(t, "--state", t.TempDir(), "publish", e.lower, damaged)
	if code != 0 {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}
	version, _ := lines[len(lines)-1]["version"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := "damaged/objects/" + strings.TrimPrefix(version, "sha256-")
	if _, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
		Body: bytes.NewReader([]byte("t\x01 not the tree that was published"))}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	reader := [][2]string{{"AWS_ACCESS_KEY_ID", s3test.ReadOnlyAccessKey}, {"AWS_SECRET_ACCESS_KEY", s3test.ReadOnlySecretKey}}

	for _, c := range []struct {
		name string
		env  [][2]string
		args []string
		want int
		says []string
	}{
		{"missing bucket", nil, []string{"mount", e.mnt, "--remote", "s3://no-such-bucket/p"}, exitNotFound,
			[]string{`bucket "no-such-bucket" does not exist`, "check the bucket's name"}},
		{"publish to a missing bucket", nil, []string{"publish", e.lower, "s3://no-such-bucket/p"}, exitNotFound,
			[]string{`bucket "no-such-bucket" does not exist`}},
		{"nothing published", nil, []string{"mount", e.mnt, "--remote", "s3://" + bucket + "/empty"}, exitNotFound,
			[]string{"no version published", "cowfs publish DIR s3://" + bucket + "/empty"}},
		{"nothing published, a trailing slash", nil, []string{"mount", e.mnt, "--remote", "s3://" + bucket + "/empty/"}, exitNotFound,
			[]string{"no version published", "cowfs publish DIR s3://" + bucket + "/empty"}},
		{"unreachable", nil, []string{"mount", e.mnt, "--remote", url, "--s3-endpoint", closed, "--io-timeout", "5s"}, exitUnreachable,
			[]string{"cannot reach " + closed, "--s3-endpoint"}},
		{"publish unreachable", nil, []string{"publish", e.lower, url, "--s3-endpoint", closed, "--s3-timeout", "5s"}, exitUnreachable,
			[]string{"cannot reach " + closed}},
		{"damaged", nil, []string{"mount", e.mnt, "--remote", damaged, "--io-timeout", "10s"}, exitCorrupt,
			[]string{"damaged", key}},
		{"wrong secret", [][2]string{{"AWS_SECRET_ACCESS_KEY", "wrong"}}, []string{"mount", e.mnt, "--remote", url}, exitDenied,
			[]string{"refused the credentials", "AWS_SECRET_ACCESS_KEY"}},
		{"may not write", reader, []string{"publish", e.lower, url}, exitDenied,
			[]string{"AccessDenied", "may not write", s3test.ReadOnlyAccessKey}},
		{"reader mounts", reader, []string{"mount", e.mnt, "--remote", url}, exitOK, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var env []string
			for _, kv := range c.env {
				env = append(env, kv[0]+"="+kv[1])
			}
			out, code := runEnv(t, env, append([]string{"--state", t.TempDir()}, c.args...)...)
			t.Log(out)
			if code != c.want {
				t.Errorf("cowfs %v: exit %d, want %d: %s", c.args, code, c.want, out)
			}
			for _, w := range c.says {
				if !strings.Contains(out, w) {
					t.Errorf("the output does not say %q: %s", w, out)
				}
			}
			// The bucket's URL is named once, beside the command to run.
			if u := strings.TrimSuffix(c.args[len(c.args)-1], "/"); strings.HasPrefix(c.name, "nothing published") && strings.Count(out, u) != 2 {
				t.Errorf("the output names %s %d times; want once, and once in the command to run: %s", u, strings.Count(out, u), out)
			}
			if c.want == exitOK {
				if _, err := os.Stat(filepath.Join(e.mnt, "run.sh")); err != nil {
					t.Errorf("run.sh through the mount: %v", err)
				}
				// Credentials that only read cannot put the mount's
				// lease: the mount goes on, and its status says why
				// it holds nothing.
				deadline := time.Now().Add(30 * time.Second)
				for {
					out, code := run(t, "status", e.mnt, "--json")
					if code != 0 {
						t.Fatalf("status: exit %d: %s", code, out)
					}
					if strings.Contains(out, `"lease":{"held":false,"error":`) && strings.Contains(out, "AccessDenied") {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("status 30 s after a mount with credentials that only read does not say its lease failed: %s", out)
					}
					time.Sleep(100 * time.Millisecond)
				}
				unmountCLI(t, e.mnt)
			}
			if mounted(t, e.mnt) {
				t.Fatal("mounted after a refused mount")
			}
		})
	}
}

// A fresh mount of a bucket lets the newest version's listing check the
// bucket and the credentials; a remount, which lists nothing and may
// find every object it needs held, checks them with a request of its
// own, its question whether the bucket still has its version: with a
// wrong secret, or an endpoint that does not answer, it is refused too,
// and nothing is mounted.
func TestBucketRemountChecksCredentials(t *testing.T) {
	t.Parallel()
	srv := sharedS3(t)
	e := newEnv(t)
	url := "s3://" + srv.Bucket(t) + "/spiders"
	if _, stderr, code := publishJSON(t, "--state", e.state, "publish", e.lower, url); code != 0 {
		t.Fatalf("publish: exit %d: %s", code, stderr)
	}
	state := t.TempDir()
	if out, code := runEnv(t, nil, "--state", state, "mount", e.mnt, "--remote", url); code != exitOK {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	if _, err := os.ReadFile(filepath.Join(e.mnt, "run.sh")); err != nil {
		t.Errorf("run.sh through the mount: %v", err)
	}
	unmountCLI(t, e.mnt)
	out, code := runEnv(t, []string{"AWS_SECRET_ACCESS_KEY=wrong"}, "--state", state, "mount", e.mnt, "--remote", url)
	t.Log(out)
	if code != exitDenied || !strings.Contains(out, "refused the credentials") {
		t.Errorf("a remount with a wrong secret: exit %d, want %d, saying the credentials were refused: %s", code, exitDenied, out)
	}
	if mounted(t, e.mnt) {
		unmountCLI(t, e.mnt)
		t.Fatal("mounted with a wrong secret")
	}
	// The question whether the bucket still has the version is the
	// remount's check: an endpoint that does not answer fails it too.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	out, code = runEnv(t, nil, "--state", state, "mount", e.mnt, "--remote", url, "--s3-endpoint", closed, "--io-timeout", "5s")
	t.Log(out)
	if code != exitUnreachable || !strings.Contains(out, "cannot reach "+closed) {
		t.Errorf("a remount of an endpoint that does not answer: exit %d, want %d: %s", code, exitUnreachable, out)
	}
	if mounted(t, e.mnt) {
		unmountCLI(t, e.mnt)
		t.Fatal("mounted over an endpoint that does not answer")
	}
	if out, code := runEnv(t, nil, "--state", state, "mount", e.mnt, "--remote", url); code != exitOK {
		t.Fatalf("a remount with the right secret: exit %d: %s", code, out)
	}
	if _, err := os.ReadFile(filepath.Join(e.mnt, "run.sh")); err != nil {
		t.Errorf("run.sh through the remount: %v", err)
	}
	unmountCLI(t, e.mnt)
}

// cowfs publish and cowfs mount --remote s3:// to a SeaweedFS serving
// https with a test CA: with --s3-ca they work; without it, with another
// CA, or with http:// they fail with exit 6, saying what is wrong with
// TLS and which flag to change, and nothing is mounted.
func TestBucketTLSCLI(t *testing.T) {
	// Its own server, serving https; every command names it with
	// --s3-endpoint, which wins over the environment sharedS3 sets.
	t.Parallel()
	s3test.SetCredentialEnv()
	srv := s3test.RunTLS(t)
	bucket := srv.Bucket(t)
	e := newEnv(t)
	url := "s3://" + bucket + "/spiders"
	other, err := s3test.NewTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tls := []string{"--s3-endpoint", srv.Endpoint, "--s3-ca", srv.TLS.CAFile}
	if _, stderr, code := publishJSON(t, append([]string{"--state", e.state, "publish", e.lower, url}, tls...)...); code != 0 {
		t.Fatalf("publish over TLS: exit %d: %s", code, stderr)
	}
	out, code := run(t, append([]string{"--state", t.TempDir(), "mount", e.mnt, "--remote", url, "--io-timeout", "10s"}, tls...)...)
	if code != 0 {
		t.Fatalf("mount over TLS: exit %d: %s", code, out)
	}
	if got, err := os.ReadFile(filepath.Join(e.mnt, "run.sh")); err != nil || string(got) != "#!/bin/sh\necho ran\n" {
		t.Errorf("run.sh over TLS: %q, %v", got, err)
	}
	unmountCLI(t, e.mnt)

	plainEndpoint := strings.Replace(srv.Endpoint, "https://", "http://", 1)
	for _, c := range []struct {
		name string
		args []string
		says []string
	}{
		{"mount without --s3-ca", []string{"mount", e.mnt, "--remote", url, "--s3-endpoint", srv.Endpoint},
			[]string{"certificate is not signed by a CA this machine trusts", "pass --s3-ca"}},
		{"publish without --s3-ca", []string{"publish", e.lower, url, "--s3-endpoint", srv.Endpoint},
			[]string{"certificate is not signed by a CA this machine trusts", "pass --s3-ca"}},
		{"mount with another CA", []string{"mount", e.mnt, "--remote", url, "--s3-endpoint", srv.Endpoint, "--s3-ca", other.CAFile},
			[]string{"not signed by the CA in --s3-ca " + other.CAFile}},
		{"mount over http", []string{"mount", e.mnt, "--remote", url, "--s3-endpoint", plainEndpoint},
			[]string{"speaks TLS and this client does not", "use " + srv.Endpoint}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, code := run(t, append([]string{"--state", t.TempDir()}, c.args...)...)
			t.Log(out)
			if code != exitDenied {
				t.Errorf("exit %d, want %d: %s", code, exitDenied, out)
			}
			for _, w := range c.says {
				if !strings.Contains(out, w) {
					t.Errorf("the output does not say %q: %s", w, out)
				}
			}
			// The bucket's URL is named once, beside the command to run.
			if u := strings.TrimSuffix(c.args[len(c.args)-1], "/"); strings.HasPrefix(c.name, "nothing published") && strings.Count(out, u) != 2 {
				t.Errorf("the output names %s %d times; want once, and once in the command to run: %s", u, strings.Count(out, u), out)
			}
			if mounted(t, e.mnt) {
				t.Fatal("mounted after a refused mount")
			}
		})
	}
}
