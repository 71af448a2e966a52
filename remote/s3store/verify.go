package s3store

import (
	"context"
	"errors"
	"fmt"
	"path"
	"syscall"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
)

// A VerifyRoot is a version or checkpoint for Verify to read.
type VerifyRoot struct {
	// Name says which in the problems found beneath it: "version
	// <short digest>", "checkpoint NAME".
	Name string
	// Version is the version object (a tree with one entry, root).
	Version object.Digest
}

// A VerifyProblem is an object a root reaches that the bucket does not
// hold, or holds damaged.
type VerifyProblem struct {
	Root string // the VerifyRoot's Name
	// Path is where the object is in the root's tree: "/" for the root
	// directory's tree, "" for the version object itself. An object
	// many paths share is named by the first that reached it.
	Path   string
	Object object.Digest
	Kind   string // "version", "tree", "file object", "chunk"
	Err    error  // wraps object.ErrNotFound or object.ErrCorrupt
}

// VerifyStats counts what Verify read: each object once, however many
// roots and paths reach it.
type VerifyStats struct {
	Trees, Files, Chunks int
	Bytes                int64
}

// verifyChunkBytes is how many bytes of chunks wait to be read together,
// and verifyChunks how many are asked for in one GetMany: enough for
// whole chunk groups and eight requests in flight, few enough that a
// progress report comes every few seconds.
const (
	verifyChunkBytes = 256 << 20
	verifyChunks     = 256
)

// objectBatch bounds the trees or file objects of one GetMany.
const objectBatch = 1024

// Verify reads every object the roots reach, chunks included, and checks
// each against its digest and its place (a chunk's length against its
// file's size), as cowfs verify does for a local snapshot. It reads each
// object once, a level of trees at a time, then the file objects beneath
// it, then their chunks, in GetMany calls (a ranged GET a run of a
// pack), and returns every problem found, not only the first: a damaged
// tree is one problem, and what is beneath it is not read. An error
// other than a missing or damaged object (the bucket unreachable, access
// denied) ends it. progress, if not nil, is called after each batch.
//
// Verify changes nothing in the bucket: a damaged object is reported,
// not removed, since the bucket is every worker's and the fix (a publish
// or push that uploads it again) is the operator's.
func (s *Store) Verify(ctx context.Context, roots []VerifyRoot, progress func(VerifyStats)) ([]VerifyProblem, VerifyStats, error) {
	// As gc does, and unlike a mount: what an index says of a pack
	// that is gone is left out from the start.
	if err := s.reloadPacks(ctx, false); err != nil {
		return nil, VerifyStats{}, err
	}
	v := &verifier{s: s, roots: roots, seen: map[object.Digest]bool{}, waiting: map[object.Digest]int{}, progress: progress}
	err := v.run(ctx)
	return v.probs, v.st, err
}

// A place is where an object is: the root that reached it first, and
// its path there.
type place struct {
	root int
	path string
}

// pending is an object to read, with where it is and, for a chunk, its
// index and the length its file's size gives it, and whether it came
// already, after its file object.
type pending struct {
	d     object.Digest
	at    place
	chunk int
	want  int64
	came  bool
}

type verifier struct {
	s        *Store
	roots    []VerifyRoot
	seen     map[object.Digest]bool
	probs    []VerifyProblem
	st       VerifyStats
	progress func(VerifyStats)
	// noData reads no chunk: they are only seen (reach).
	noData bool
	// chunks wait to be read together, up to verifyChunkBytes;
	// waiting finds one in chunks by its digest.
	chunks     []pending
	waiting    map[object.Digest]int
	chunkBytes int64
}

func (v *verifier) run(ctx context.Context) error {
	var versions, level []pending
	for i, r := range v.roots {
		if !v.seen[r.Version] {
			v.seen[r.Version] = true
			versions = append(versions, pending{d: r.Version, at: place{root: i}})
		}
	}
	// The version objects come in any order; their trees are taken in
	// the roots' (as below, a level's).
	tops := make([]object.Digest, len(versions))
	err := v.read(ctx, versions, "version", objectBatch, nil, func(i int, p pending, b []byte) error {
		root, err := remote.DecodeVersion(b)
		tops[i] = root.Object
		return err
	})
	for i, d := range tops {
		if !d.IsZero() && !v.seen[d] {
			v.seen[d] = true
			level = append(level, pending{d: d, at: place{root: versions[i].at.root, path: "/"}})
		}
	}
	for err == nil && len(level) > 0 {
		// The trees come in any order; what is beneath them is taken
		// in the level's, so that the first root and path to reach an
		// object name it, whatever order the bucket answers in.
		trees := make([]*object.Tree, len(level))
		err = v.read(ctx, level, "tree", objectBatch, nil, func(i int, p pending, b []byte) (err error) {
			trees[i], err = object.DecodeTree(b)
			return err
		})
		var next, files []pending
		for i, t := range trees {
			if t == nil {
				continue
			}
			v.st.Trees++
			p := level[i]
			for _, e := range t.Entries {
				if v.seen[e.Object] {
					continue
				}
				at := place{root: p.at.root, path: path.Join(p.at.path, e.Name)}
				switch e.Mode & syscall.S_IFMT {
				case syscall.S_IFDIR:
					next = append(next, pending{d: e.Object, at: at})
				case syscall.S_IFREG:
					if e.Size == 0 {
						continue
					}
					files = append(files, pending{d: e.Object, at: at})
				default:
					continue
				}
				v.seen[e.Object] = true
			}
		}
		for len(files) > 0 && err == nil {
			batch := files[:min(len(files), objectBatch)]
			files = files[len(batch):]
			// A file's first chunk, packed after its file object (as a
			// publish packs it), comes in the same ranged GET: its
			// place is known once its file object came, and a chunk
			// two files of the batch share is named by the first.
			owner := map[object.Digest]int{}
			fol := v.followed
			if v.noData {
				fol = nil
			}
			err = v.read(ctx, batch, "file object", objectBatch, fol, func(k int, p pending, b []byte) error {
				f, err := object.DecodeFile(b)
				if err != nil {
					return err
				}
				v.st.Files++
				for i, c := range f.Chunks {
					if c.IsZero() {
						continue
					}
					if v.noData {
						v.seen[c] = true
						continue
					}
					if o, ok := owner[c]; ok && o > k {
						owner[c] = k
						w := &v.chunks[v.waiting[c]]
						w.at, w.chunk = p.at, i
						continue
					}
					if v.seen[c] {
						continue
					}
					v.seen[c] = true
					owner[c] = k
					want := min(object.ChunkSize, f.Size-int64(i)*object.ChunkSize)
					v.waiting[c] = len(v.chunks)
					v.chunks = append(v.chunks, pending{d: c, at: p.at, chunk: i, want: want})
					v.chunkBytes += want
				}
				return nil
			})
			if err == nil && v.chunkBytes >= verifyChunkBytes {
				err = v.readChunks(ctx)
			}
		}
		level = next
	}
	if err == nil {
		err = v.readChunks(ctx)
	}
	return err
}

// readChunks reads the chunks waiting that did not come after their
// file objects.
func (v *verifier) readChunks(ctx context.Context) error {
	var chunks []pending
	for _, p := range v.chunks {
		if !p.came {
			chunks = append(chunks, p)
		}
	}
	v.chunks, v.chunkBytes = nil, 0
	clear(v.waiting)
	return v.read(ctx, chunks, "chunk", verifyChunks, nil, func(_ int, p pending, b []byte) error { return v.checkChunk(p, b) })
}

// followed checks a chunk that came after its file object, if it is one
// waiting to be read: fol of GetManyFollow, called one at a time.
func (v *verifier) followed(d object.Digest, b []byte) {
	i, ok := v.waiting[d]
	if !ok || v.chunks[i].came {
		return
	}
	if object.Sum(b) != d {
		// Read again where the indexes say, and reported as that read
		// finds it: a mount reads it from there.
		return
	}
	v.chunks[i].came = true
	v.st.Bytes += int64(len(b))
	if err := v.checkChunk(v.chunks[i], b); err != nil {
		v.note(v.chunks[i], "chunk", err)
	}
}

// checkChunk checks a chunk's length against its file's size.
func (v *verifier) checkChunk(p pending, b []byte) error {
	data, err := object.DecodeBlob(b)
	if err != nil {
		return err
	}
	if int64(len(data)) != p.want {
		return fmt.Errorf("holds %d bytes, its file's size gives it %d: %w", len(data), p.want, object.ErrCorrupt)
	}
	v.st.Chunks++
	return nil
}

// read fetches ps in batches of per, checks each against its digest and
// hands it to use with its index in ps, which returns what is wrong with
// it, if anything; with
// fol, the objects packed after file objects come too (GetManyFollow). A
// missing or damaged object is a problem; any other error ends the read.
func (v *verifier) read(ctx context.Context, ps []pending, kind string, per int, fol func(object.Digest, []byte), use func(i int, p pending, b []byte) error) error {
	for start := 0; start < len(ps); start += per {
		batch := ps[start:min(len(ps), start+per)]
		ds := make([]object.Digest, len(batch))
		for i, p := range batch {
			ds[i] = p.d
		}
		var fatal error
		// got and fol are called one at a time; b is lent until they
		// return.
		got := func(i int, b []byte, err error) {
			if err := v.check(batch[i], kind, b, err, func(p pending, b []byte) error { return use(start+i, p, b) }); err != nil && fatal == nil {
				fatal = err
			}
		}
		var err error
		if fol != nil {
			err = Fetcher{S: v.s}.GetManyFollowLent(ctx, ds, object.ChunkSize, got, fol)
		} else {
			err = Fetcher{S: v.s}.GetManyLent(ctx, ds, got)
		}
		if err == nil {
			err = fatal
		}
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			return err
		}
		if v.progress != nil {
			v.progress(v.st)
		}
	}
	return nil
}

// check checks what a read of p brought (b, or err), noting a missing or
// damaged object as a problem; any other error it returns.
func (v *verifier) check(p pending, kind string, b []byte, err error, use func(p pending, b []byte) error) error {
	if err == nil {
		v.st.Bytes += int64(len(b))
		if object.Sum(b) != p.d {
			err = fmt.Errorf("its bytes in %s do not hash to its digest: %w", v.s.keyOf(p.d), object.ErrCorrupt)
		} else {
			err = use(p, b)
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, object.ErrNotFound) || errors.Is(err, object.ErrCorrupt):
		v.note(p, kind, err)
		return nil
	}
	return fmt.Errorf("%s %s: %w", kind, p.d.Short(), err)
}

func (v *verifier) note(p pending, kind string, err error) {
	if kind == "chunk" {
		err = fmt.Errorf("chunk %d: %w", p.chunk, err)
	}
	v.probs = append(v.probs, VerifyProblem{Root: v.roots[p.at.root].Name, Path: p.at.path, Object: p.d, Kind: kind, Err: err})
}

// keyOf names the key object d is read from: its pack's, or its own.
func (s *Store) keyOf(d object.Digest) string {
	if pack, ok := s.packOf(d); ok {
		return s.packKey(pack)
	}
	return s.objectKey(d)
}

// reach adds to live every object root reaches (ReachablePresent's set if
// partial, Reachable's otherwise), reading what Verify reads but the
// chunks: each level of trees, then the file objects beneath it, in
// GetMany calls (a ranged GET a run of a pack). Read one at a time, as a
// walk asks for them, a gc made a request for every file of every
// version it keeps, which on an object store tens of milliseconds away
// is hours for a big bucket. What live holds already is not read. A
// missing or damaged object is an error, but with partial one that is
// missing, which is left out with what is beneath it.
func (s *Store) reach(ctx context.Context, root object.Digest, live map[object.Digest]bool, partial bool) error {
	v := &verifier{s: s, roots: []VerifyRoot{{Name: "version " + root.Short(), Version: root}}, seen: live, waiting: map[object.Digest]int{}, noData: true}
	if err := v.run(ctx); err != nil {
		return err
	}
	for _, p := range v.probs {
		if partial && errors.Is(p.Err, object.ErrNotFound) {
			continue
		}
		return fmt.Errorf("%s %s of %s: %w", p.Kind, p.Object.Short(), orRoot(p.Path), p.Err)
	}
	return nil
}

// orRoot names where a problem is: its path, or the version object.
func orRoot(path string) string {
	if path == "" {
		return "the version object"
	}
	return path
}
