// Package objecttest is the conformance suite of cowfs's object stores:
// every implementation of object.Getter (a machine's DirStore, a worker's
// remote.Cache, the gRPC remote.Client) and every object-storage backend
// runs Run, and passes it. A store is checked for the interfaces it has:
// Put where it is an object.Putter, Has where it is an object.Haser.
package objecttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// Subject is one store under test, fresh and empty.
type Subject struct {
	// Store is what is tested.
	Store object.Getter
	// Seed stores an object where Store finds it: for a store that takes
	// no Puts (a cache, a client), its master's store. Nil: Store's Put.
	Seed func(t *testing.T, encoded []byte) object.Digest
	// Damage changes the bytes stored as d, seeded before, where Store
	// reads them from (flips a byte on disk: DamageFile), so that a Get
	// of d must notice. Nil skips the damage tests.
	Damage func(t *testing.T, d object.Digest)
	// Unverified says Store's Get returns what it was given without
	// checking it against the digest, by design (remote.Client: the
	// cache over it checks): the damage tests are skipped.
	Unverified bool
}

// timeout bounds every call the suite makes to a store.
const timeout = 30 * time.Second

// Run runs the suite; open returns a fresh, empty store for each test, and
// registers with t.Cleanup whatever closes it.
func Run(t *testing.T, open func(t *testing.T) Subject) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s Subject)
	}{
		{"GetReturnsWhatWasStored", testGet},
		{"MissingIsNotFound", testMissing},
		{"DamagedIsNeverServed", testDamaged},
		{"PutRefusesUndecodable", testPutUndecodable},
		{"PutIsIdempotent", testPutIdempotent},
		{"ConcurrentPutsOfOneObject", testConcurrentPuts},
		{"ConcurrentGetsOfOneObject", testConcurrentGets},
		{"Has", testHas},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// Blob returns an encoded blob object of n random bytes.
func Blob(t testing.TB, n int) []byte {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	enc, err := object.EncodeBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// seed stores enc in s, through Seed or Put.
func seed(t *testing.T, s Subject, enc []byte) object.Digest {
	t.Helper()
	if s.Seed != nil {
		return s.Seed(t, enc)
	}
	p, ok := s.Store.(object.Putter)
	if !ok {
		t.Fatalf("%T takes no Puts and the subject has no Seed", s.Store)
	}
	d, err := p.Put(ctxFor(t), enc)
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	return d
}

func mustGet(t *testing.T, s Subject, d object.Digest, want []byte) {
	t.Helper()
	got, err := s.Store.Get(ctxFor(t), d)
	if err != nil {
		t.Fatalf("get %s: %v", d.Short(), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("get %s: %d bytes, not the %d stored", d.Short(), len(got), len(want))
	}
}

func testGet(t *testing.T, s Subject) {
	// An empty blob, a small one, and one of a whole chunk: the largest
	// object a file's data makes, which a remote sends in pieces.
	for _, n := range []int{0, 100, object.ChunkSize} {
		enc := Blob(t, n)
		d := seed(t, s, enc)
		if d != object.Sum(enc) {
			t.Fatalf("stored as %s, not its digest %s", d.Short(), object.Sum(enc).Short())
		}
		mustGet(t, s, d, enc)
	}
}

func testMissing(t *testing.T, s Subject) {
	d := object.Sum(Blob(t, 10))
	b, err := s.Store.Get(ctxFor(t), d)
	if !errors.Is(err, object.ErrNotFound) {
		t.Fatalf("get of a missing object: %d bytes, %v; want an error wrapping ErrNotFound", len(b), err)
	}
}

// testDamaged checks that damaged bytes never come out of Get: it either
// fails, or has the object's bytes again (a cache fetches it anew).
func testDamaged(t *testing.T, s Subject) {
	if s.Damage == nil || s.Unverified {
		t.Skip("the store under test cannot be damaged here, or does not verify by design")
	}
	enc := Blob(t, 4096)
	d := seed(t, s, enc)
	mustGet(t, s, d, enc)
	s.Damage(t, d)
	for range 2 {
		got, err := s.Store.Get(ctxFor(t), d)
		if err == nil && !bytes.Equal(got, enc) {
			t.Fatalf("get %s served damaged bytes (they hash to %s)", d.Short(), object.Sum(got).Short())
		}
		if err != nil && !errors.Is(err, object.ErrCorrupt) && !errors.Is(err, object.ErrNotFound) {
			t.Logf("get of a damaged object: %v", err)
		}
	}
}

func testPutUndecodable(t *testing.T, s Subject) {
	p, ok := s.Store.(object.Putter)
	if !ok {
		t.Skipf("%T takes no Puts", s.Store)
	}
	bad := append([]byte{'x', 0}, Blob(t, 10)...)
	if _, err := p.Put(ctxFor(t), bad); !errors.Is(err, object.ErrCorrupt) {
		t.Fatalf("put of an undecodable object: %v; want an error wrapping ErrCorrupt", err)
	}
	if _, err := s.Store.Get(ctxFor(t), object.Sum(bad)); !errors.Is(err, object.ErrNotFound) {
		t.Fatalf("get of a refused object: %v; want ErrNotFound", err)
	}
}

func testPutIdempotent(t *testing.T, s Subject) {
	p, ok := s.Store.(object.Putter)
	if !ok {
		t.Skipf("%T takes no Puts", s.Store)
	}
	enc := Blob(t, 1000)
	for i := range 3 {
		d, err := p.Put(ctxFor(t), enc)
		if err != nil || d != object.Sum(enc) {
			t.Fatalf("put #%d: %s, %v", i+1, d.Short(), err)
		}
	}
	mustGet(t, s, object.Sum(enc), enc)
}

func testConcurrentPuts(t *testing.T, s Subject) {
	p, ok := s.Store.(object.Putter)
	if !ok {
		t.Skipf("%T takes no Puts", s.Store)
	}
	enc := Blob(t, 64<<10)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range cap(errs) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := p.Put(ctxFor(t), enc)
			if err == nil && d != object.Sum(enc) {
				err = fmt.Errorf("stored as %s", d.Short())
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent put: %v", err)
		}
	}
	mustGet(t, s, object.Sum(enc), enc)
}

func testConcurrentGets(t *testing.T, s Subject) {
	enc := Blob(t, 256<<10)
	d := seed(t, s, enc)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range cap(errs) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.Store.Get(ctxFor(t), d)
			if err == nil && !bytes.Equal(got, enc) {
				err = fmt.Errorf("%d bytes, not the %d stored", len(got), len(enc))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent get: %v", err)
		}
	}
}

func testHas(t *testing.T, s Subject) {
	h, ok := s.Store.(object.Haser)
	if !ok {
		t.Skipf("%T has no Has", s.Store)
	}
	enc := Blob(t, 10)
	if ok, err := h.Has(ctxFor(t), object.Sum(enc)); err != nil || ok {
		t.Fatalf("has, before it was stored: %v, %v", ok, err)
	}
	d := seed(t, s, enc)
	if ok, err := h.Has(ctxFor(t), d); err != nil || !ok {
		t.Fatalf("has, once stored: %v, %v", ok, err)
	}
}

// DamageFile flips a byte in the middle of object d of the DirStore in
// dir, as bit rot would: in its own file, or in the pack that holds it.
func DamageFile(t testing.TB, dir string, d object.Digest) {
	t.Helper()
	store, err := object.OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, off, size, err := store.Locate(d)
	if err != nil {
		t.Fatal(err)
	}
	h := strings.TrimPrefix(d.String(), "sha256-")
	if p == filepath.Join(dir, h[:2], h[2:]) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x10
		// Objects are read-only: the damaged bytes go in place as a
		// new file.
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o400); err != nil {
			t.Fatal(err)
		}
		return
	}
	// A pack is read-only on disk too: its mode goes back after.
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o600)
	defer os.Chmod(p, fi.Mode().Perm())
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	at := off + size/2
	if _, err := f.ReadAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b[:], at); err != nil {
		t.Fatal(err)
	}
}
