package object

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
)

// mapSource is a Source holding the bytes of some objects, by digest.
type mapSource map[Digest][]byte

func (m mapSource) Object(_ context.Context, d Digest, _ Place) ([]byte, error) {
	if b, ok := m[d]; ok {
		return b, nil
	}
	return nil, ErrNotFound
}

func (m mapSource) String() string { return "test source" }

// Repair finds every damaged or missing object of a snapshot, also past a
// tree it cannot read, stores again what a source has the bytes of, and
// names with its paths what none has.
func TestRepair(t *testing.T) {
	ctx := context.Background()
	s, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	all := mapSource{}
	put := func(b []byte) Digest {
		t.Helper()
		d, err := s.Put(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		all[d] = b
		return d
	}
	var chunks []Digest
	for i := range 3 {
		b, _ := EncodeBlob(bytes.Repeat([]byte{byte('a' + i)}, ChunkSize))
		chunks = append(chunks, put(b))
	}
	file := func(cs ...Digest) Digest {
		b, _ := EncodeFile(&File{Size: int64(len(cs)) * ChunkSize, Chunks: cs})
		return put(b)
	}
	reg := func(name string, d Digest, n int) Entry {
		return Entry{Name: name, Mode: 0o100644, Size: int64(n) * ChunkSize, Object: d}
	}
	tree := func(es ...Entry) Digest {
		b, err := EncodeTree(&Tree{Entries: es})
		if err != nil {
			t.Fatal(err)
		}
		return put(b)
	}
	f1 := file(chunks[0], chunks[1])
	f2 := file(chunks[1], chunks[2])
	sub := tree(reg("f", f1, 2))
	other := tree(reg("h", file(chunks[2]), 1))
	root := tree(Entry{Name: "d", Mode: 0o040755, Object: sub}, reg("g", f2, 2), Entry{Name: "o", Mode: 0o040755, Object: other})

	flip := func(d Digest) {
		t.Helper()
		p := s.path(d)
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 1
		os.Chmod(p, 0o600)
		if err := os.WriteFile(p, b, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	check := func(sources []Source, want map[Digest]string) []*Damage {
		t.Helper()
		found, err := Repair(ctx, s, root, sources)
		if err != nil {
			t.Fatal(err)
		}
		got := map[Digest]string{}
		for _, dm := range found {
			got[dm.Object] = fmt.Sprintf("%s %v", dm.From, dm.Paths)
			if !errors.Is(dm.Err, ErrCorrupt) && !errors.Is(dm.Err, ErrNotFound) {
				t.Errorf("damage of %s: %v", dm.Object.Short(), dm.Err)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("repair found %v, want %v", got, want)
		}
		return found
	}

	check(nil, map[Digest]string{})

	// A chunk damaged, one missing, with a source that has them: both
	// stored again, and the snapshot verifies.
	flip(chunks[1])
	os.Remove(s.path(chunks[2]))
	check([]Source{mapSource{}, all}, map[Digest]string{
		chunks[1]: "test source [d/f]",
		chunks[2]: "test source [g]",
	})
	if probs, err := Verify(ctx, s, root); err != nil || len(probs) > 0 {
		t.Fatalf("after the repair: %v, %v", probs, err)
	}

	// No source has them: each is named with every path that uses it,
	// and a tree that cannot be read does not hide the rest.
	flip(chunks[1])
	flip(sub)
	os.Remove(s.path(chunks[2]))
	found := check([]Source{mapSource{}}, map[Digest]string{
		sub:       " [d]",
		chunks[1]: " [g]",
		chunks[2]: " [g o/h]",
	})
	if slices.ContainsFunc(found, (*Damage).Repaired) {
		t.Error("repaired with no source")
	}
	check([]Source{all}, map[Digest]string{
		sub:       "test source [d]",
		chunks[1]: "test source [d/f]",
		chunks[2]: "test source [g]",
	})
	check(nil, map[Digest]string{})
}
