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
		{"512M", 512 << 20, ""},
		{"20g", 20 << 30, ""},
		{"1T", 1 << 40, ""},
		{"8388607T", 8388607 << 40, ""},
		{"9223372036854775807", 1<<63 - 1, ""},
		{"8388608T", 0, "too large"},
		{"9000000T", 0, "too large"},
		{"9007199254740992K", 0, "too large"},
		{"9223372036854775808", 0, "too large"},
		{"-1", 0, "not a size"},
		{"-1G", 0, "not a size"},
		{"G", 0, "not a size"},
		{"abc", 0, "not a size"},
		{"12X", 0, "not a size"},
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
