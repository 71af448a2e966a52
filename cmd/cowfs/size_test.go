package main

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in      string
		want    int64
		wantErr string // part of the error; "" for none
	}{
		{"", 0, ""},
		{"0", 0, ""},
		{"1234", 1234, ""},
		{"4096B", 4096, ""},
		{"10k", 10 << 10, ""},
		{"512M", 512 << 20, ""},
		{"512MiB", 512 << 20, ""},
		{"512mib", 512 << 20, ""},
		{"20g", 20 << 30, ""},
		{"20GiB", 20 << 30, ""},
		{"1.5G", 3 << 29, ""},
		{"1.5 GiB", 3 << 29, ""}, // as humanBytes prints it
		{".5K", 512, ""},
		{"1.0001K", 1024, ""}, // rounded down to whole bytes
		{"1T", 1 << 40, ""},
		{"2P", 2 << 50, ""},
		{"8388607T", 8388607 << 40, ""},
		{"9223372036854775807", 1<<63 - 1, ""},
		{"8388608T", 0, "too large"},
		{"9000000T", 0, "too large"},
		{"9007199254740992K", 0, "too large"},
		{"9223372036854775808", 0, "too large"},
		{"20GB", 0, "write G or GiB"},
		{"512mb", 0, "write M or MiB"},
		{"-1", 0, "not a size"},
		{"-1G", 0, "not a size"},
		{"G", 0, "not a size"},
		{".", 0, "not a size"},
		{"1.2.3M", 0, "not a size"},
		{"1e3", 0, "not a size"},
		{"abc", 0, "not a size"},
		{"12X", 0, "not a size"},
		{"12 iB", 0, "not a size"},
	} {
		got, err := parseSize(c.in)
		switch {
		case c.wantErr == "" && (err != nil || got != c.want):
			t.Errorf("parseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("parseSize(%q) = %d, %v; want an error saying %q", c.in, got, err, c.wantErr)
		case c.wantErr != "" && !strings.Contains(err.Error(), c.in):
			t.Errorf("parseSize(%q): the error does not name the size: %v", c.in, err)
		}
	}
}

// humanBytes prints what parseSize reads back, to its one decimal.
func TestHumanBytes(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{512 << 20, "512.0 MiB"},
		{3 << 29, "1.5 GiB"},
		{20 << 30, "20.0 GiB"},
		{5 << 40, "5.0 TiB"},
		{1<<63 - 1, "8.0 EiB"},
	} {
		got := humanBytes(c.n)
		if got != c.want {
			t.Errorf("humanBytes(%d) = %q, want %q", c.n, got, c.want)
			continue
		}
		if back, err := parseSize(got); c.n < 1<<60 && (err != nil || back > c.n+c.n/20 || back < c.n-c.n/20) {
			t.Errorf("parseSize(humanBytes(%d) = %q) = %d, %v", c.n, got, back, err)
		}
	}
}

// Every size flag takes the same sizes, and a bad one is a usage error
// (exit 2) naming the flag, with nothing mounted.
func TestSizeFlags(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"mount", e.mnt, "--lower", e.lower, "--readahead", "1.5X"}, "--readahead"},
		{[]string{"mount", e.mnt, "--lower", e.lower, "--reserve", "64MB"}, "--reserve"},
		{[]string{"mount", e.mnt, "--remote", "127.0.0.1:1", "--cache-size", "lots"}, "--cache-size"},
		{[]string{"restore", "snap", e.mnt, "--reserve", "-1G"}, "--reserve"},
	} {
		out, code := run(t, append([]string{"--state", e.state}, c.args...)...)
		if code != exitUsage || !strings.Contains(out, c.flag) {
			t.Errorf("cowfs %v: exit %d, %q; want exit %d naming %s", c.args, code, out, exitUsage, c.flag)
		}
		if mounted(t, e.mnt) {
			t.Fatal("something was mounted")
		}
	}
	// The forms the help promises are taken.
	out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower, "--readahead", "1.5MiB", "--reserve", "0.0625G")
	if code != 0 {
		t.Fatalf("mount --readahead 1.5MiB --reserve 0.0625G: exit %d: %s", code, out)
	}
	if out, code := run(t, "unmount", e.mnt); code != 0 {
		t.Fatalf("unmount: %s", out)
	}
	for _, c := range []string{"mount", "restore"} {
		out, _ := run(t, c, "--help")
		if !strings.Contains(out, "powers of 1024") {
			t.Errorf("%s --help does not say what a size's units are: %s", c, out)
		}
	}
}
