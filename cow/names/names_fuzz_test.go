package names

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// namesSeeds are paths and names that have broken path handling elsewhere:
// dot components, doubled and trailing slashes, NUL, the length limit.
var namesSeeds = []string{
	"", ".", "..", "/", "//", "a", "a/b", "a//b", "a/./b", "./a", "a/.",
	"a/", "/a", "a/..", "../a", "a/../b", "...", "..a", "a..", ".a/.b",
	"a\x00b", "\x00", "a/\x00", "é/ü", " ", "a b/c d",
	strings.Repeat("n", Max), strings.Repeat("n", Max+1),
	"a/" + strings.Repeat("n", Max) + "/b", "a/" + strings.Repeat("n", Max+1),
	strings.Repeat("a/", 100), strings.Repeat("../", 10) + "etc/passwd",
}

// FuzzCleanRel checks that CleanRel returns a path that stays inside the
// layer, in canonical form, or refuses with the errno a syscall would give.
func FuzzCleanRel(f *testing.F) {
	for _, s := range namesSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := CleanRel(p)

		// What CleanRel should keep of p, and whether it should refuse.
		var want []string
		refuse := strings.HasPrefix(p, "/")
		for _, c := range strings.Split(p, "/") {
			switch {
			case c == "" || c == ".":
			case c == ".." || len(c) > Max || strings.Contains(c, "\x00"):
				refuse = true
			default:
				want = append(want, c)
			}
		}

		if err != nil {
			if !refuse {
				t.Fatalf("CleanRel(%q) refused a path inside the layer: %v", p, err)
			}
			if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENAMETOOLONG) {
				t.Fatalf("CleanRel(%q): error %v carries neither EINVAL nor ENAMETOOLONG", p, err)
			}
			if got != "" {
				t.Fatalf("CleanRel(%q) returned %q with an error", p, got)
			}
			return
		}
		if refuse {
			t.Fatalf("CleanRel(%q) = %q, want a refusal", p, got)
		}
		if got != strings.Join(want, "/") {
			t.Fatalf("CleanRel(%q) = %q, want %q", p, got, strings.Join(want, "/"))
		}
		if strings.HasPrefix(got, "/") || strings.HasSuffix(got, "/") {
			t.Fatalf("CleanRel(%q) = %q: leading or trailing slash", p, got)
		}
		if got != "" {
			for _, c := range strings.Split(got, "/") {
				if err := Valid(c); err != nil {
					t.Fatalf("CleanRel(%q) = %q: component %q: %v", p, got, c, err)
				}
			}
		}
		again, err := CleanRel(got)
		if err != nil || again != got {
			t.Fatalf("CleanRel is not idempotent: %q -> %q -> %q, %v", p, got, again, err)
		}
		// Joining a valid name onto a clean path is clean.
		if j := Join(got, "x"); j != strings.TrimPrefix(got+"/x", "/") {
			t.Fatalf("Join(%q, x) = %q", got, j)
		} else if c, err := CleanRel(j); err != nil || c != j {
			t.Fatalf("CleanRel(Join(%q, x)) = %q, %v", got, c, err)
		}
	})
}

// FuzzValidName checks ValidName against its definition: a name is valid
// unless it is "", "." or "..", holds a slash or NUL, or is longer than
// Max bytes, and the errno tells which.
func FuzzValidName(f *testing.F) {
	for _, s := range namesSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := Valid(name)
		dots := name == "" || name == "." || name == ".."
		tooLong := len(name) > Max
		bad := dots || tooLong || strings.ContainsAny(name, "/\x00")
		switch {
		case !bad && err != nil:
			t.Fatalf("Valid(%q) refused a valid name: %v", name, err)
		case bad && err == nil:
			t.Fatalf("Valid(%q) accepted a name that is not one", name)
		case err == nil:
			// A valid name is a clean one-component path.
			if c, err := CleanRel(name); err != nil || c != name {
				t.Fatalf("CleanRel(%q) = %q, %v for a valid name", name, c, err)
			}
		case tooLong && !dots:
			if !errors.Is(err, syscall.ENAMETOOLONG) {
				t.Fatalf("ValidName of %d bytes: %v, want ENAMETOOLONG", len(name), err)
			}
		default:
			if !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("Valid(%q): %v, want EINVAL", name, err)
			}
		}
	})
}
