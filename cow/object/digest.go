// Package object defines cowfs's immutable, content-addressed objects and
// the store that keeps them.
//
// Every object is named by the SHA-256 of its encoding, kind included, so a
// blob can never be taken for a tree, and every object is checked against
// its name before it is used or cached. A version of a tree, and a
// snapshot, is one root tree digest.
//
//	blob: up to one chunk (1 MiB) of file content
//	file: the file's size and the ordered digests of its chunks (the zero
//	      digest for a chunk that is a hole)
//	tree: a directory: entries sorted by name, each with its type, mode,
//	      owner, times, size, xattrs, symlink target and object digest
//
// Package object knows nothing of layers or FUSE.
package object

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Digest names an object: the SHA-256 of its encoding.
type Digest [sha256.Size]byte

// Zero is the zero digest. In a file object it stands for a chunk that is a
// hole; it names no object.
var Zero Digest

const digestPrefix = "sha256-"

// ErrCorrupt reports an object whose bytes do not match its name or do not
// decode.
var ErrCorrupt = errors.New("object corrupt")

// ErrNotFound reports an object the store does not have.
var ErrNotFound = errors.New("object not found")

// Sum returns the digest of an encoded object.
func Sum(encoded []byte) Digest { return sha256.Sum256(encoded) }

// String returns the digest as "sha256-<hex>", the form used in refs, file
// names and messages.
func (d Digest) String() string { return digestPrefix + hex.EncodeToString(d[:]) }

// Short returns the first 12 hex digits, for humans.
func (d Digest) Short() string { return hex.EncodeToString(d[:6]) }

// IsZero reports whether d is the zero digest.
func (d Digest) IsZero() bool { return d == Zero }

// ParseDigest parses the form String returns.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	h, ok := strings.CutPrefix(s, digestPrefix)
	if !ok {
		return d, fmt.Errorf("digest %q: want prefix %q", s, digestPrefix)
	}
	if len(h) != 2*len(d) {
		return d, fmt.Errorf("digest %q: want %d hex digits", s, 2*len(d))
	}
	if _, err := hex.Decode(d[:], []byte(h)); err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	if strings.ToLower(h) != h {
		return d, fmt.Errorf("digest %q: hex digits must be lower case", s)
	}
	return d, nil
}
