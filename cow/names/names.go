// Package names checks the names of directory entries. It is a leaf: it
// imports only the standard library, so a package that stores names (the
// snapshot refs, the object format) can check them without linking the
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
