// Package names checks the names of directory entries and the relative
// paths made of them (CleanRel, the one check of a path from a user or the
// wire; Join). It is a leaf: it imports only the standard library, so a
// package that stores names or paths (the snapshot refs, the object
// format, the lowers, the master) can check them without linking the
// copy-up engine and its metadata database.
package names

import (
	"fmt"
	"strings"
	"syscall"
)

// Max is the longest name a directory entry may have, as on ext4.
const Max = 255

// Valid reports whether name may be used as one directory entry. It
// rejects what could escape a directory ("", ".", "..", anything with a
// slash) or cannot be stored (NUL, longer than Max bytes), with the errno
// a syscall would return.
func Valid(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("name %q: %w", name, syscall.EINVAL)
	case len(name) > Max:
		return fmt.Errorf("name of %d bytes: %w", len(name), syscall.ENAMETOOLONG)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q: %w", name, syscall.EINVAL)
	}
	return nil
}

// Join joins a relative directory path and a name. The root is "".
func Join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// maxPathLen and maxPathParts bound a path CleanRel accepts: Linux's
// PATH_MAX (4096 bytes with the terminating NUL), and a depth no tree a
// crawler writes comes near. A longer path cannot be opened anyway, and
// one from the wire is refused before it costs a scan or a log line.
const (
	maxPathLen   = 4095
	maxPathParts = 1024
)

// CleanRel turns a user-supplied path inside a layer into the relative form
// used everywhere in cow/ ("" for the root, "a/b" otherwise). It refuses any
// path that would leave the layer: absolute paths, ".." components, and
// components that are not valid names; and paths longer or deeper than
// maxPathLen and maxPathParts, in an error that does not hold the path.
func CleanRel(p string) (string, error) {
	if len(p) > maxPathLen {
		return "", fmt.Errorf("path of %d bytes, at most %d: %w", len(p), maxPathLen, syscall.EINVAL)
	}
	if n := strings.Count(p, "/") + 1; n > maxPathParts {
		// Counted before cleaning: empty and "." parts count too.
		return "", fmt.Errorf("path has %d parts, at most %d: %w", n, maxPathParts, syscall.EINVAL)
	}
	if strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("path %q is absolute: %w", p, syscall.EINVAL)
	}
	var parts []string
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." {
			continue
		}
		if err := Valid(c); err != nil {
			return "", fmt.Errorf("path %q: %w", p, err)
		}
		parts = append(parts, c)
	}
	return strings.Join(parts, "/"), nil
}
