package object

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
)

// Kind is an object's kind: the first byte of its encoding.
type Kind byte

const (
	KindBlob Kind = 'b'
	KindFile Kind = 'f'
	KindTree Kind = 't'
)

// ChunkSize is the most content one blob holds. It equals cow.ChunkSize, so
// a chunk copied up in an upper is exactly one blob of a snapshot.
const ChunkSize = 1 << 20

// version is the encoding version, the second byte of every object.
const version = 1

// versionLinks is the version of a tree that has hard links: each entry
// then ends with its link group and link count. A tree without them is
// always version 1, so a directory keeps one encoding, and the digest it
// had before version 2 existed.
const versionLinks = 2

// EncodeBlob encodes file content of at most ChunkSize bytes.
func EncodeBlob(data []byte) ([]byte, error) {
	if len(data) > ChunkSize {
		return nil, fmt.Errorf("blob of %d bytes: more than a chunk", len(data))
	}
	out := make([]byte, 2+len(data))
	out[0], out[1] = byte(KindBlob), version
	copy(out[2:], data)
	return out, nil
}

// File is a regular file's content: its size and its chunks in order.
type File struct {
	Size   int64
	Chunks []Digest // Zero for a hole
}

// EncodeFile encodes f. The number of chunks must fit the size.
func EncodeFile(f *File) ([]byte, error) {
	if f.Size < 0 || int64(len(f.Chunks)) != (f.Size+ChunkSize-1)/ChunkSize {
		return nil, fmt.Errorf("file of %d bytes with %d chunks", f.Size, len(f.Chunks))
	}
	out := []byte{byte(KindFile), version}
	out = binary.AppendUvarint(out, uint64(f.Size))
	for _, c := range f.Chunks {
		out = append(out, c[:]...)
	}
	return out, nil
}

// Entry is one entry of a tree.
type Entry struct {
	Name   string
	Mode   uint32 // type and permission bits, as st_mode
	Uid    uint32
	Gid    uint32
	Size   int64 // regular files: content size
	Mtime  int64 // nanoseconds since the epoch
	Rdev   uint64
	Target string // symlinks
	Xattrs map[string][]byte
	// Object is the file object of a regular file, the tree of a
	// directory, Zero otherwise.
	Object Digest
	// Link, when not 0, names the inode of a non-directory with hard
	// links: every entry of a snapshot with the same Link is one file,
	// with Nlink names at the time of the snapshot.
	Link  uint64
	Nlink uint32
}

// Tree is a directory's entries, sorted by name with no duplicates.
type Tree struct {
	Entries []Entry
}

// Lookup returns the entry called name.
func (t *Tree) Lookup(name string) (*Entry, bool) {
	i := sort.Search(len(t.Entries), func(i int) bool { return t.Entries[i].Name >= name })
	if i < len(t.Entries) && t.Entries[i].Name == name {
		return &t.Entries[i], true
	}
	return nil, false
}

// EncodeTree encodes t. Entries must be sorted and named validly, so that one
// directory has exactly one encoding, and so one digest.
func EncodeTree(t *Tree) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte(byte(KindTree))
	links := false
	for _, e := range t.Entries {
		if e.Link != 0 || e.Nlink != 0 {
			if e.Link == 0 || e.Nlink < 2 || e.Mode&0o170000 == 0o040000 {
				return nil, fmt.Errorf("tree entry %q: link %d with %d names", e.Name, e.Link, e.Nlink)
			}
			links = true
		}
	}
	if links {
		b.WriteByte(versionLinks)
	} else {
		b.WriteByte(version)
	}
	var tmp []byte
	for i, e := range t.Entries {
		if e.Name == "" || e.Name == "." || e.Name == ".." || len(e.Name) > 255 || strings.ContainsAny(e.Name, "/\x00") {
			return nil, fmt.Errorf("tree entry name %q: invalid", e.Name)
		}
		if i > 0 && t.Entries[i-1].Name >= e.Name {
			return nil, fmt.Errorf("tree entries not sorted at %q", e.Name)
		}
		tmp = tmp[:0]
		tmp = appendString(tmp, e.Name)
		tmp = binary.AppendUvarint(tmp, uint64(e.Mode))
		tmp = binary.AppendUvarint(tmp, uint64(e.Uid))
		tmp = binary.AppendUvarint(tmp, uint64(e.Gid))
		tmp = binary.AppendVarint(tmp, e.Size)
		tmp = binary.AppendVarint(tmp, e.Mtime)
		tmp = binary.AppendUvarint(tmp, e.Rdev)
		tmp = appendString(tmp, e.Target)
		names := make([]string, 0, len(e.Xattrs))
		for k := range e.Xattrs {
			names = append(names, k)
		}
		sort.Strings(names)
		tmp = binary.AppendUvarint(tmp, uint64(len(names)))
		for _, k := range names {
			tmp = appendString(tmp, k)
			tmp = appendString(tmp, string(e.Xattrs[k]))
		}
		tmp = append(tmp, e.Object[:]...)
		if links {
			tmp = binary.AppendUvarint(tmp, e.Link)
			tmp = binary.AppendUvarint(tmp, uint64(e.Nlink))
		}
		b.Write(tmp)
	}
	return b.Bytes(), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// KindOf returns the kind of an encoded object.
func KindOf(encoded []byte) (Kind, error) {
	if len(encoded) < 2 {
		return 0, fmt.Errorf("object header: %w", ErrCorrupt)
	}
	switch k := Kind(encoded[0]); {
	case encoded[1] == version && (k == KindBlob || k == KindFile || k == KindTree):
		return k, nil
	case encoded[1] == versionLinks && k == KindTree:
		return k, nil
	case encoded[1] != version:
		return 0, fmt.Errorf("object header: version %d: %w", encoded[1], ErrCorrupt)
	}
	return 0, fmt.Errorf("object kind %q: %w", encoded[0], ErrCorrupt)
}

// Check returns the kind of encoded if it decodes whole, and an error
// wrapping ErrCorrupt if not: what a store checks before it keeps an
// object, so that nothing it holds fails to decode later. For a blob,
// which is most of what is stored, it is a look at the header and the
// length.
func Check(encoded []byte) (Kind, error) {
	k, err := KindOf(encoded)
	if err != nil {
		return 0, err
	}
	switch k {
	case KindBlob:
		_, err = DecodeBlob(encoded)
	case KindFile:
		_, err = DecodeFile(encoded)
	case KindTree:
		_, err = DecodeTree(encoded)
	}
	return k, err
}

// DecodeBlob returns a blob's content.
func DecodeBlob(encoded []byte) ([]byte, error) {
	if k, err := KindOf(encoded); err != nil || k != KindBlob {
		return nil, fmt.Errorf("not a blob: %w", ErrCorrupt)
	}
	if len(encoded)-2 > ChunkSize {
		return nil, fmt.Errorf("blob larger than a chunk: %w", ErrCorrupt)
	}
	return encoded[2:], nil
}

// DecodeFile decodes a file object.
func DecodeFile(encoded []byte) (*File, error) {
	if k, err := KindOf(encoded); err != nil || k != KindFile {
		return nil, fmt.Errorf("not a file: %w", ErrCorrupt)
	}
	r := encoded[2:]
	size, n := binary.Uvarint(r)
	if n <= 0 || size > 1<<62 {
		return nil, fmt.Errorf("file size: %w", ErrCorrupt)
	}
	r = r[n:]
	want := (size + ChunkSize - 1) / ChunkSize
	if uint64(len(r)) != want*uint64(len(Digest{})) {
		return nil, fmt.Errorf("file of %d bytes with %d bytes of chunk digests: %w", size, len(r), ErrCorrupt)
	}
	f := &File{Size: int64(size), Chunks: make([]Digest, want)}
	for i := range f.Chunks {
		copy(f.Chunks[i][:], r[i*len(Digest{}):])
	}
	return f, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = ErrCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = ErrCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	l := r.uvarint()
	if r.err != nil || l > uint64(len(r.b)) {
		r.err = ErrCorrupt
		return ""
	}
	s := string(r.b[:l])
	r.b = r.b[l:]
	return s
}

func (r *reader) uint32() uint32 {
	v := r.uvarint()
	if v > 1<<32-1 {
		r.err = ErrCorrupt
	}
	return uint32(v)
}

// DecodeTree decodes a tree object and checks that it is canonical: a
// tree that decodes re-encodes to the same bytes.
func DecodeTree(encoded []byte) (*Tree, error) {
	if k, err := KindOf(encoded); err != nil || k != KindTree {
		return nil, fmt.Errorf("not a tree: %w", ErrCorrupt)
	}
	r := &reader{b: encoded[2:]}
	t := &Tree{}
	for len(r.b) > 0 && r.err == nil {
		var e Entry
		e.Name = r.string()
		e.Mode = r.uint32()
		e.Uid = r.uint32()
		e.Gid = r.uint32()
		e.Size = r.varint()
		e.Mtime = r.varint()
		e.Rdev = r.uvarint()
		e.Target = r.string()
		nx := r.uvarint()
		if nx > 1<<16 {
			r.err = ErrCorrupt
		}
		for i := uint64(0); i < nx && r.err == nil; i++ {
			if e.Xattrs == nil {
				e.Xattrs = map[string][]byte{}
			}
			k := r.string()
			e.Xattrs[k] = []byte(r.string())
		}
		if r.err == nil && len(r.b) < len(Digest{}) {
			r.err = ErrCorrupt
		}
		if r.err != nil {
			break
		}
		copy(e.Object[:], r.b)
		r.b = r.b[len(Digest{}):]
		if encoded[1] == versionLinks {
			e.Link = r.uvarint()
			e.Nlink = r.uint32()
			if r.err != nil {
				break
			}
		}
		t.Entries = append(t.Entries, e)
	}
	if r.err != nil {
		return nil, fmt.Errorf("tree: %w", r.err)
	}
	again, err := EncodeTree(t)
	if err != nil || !bytes.Equal(again, encoded) {
		return nil, fmt.Errorf("tree not canonical: %w", ErrCorrupt)
	}
	return t, nil
}
