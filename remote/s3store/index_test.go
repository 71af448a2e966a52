package s3store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/cowfs/cowfs/cow/object"
)

// encodeIndex is the index of the objects of one pack, as publishes wrote
// them before set indexes (decodePackIndex reads it).
func encodeIndex(pack object.Digest, es []indexEntryT) []byte {
	b := make([]byte, 0, len(indexMagic)+sha256.Size+len(es)*indexEntry+sha256.Size)
	b = append(b, indexMagic...)
	b = append(b, pack[:]...)
	for _, e := range es {
		b = append(b, e.d[:]...)
		b = binary.BigEndian.AppendUint32(b, e.off)
		b = binary.BigEndian.AppendUint32(b, e.n)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// indexOf is an index of pack over body (its entries' bytes as they lie
// in an index), with the checksum made right, as anyone who can write to
// the bucket can make it.
func indexOf(pack object.Digest, body []byte) []byte {
	b := append([]byte(indexMagic), pack[:]...)
	b = append(b, body...)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// setIndexOf is a set index of packs over body, its checksum made right,
// and its name.
func setIndexOf(packs []object.Digest, body []byte) (string, []byte) {
	b := binary.BigEndian.AppendUint32([]byte(setIndexMagic), uint32(len(packs)))
	for _, p := range packs {
		b = append(b, p[:]...)
	}
	b = append(b, body...)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), append(b, sum[:]...)
}

// An index is read only if each object it lists is one a reader may read
// whole into memory: a reader of an entry that claims 4 GiB would try to.
func TestDecodeIndexBounds(t *testing.T) {
	pack := object.Sum([]byte("pack"))
	entry := func(off, n uint32) []byte {
		d := object.Sum([]byte{byte(off), byte(n)})
		b := append([]byte(nil), d[:]...)
		b = binary.BigEndian.AppendUint32(b, off)
		return binary.BigEndian.AppendUint32(b, n)
	}
	ok := append(entry(0, 10), entry(10, maxObject)...)
	if ps, err := decodeIndex(hex.EncodeToString(pack[:]), indexOf(pack, ok)); err != nil || len(ps) != 1 || len(ps[0].es) != 2 || ps[0].es[1].n != maxObject {
		t.Fatalf("a whole index: %v, %v", ps, err)
	}
	for _, n := range []uint32{0, maxObject + 1, 1<<32 - 1} {
		body := append(entry(0, 10), entry(10, n)...)
		if _, err := decodeIndex(hex.EncodeToString(pack[:]), indexOf(pack, body)); !errors.Is(err, object.ErrCorrupt) {
			t.Errorf("an entry of %d bytes: %v; want ErrCorrupt", n, err)
		}
	}
}

// A set index is read only if it is the one its name says, names each
// pack once, and lists objects a reader may read whole, pack by pack in
// offset order, each in a pack it names.
func TestDecodeSetIndex(t *testing.T) {
	p1, p2 := object.Sum([]byte("pack 1")), object.Sum([]byte("pack 2"))
	entry := func(pack, off, n uint32) []byte {
		d := object.Sum([]byte{byte(pack), byte(off), byte(n)})
		b := append([]byte(nil), d[:]...)
		b = binary.BigEndian.AppendUint32(b, pack)
		b = binary.BigEndian.AppendUint32(b, off)
		return binary.BigEndian.AppendUint32(b, n)
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	name, b := setIndexOf([]object.Digest{p1, p2}, cat(entry(0, 0, 10), entry(0, 10, maxObject), entry(1, 0, 5)))
	ps, err := decodeIndex(name, b)
	if err != nil || len(ps) != 2 || ps[0].pack != hex.EncodeToString(p1[:]) || len(ps[0].es) != 2 || len(ps[1].es) != 1 || ps[1].es[0].n != 5 {
		t.Fatalf("a whole index: %+v, %v", ps, err)
	}
	if again, enc := encodeSetIndex(ps); again != name || !bytes.Equal(enc, b) {
		t.Error("the index read does not encode back to itself")
	}
	if _, err := decodeIndex(hex.EncodeToString(p1[:]), b); !errors.Is(err, object.ErrCorrupt) {
		t.Errorf("an index under another name: %v; want ErrCorrupt", err)
	}
	newer := append([]byte("cowfsix3"), b[len(setIndexMagic):]...)
	if _, err := decodeIndex(name, newer); err == nil || errors.Is(err, object.ErrCorrupt) || !strings.Contains(err.Error(), "upgrade cowfs") {
		t.Errorf("an index of a newer format: %v; want an error that says to upgrade, not damage", err)
	}
	for what, c := range map[string]struct {
		packs []object.Digest
		body  []byte
	}{
		"no pack":                 {nil, nil},
		"a pack named twice":      {[]object.Digest{p1, p1}, entry(0, 0, 10)},
		"an object of no pack":    {[]object.Digest{p1}, entry(1, 0, 10)},
		"an object of 0 bytes":    {[]object.Digest{p1}, entry(0, 0, 0)},
		"an object over the most": {[]object.Digest{p1}, entry(0, 0, maxObject+1)},
		"offsets out of order":    {[]object.Digest{p1}, cat(entry(0, 10, 10), entry(0, 0, 10))},
		"an offset twice":         {[]object.Digest{p1}, cat(entry(0, 0, 10), entry(0, 0, 10))},
		"packs out of order":      {[]object.Digest{p1, p2}, cat(entry(1, 0, 10), entry(0, 0, 10))},
		"a cut entry":             {[]object.Digest{p1}, entry(0, 0, 10)[:40]},
	} {
		name, b := setIndexOf(c.packs, c.body)
		if _, err := decodeIndex(name, b); !errors.Is(err, object.ErrCorrupt) {
			t.Errorf("%s: %v; want ErrCorrupt", what, err)
		}
	}
}

// Whatever an index of one pack holds, decodeIndex refuses it or returns
// entries a reader can use, which encode back to the same index.
func FuzzDecodeIndex(f *testing.F) {
	pack := object.Sum([]byte("pack"))
	name := hex.EncodeToString(pack[:])
	f.Add(make([]byte, indexEntry), false)
	f.Add(bytes.Repeat([]byte{0xff}, indexEntry), false)
	f.Add([]byte("short"), true)
	f.Fuzz(func(t *testing.T, body []byte, raw bool) {
		b := indexOf(pack, body)
		if raw {
			b = body // checksum and all as they come
		}
		ps, err := decodeIndex(name, b)
		if err != nil {
			if !errors.Is(err, object.ErrCorrupt) {
				t.Fatalf("%v: not ErrCorrupt", err)
			}
			return
		}
		if len(ps) != 1 || ps[0].pack != name {
			t.Fatalf("an index of pack %s read as %d packs", name, len(ps))
		}
		for _, e := range ps[0].es {
			if e.n == 0 || e.n > maxObject {
				t.Fatalf("an entry of %d bytes read", e.n)
			}
		}
		if !bytes.Equal(encodeIndex(pack, ps[0].es), b) {
			t.Fatal("index read does not encode back to itself")
		}
	})
}

// Whatever a set index holds, decodeIndex refuses it or returns packs
// and entries a reader can use, which encode back to the same index.
func FuzzDecodeSetIndex(f *testing.F) {
	f.Add(uint8(1), make([]byte, setIndexEntry), false)
	f.Add(uint8(2), bytes.Repeat([]byte{0}, 2*setIndexEntry), false)
	f.Add(uint8(0), []byte("short"), true)
	f.Fuzz(func(t *testing.T, npacks uint8, body []byte, raw bool) {
		packs := make([]object.Digest, npacks)
		for i := range packs {
			packs[i] = object.Sum([]byte{byte(i)})
		}
		name, b := setIndexOf(packs, body)
		if raw {
			b = append([]byte(setIndexMagic), body...)
			if len(b) >= sha256.Size {
				name = hex.EncodeToString(b[len(b)-sha256.Size:])
			}
		}
		ps, err := decodeIndex(name, b)
		if err != nil {
			if !errors.Is(err, object.ErrCorrupt) {
				t.Fatalf("%v: not ErrCorrupt", err)
			}
			return
		}
		for _, po := range ps {
			for _, e := range po.es {
				if e.n == 0 || e.n > maxObject {
					t.Fatalf("an entry of %d bytes read", e.n)
				}
			}
		}
		if again, enc := encodeSetIndex(ps); again != name || !bytes.Equal(enc, b) {
			t.Fatal("index read does not encode back to itself")
		}
	})
}
