package object

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
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

// ChunkGroup is how many of a file's chunks after its first travel
// together: chunks 1 to ChunkGroup, then the next ChunkGroup, and so on. A
// sequential reader's read-ahead asks for them by these groups, and a
// bucket packs each group side by side, so that a group is one request
// (one GET of a range) however the two sides are built.
const ChunkGroup = 4

// ChunkGroupOf is the group chunk i of a file is in: 0 for the first
// chunk, which travels with its file object, then 1, 2, ...
func ChunkGroupOf(i int64) int64 { return (i + ChunkGroup - 1) / ChunkGroup }

// version is the encoding version, the second byte of every object.
const version = 1

// versionLinks is the version of a tree that has hard links: each entry
// then ends with its link group and link count. A tree without them is
// always version 1, so a directory keeps one encoding, and the digest it
// had before version 2 existed.
const versionLinks = 2

// EncodeBlob encodes file content of at most ChunkSize bytes.
func EncodeBlob(data []byte) ([]byte, error) {
	return AppendBlob(make([]byte, 0, 2+len(data)), data)
}

// AppendBlob appends the encoding of data, as EncodeBlob, to dst, so that
// a caller storing blob after blob can reuse one buffer.
func AppendBlob(dst, data []byte) ([]byte, error) {
	if len(data) > ChunkSize {
		return nil, fmt.Errorf("blob of %d bytes: more than a chunk", len(data))
	}
	dst = append(dst, byte(KindBlob), version)
	return append(dst, data...), nil
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
			if err := checkLink(&e); err != nil {
				return nil, err
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
	for i := range t.Entries {
		e := &t.Entries[i]
		if err := checkEntryName(e.Name); err != nil {
			return nil, err
		}
		if i > 0 && t.Entries[i-1].Name >= e.Name {
			return nil, fmt.Errorf("tree entries not sorted at %q", e.Name)
		}
		tmp = appendEntry(tmp[:0], e, links)
		b.Write(tmp)
	}
	return b.Bytes(), nil
}

// checkEntryName checks the name of a tree entry.
func checkEntryName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 255 || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("tree entry name %q: invalid", name)
	}
	return nil
}

// checkLink checks the link group of an entry that has one: a
// non-directory with at least two names.
func checkLink(e *Entry) error {
	if e.Link == 0 || e.Nlink < 2 || e.Mode&0o170000 == 0o040000 {
		return fmt.Errorf("tree entry %q: link %d with %d names", e.Name, e.Link, e.Nlink)
	}
	return nil
}

// appendEntry appends the encoding of e, an entry of a tree of version
// versionLinks if links, to b.
func appendEntry(b []byte, e *Entry, links bool) []byte {
	b = appendString(b, e.Name)
	b = binary.AppendUvarint(b, uint64(e.Mode))
	b = binary.AppendUvarint(b, uint64(e.Uid))
	b = binary.AppendUvarint(b, uint64(e.Gid))
	b = binary.AppendVarint(b, e.Size)
	b = binary.AppendVarint(b, e.Mtime)
	b = binary.AppendUvarint(b, e.Rdev)
	b = appendString(b, e.Target)
	b = binary.AppendUvarint(b, uint64(len(e.Xattrs)))
	if len(e.Xattrs) > 0 {
		names := make([]string, 0, len(e.Xattrs))
		for k := range e.Xattrs {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			b = appendString(b, k)
			b = appendString(b, string(e.Xattrs[k]))
		}
	}
	b = append(b, e.Object[:]...)
	if links {
		b = binary.AppendUvarint(b, e.Link)
		b = binary.AppendUvarint(b, uint64(e.Nlink))
	}
	return b
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
		err = eachEntry(encoded, func(*Entry) {})
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

// minEntrySize is the fewest bytes an entry of a tree is encoded in: a
// name of one byte and its length, a byte for each number and for the
// empty target and xattr count, and the object's digest.
const minEntrySize = 2 + 6 + 1 + 1 + len(Digest{})

// DecodeTree decodes a tree object and checks that it is canonical: a
// tree that decodes re-encodes to the same bytes.
func DecodeTree(encoded []byte) (*Tree, error) {
	// A mount decodes a tree at the first look into each directory. The
	// entries go first to a slice kept between calls, with room for as
	// many as the bytes could hold, so that they are not copied each
	// time it grows, and then to one of their exact number: the room, a
	// third more than a typical directory's, is not allocated (and
	// cleared, and faulted in) for every tree.
	sp := entryScratch.Get().(*[]Entry)
	es := *sp
	if n := len(encoded) / minEntrySize; cap(es) < n {
		es = make([]Entry, 0, n)
	}
	err := eachEntry(encoded, func(e *Entry) { es = append(es, *e) })
	var t *Tree
	if err == nil {
		t = &Tree{Entries: slices.Clone(es)}
	}
	clear(es) // nothing kept alive by the scratch
	if cap(es) <= maxScratchEntries {
		*sp = es[:0]
		entryScratch.Put(sp)
	}
	return t, err
}

// entryScratch holds DecodeTree's slices of entries, up to
// maxScratchEntries long: a directory bigger than that is rare enough to
// decode in memory of its own.
var entryScratch = sync.Pool{New: func() any { return new([]Entry) }}

const maxScratchEntries = 4096

// eachEntry decodes the entries of a tree object one at a time, checking
// each is what EncodeTree makes of it (valid, sorted, encoded minimally),
// and calls fn with each; e is reused for the next. One entry at a time,
// so that checking a tree (Check) costs no more memory than an entry.
func eachEntry(encoded []byte, fn func(e *Entry)) error {
	if k, err := KindOf(encoded); err != nil || k != KindTree {
		return fmt.Errorf("not a tree: %w", ErrCorrupt)
	}
	links := encoded[1] == versionLinks
	anyLink := false
	r := &reader{b: encoded[2:]}
	var e Entry
	var prev string
	var again []byte
	for i := 0; len(r.b) > 0; i++ {
		start := r.b
		e = Entry{}
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
		for j := uint64(0); j < nx && r.err == nil; j++ {
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
			return fmt.Errorf("tree: %w", r.err)
		}
		copy(e.Object[:], r.b)
		r.b = r.b[len(Digest{}):]
		if links {
			e.Link = r.uvarint()
			e.Nlink = r.uint32()
			if r.err != nil {
				return fmt.Errorf("tree: %w", r.err)
			}
			if e.Link != 0 || e.Nlink != 0 {
				if err := checkLink(&e); err != nil {
					return fmt.Errorf("%v: %w", err, ErrCorrupt)
				}
				anyLink = true
			}
		}
		if err := checkEntryName(e.Name); err != nil {
			return fmt.Errorf("%v: %w", err, ErrCorrupt)
		}
		if i > 0 && prev >= e.Name {
			return fmt.Errorf("tree not canonical: entries not sorted at %q: %w", e.Name, ErrCorrupt)
		}
		again = appendEntry(again[:0], &e, links)
		if !bytes.Equal(again, start[:len(start)-len(r.b)]) {
			return fmt.Errorf("tree not canonical at %q: %w", e.Name, ErrCorrupt)
		}
		prev = e.Name
		fn(&e)
	}
	if links && !anyLink {
		// A tree without links is always version 1.
		return fmt.Errorf("tree not canonical: version %d without links: %w", versionLinks, ErrCorrupt)
	}
	return nil
}
