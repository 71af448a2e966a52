package s3store

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/scan"
	"github.com/cowfs/cowfs/remote"
)

// PublishProgress is how far a publish got.
type PublishProgress struct {
	// Phase is "scanning", "listing", "uploading" or "done".
	Phase string `json:"phase"`
	// Objects the version reaches, and of them those the bucket lacked.
	Objects int64 `json:"objects,omitempty"`
	Upload  int64 `json:"upload,omitempty"`
	// Uploaded so far, and their bytes.
	Uploaded      int64 `json:"uploaded,omitempty"`
	UploadedBytes int64 `json:"uploaded_bytes,omitempty"`
}

// PublishOptions are a publish's knobs; the zero value is usable.
type PublishOptions struct {
	// Progress, if set, is called at each phase and as uploads finish,
	// from one goroutine at a time.
	Progress func(PublishProgress)
	// Concurrency is how many uploads run at once; 0: 16.
	Concurrency int
	// Source says where the version came from, in its key's body.
	Source string
	// PackMax is the largest object sent in a pack; 0: PackObjectMax;
	// below 0: none, every object loose (as before packs).
	PackMax int
}

// PublishResult is what a publish did.
type PublishResult struct {
	Version       object.Digest `json:"-"`
	VersionString string        `json:"version"`
	Files         int64         `json:"files"`
	Bytes         int64         `json:"bytes"`
	Objects       int64         `json:"objects"`
	Uploaded      int64         `json:"uploaded"`
	UploadedBytes int64         `json:"uploaded_bytes"`
	Took          time.Duration `json:"took_ns"`
}

// localPuts stores into a machine's store without an fsync per object:
// the local copy is a staging area, the bucket is what must be durable.
type localPuts struct{ *object.DirStore }

func (l localPuts) Put(ctx context.Context, b []byte) (object.Digest, error) {
	return l.PutCached(ctx, b)
}

// Publish scans dir into objects in local (the machine's store, a staging
// area, held against gc meanwhile), uploads those of the new version the
// bucket lacks, and then makes the version visible with one write
// (PutVersion), after every object it reaches is in the bucket. What the
// bucket has is found with one listing of objects/ (a page per thousand
// objects), not a request per object.
func Publish(ctx context.Context, dst *Store, local *object.DirStore, dir string, opts PublishOptions) (PublishResult, error) {
	start := time.Now()
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	report := func(p PublishProgress) {
		if opts.Progress != nil {
			opts.Progress(p)
		}
	}
	lo, err := lower.OpenDirStrict(dir)
	if err != nil {
		return PublishResult{}, fmt.Errorf("publish %s: %w", dir, err)
	}
	release, err := local.Hold(ctx)
	if err != nil {
		return PublishResult{}, err
	}
	defer release()

	report(PublishProgress{Phase: "scanning"})
	root, st, err := scan.Tree(ctx, lo, "", localPuts{local}, nil)
	if err != nil {
		return PublishResult{}, fmt.Errorf("scan %s: %w", dir, err)
	}
	if root.Mode&unix.S_IFMT != unix.S_IFDIR {
		return PublishResult{}, fmt.Errorf("publish %s: not a directory", dir)
	}
	v, err := remote.PutVersion(ctx, localPuts{local}, root)
	if err != nil {
		return PublishResult{}, fmt.Errorf("store version: %w", err)
	}
	reached, err := reachedBy(ctx, local, v)
	if err != nil {
		return PublishResult{}, err
	}

	report(PublishProgress{Phase: "listing", Objects: int64(len(reached.list))})
	// From the listing to the key, no gc of the bucket runs (locks).
	unlock, err := dst.lockForWrite(ctx)
	if err != nil {
		return PublishResult{}, err
	}
	defer unlock()
	prog, err := uploadMissing(ctx, dst, local, reached, opts.Concurrency, opts.PackMax, report)
	if err != nil {
		return PublishResult{}, err
	}

	// The one step that publishes, last: until it is written, no reader
	// finds the version, and once it is, every object it reaches is there.
	host, _ := os.Hostname()
	info := VersionInfo{Published: time.Now().UTC(), Files: st.Files, Bytes: st.Bytes, Source: host + ":" + dir}
	if err := dst.PutVersion(ctx, v, info); err != nil {
		return PublishResult{}, err
	}
	dst.mergeWritten(ctx)
	res := PublishResult{Version: v, VersionString: v.String(), Files: st.Files, Bytes: st.Bytes,
		Objects: int64(len(reached.list)), Uploaded: prog.Uploaded, UploadedBytes: prog.UploadedBytes, Took: time.Since(start)}
	prog.Phase, prog.Uploaded, prog.UploadedBytes = "done", res.Uploaded, res.UploadedBytes
	report(prog)
	return res, nil
}

// mountReads is how many of reachedBy's objects a mount reads before it
// serves: the version object and its root tree. They stay loose, so that
// a mount reads each with one GET of its own key while the pack indexes
// load beside them (LoadIndexes), not after that load.
const mountReads = 2

// uploadMissing lists objects/ once (a page per thousand objects, not a
// request per object) and the packs' indexes, and uploads those of
// reached the bucket lacks, read from local, concurrency at a time: each
// of at most PackObjectMax bytes into packs, in reached's order (a
// directory's objects together; trees in packs of their own), and the
// first chunk of each file right after its file object whatever its
// size, so that one ranged GET brings both to a reader who opens the
// file (Fetcher.GetManyFollow); the others loose. The first mountReads of reached are uploaded loose, also where a
// pack holds them already; packMax is PublishOptions.PackMax, below 0
// packing nothing. It returns the "uploading" progress with what was
// sent.
func uploadMissing(ctx context.Context, dst *Store, local object.Getter, reach reachedObjects, concurrency, packMax int, report func(PublishProgress)) (PublishProgress, error) {
	if packMax == 0 {
		packMax = PackObjectMax
	}
	reached := reach.list
	have := make(map[object.Digest]bool)
	haveLoose := make(map[object.Digest]bool)
	if err := dst.list(ctx, func(d object.Digest, loose bool) {
		have[d] = true
		haveLoose[d] = haveLoose[d] || loose
	}); err != nil {
		return PublishProgress{}, err
	}
	first := make(map[object.Digest]bool, mountReads)
	for _, d := range reached[:min(mountReads, len(reached))] {
		first[d] = true
	}
	var upload []object.Digest
	for _, d := range reached {
		if !have[d] || (first[d] && !haveLoose[d]) {
			upload = append(upload, d)
		}
	}
	prog := PublishProgress{Phase: "uploading", Objects: int64(len(reached)), Upload: int64(len(upload))}
	report(prog)
	var done, doneBytes atomic.Int64
	var progMu sync.Mutex
	sent := func(objects int, bytes int64) {
		p := prog
		p.Uploaded, p.UploadedBytes = done.Add(int64(objects)), doneBytes.Add(bytes)
		progMu.Lock()
		report(p)
		progMu.Unlock()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	packs := &packWriter{s: dst, g: g, ctx: gctx, sent: sent}
	for _, d := range upload {
		if gctx.Err() != nil {
			break
		}
		b, err := local.Get(gctx, d)
		if err != nil {
			g.Go(func() error { return fmt.Errorf("read %s from the local store: %w", d.Short(), err) })
			break
		}
		if grp, ok := reach.groups[d]; ok && packMax > 0 {
			if _, err := object.Check(b); err != nil {
				g.Go(func() error { return fmt.Errorf("object %s in the local store: %w", d.Short(), err) })
				break
			}
			packs.addGrouped(d, b, grp)
			continue
		}
		if packMax > 0 && (len(b) <= packMax || reach.leads[d]) && !first[d] {
			kind, err := object.Check(b)
			if err != nil {
				g.Go(func() error { return fmt.Errorf("object %s in the local store: %w", d.Short(), err) })
				break
			}
			packs.add(d, b, kind == object.KindTree)
			continue
		}
		g.Go(func() error {
			if _, err := dst.Put(gctx, b); err != nil {
				return err
			}
			sent(1, int64(len(b)))
			return nil
		})
	}
	packs.flush()
	if err := g.Wait(); err != nil {
		return PublishProgress{}, err
	}
	if err := packs.finish(ctx); err != nil {
		return PublishProgress{}, err
	}
	prog.Uploaded, prog.UploadedBytes = done.Load(), doneBytes.Load()
	return prog, nil
}

// recorder is a Getter that notes every object read through it.
type recorder struct {
	g    object.Getter
	seen map[object.Digest]bool
	list *[]object.Digest
}

func (r recorder) note(d object.Digest) {
	if !d.IsZero() && !r.seen[d] {
		r.seen[d] = true
		*r.list = append(*r.list, d)
	}
}

func (r recorder) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	r.note(d)
	return r.g.Get(ctx, d)
}

// reachedObjects is what a version reaches.
type reachedObjects struct {
	// list holds every object once: the version object first, its root
	// tree second (OpenVersion reads them in that order), then the rest
	// as a walk of the tree meets them, a file object right before its
	// chunks.
	list []object.Digest
	// leads are the chunks that come right after their file object in
	// list, each the first of its file.
	leads map[object.Digest]bool
	// groups places the other chunks a file reaches first (not reached
	// before, by it or another file) in their chunk group
	// (object.ChunkGroup): the chunks of one group come one after the
	// other in list.
	groups map[object.Digest]chunkGroup
}

// chunkGroup is one chunk group of one file.
type chunkGroup struct {
	// id numbers the groups of a version, one after the other.
	id int
	// bytes is about what the group's chunks weigh, encoded: the file's
	// bytes the group covers.
	bytes int64
	// batch says the group begins a sequential reader's batch of
	// packGroups groups, all of them the file's: it begins a pack.
	batch bool
}

// reachedBy lists every object version v reaches, v included.
func reachedBy(ctx context.Context, g object.Getter, v object.Digest) (reachedObjects, error) {
	var list []object.Digest
	leads := map[object.Digest]bool{}
	groups := map[object.Digest]chunkGroup{}
	id := 0
	r := recorder{g: g, seen: map[object.Digest]bool{}, list: &list}
	r.note(v)
	_, root, err := remote.OpenVersion(ctx, r, v)
	if err != nil {
		return reachedObjects{}, err
	}
	err = object.WalkEntries(ctx, r, root.Object, func(_ *object.Entry, f *object.File) error {
		if f == nil {
			return nil
		}
		last := int64(0)
		lastGroup := object.ChunkGroupOf(int64(len(f.Chunks)) - 1)
		for i, c := range f.Chunks {
			i := int64(i)
			switch {
			case c.IsZero() || r.seen[c]:
			case i == 0:
				leads[c] = true
			default:
				grp := object.ChunkGroupOf(i)
				if grp != last {
					id++
					last = grp
				}
				from := (grp-1)*object.ChunkGroup + 1
				groups[c] = chunkGroup{
					id:    id,
					bytes: min(object.ChunkGroup*object.ChunkSize, f.Size-from*object.ChunkSize),
					batch: (grp-1)%packGroups == 0 && grp+packGroups-1 <= lastGroup,
				}
			}
			r.note(c)
		}
		return nil
	})
	if err != nil {
		return reachedObjects{}, fmt.Errorf("version %s: %w", v.Short(), err)
	}
	return reachedObjects{list: list, leads: leads, groups: groups}, nil
}
