package names

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// A path from the wire is bounded: a 3000-part path reached the scan,
// failed there as an internal error, and was logged whole.
func TestCleanRelBounded(t *testing.T) {
	for _, c := range []struct {
		p    string
		want string
	}{
		{strings.Repeat("a/", 3000), "bytes, at most"},
		{strings.Repeat("a/", maxPathParts) + "a", "parts, at most"},
		{strings.Repeat("x", 5000), "bytes, at most"},
	} {
		_, err := CleanRel(c.p)
		if err == nil || !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CleanRel of %d bytes: %.300v, want EINVAL saying %q", len(c.p), err, c.want)
			continue
		}
		if len(err.Error()) > 200 {
			t.Errorf("the error holds the path: %d bytes", len(err.Error()))
		}
	}
	if got, err := CleanRel(strings.Repeat("a/", maxPathParts-1) + "a"); err != nil || strings.Count(got, "/") != maxPathParts-1 {
		t.Errorf("a path of %d parts: %v", maxPathParts, err)
	}
}
