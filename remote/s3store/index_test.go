package s3store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/cowfs/cowfs/cow/object"
)

// indexOf is an index of pack over body (its entries' bytes as they lie
// in an index), with the checksum made right, as anyone who can write to
// the bucket can make it.
func indexOf(pack object.Digest, body []byte) []byte {
	b := append([]byte(indexMagic), pack[:]...)
	b = append(b, body...)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
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
	if es, err := decodeIndex(hex.EncodeToString(pack[:]), indexOf(pack, ok)); err != nil || len(es) != 2 || es[1].n != maxObject {
		t.Fatalf("a whole index: %v, %v", es, err)
	}
	for _, n := range []uint32{0, maxObject + 1, 1<<32 - 1} {
		body := append(entry(0, 10), entry(10, n)...)
		if _, err := decodeIndex(hex.EncodeToString(pack[:]), indexOf(pack, body)); !errors.Is(err, object.ErrCorrupt) {
			t.Errorf("an entry of %d bytes: %v; want ErrCorrupt", n, err)
		}
	}
}

// Whatever an index holds, decodeIndex refuses it or returns entries a
// reader can use, which encode back to the same index.
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
		es, err := decodeIndex(name, b)
		if err != nil {
			if !errors.Is(err, object.ErrCorrupt) {
				t.Fatalf("%v: not ErrCorrupt", err)
			}
			return
		}
		for _, e := range es {
			if e.n == 0 || e.n > maxObject {
				t.Fatalf("an entry of %d bytes read", e.n)
			}
		}
		if !bytes.Equal(encodeIndex(pack, es), b) {
			t.Fatal("index read does not encode back to itself")
		}
	})
}
