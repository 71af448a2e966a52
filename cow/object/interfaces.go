package object

import (
	"context"
	"time"
)

// The object store's interfaces, declared once, here, and used by every
// package that reads or writes objects. Each is small: code asks for the
// methods it calls. A capability that only some stores have (freshening,
// counting removals, read-ahead) is a named interface of its own, which a
// consumer asserts by name.
//
// Implementations: DirStore (a machine's store) is a Store and every
// optional capability but Prefetcher; remote.Cache (a worker's view of a
// master) is a Getter and a Prefetcher. remote.Client has Get's signature
// but not its contract: its Get is unverified by design (the cache over it
// checks what it fetches, once), and it asks its master Has for many
// objects at once. Package objecttest is the suite each of them runs; a
// new backend is done when it passes.

// Getter returns encoded objects, verified: what Get returns hashes to d.
// A missing object is an error wrapping ErrNotFound, damaged bytes one
// wrapping ErrCorrupt (or the store fetches them again, and returns them
// whole).
type Getter interface {
	Get(ctx context.Context, d Digest) ([]byte, error)
}

// Putter stores an encoded object durably and returns its digest. Storing
// an object the store has is a no-op; an object that does not decode
// (Check) is refused with an error wrapping ErrCorrupt, and nothing is
// stored. Put keeps nothing of encoded once it returns: the caller may
// reuse it.
type Putter interface {
	Put(ctx context.Context, encoded []byte) (Digest, error)
}

// Haser reports whether a store holds an object.
type Haser interface {
	Has(ctx context.Context, d Digest) (bool, error)
}

// GetPutter reads back what it stores: a capture reads file objects it
// stored earlier, a repair re-reads the objects it repairs.
type GetPutter interface {
	Getter
	Putter
}

// Store is a whole object store: what a machine's DirStore offers, and
// what an object-storage backend implements; objecttest.Run checks one.
type Store interface {
	Getter
	Putter
	Haser
}

// Freshener marks an object as just used and reports whether the store
// holds it, in one call: a scan takes a cached hit only when the store
// still holds the object, and keeps it from a sweep running meanwhile.
type Freshener interface {
	Freshen(d Digest) bool
}

// RemovalCounter counts the objects that ever left a store
// (DirStore.Removals), and names the store: what trusted objects to be
// there (a KnownSet) trusts them for as long as the count stays.
type RemovalCounter interface {
	Removals() (uint64, error)
	Dir() string
}

// Prefetcher is a Getter that can start fetching objects before they are
// asked for (a remote cache), as one batch, without waiting.
type Prefetcher interface {
	Prefetch(ds []Digest)
}

// DirPrefetcher is a Getter told of a directory when it is first looked
// into (a remote cache), so that it can fetch in the background what its
// entries lead to once a crawl of them begins. It never waits, and what
// it fetches is verified as any Get's.
type DirPrefetcher interface {
	PrefetchDir(t *Tree)
}

// PrefetchProgress is how far fetching every object of a version got
// (remote.Cache.PrefetchVersion); a mount's status carries it as is.
type PrefetchProgress struct {
	// State is "listing" (fetching trees and file objects), "fetching"
	// (chunks), "done" or "failed".
	State      string    `json:"state"`
	Files      int64     `json:"files"`
	Chunks     int64     `json:"chunks"`
	ChunksDone int64     `json:"chunks_done"`
	Bytes      int64     `json:"bytes"`
	BytesDone  int64     `json:"bytes_done"`
	Error      string    `json:"error,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

var (
	_ Store          = (*DirStore)(nil)
	_ Freshener      = (*DirStore)(nil)
	_ RemovalCounter = (*DirStore)(nil)
)
