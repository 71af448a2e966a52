package s3store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
)

// Locks keep gc apart from publishes and pushes, which reuse objects they
// listed without writing them again: a gc that removed such an object
// between their listing and their key would break the version. Each
// writes locks/<kind>-<random> first and then lists the other kind's
// locks (the store reads its own writes, as S3 does since 2020), so of a
// gc and a writer running at once at least one sees the other: a writer
// that sees a gc waits, holding its lock, for it to end; a gc that sees a
// writer ends without removing anything. A lock older than staleLock is a crashed
// process's and is ignored.
const (
	locksDir  = "locks/"
	lockGC    = "gc-"
	lockWrite = "write-"
	staleLock = 6 * time.Hour
)

// ErrWriterRunning: gc found a publish or push in progress.
var ErrWriterRunning = errors.New("a publish or push to the bucket is in progress")

type lockInfo struct {
	Host    string    `json:"host"`
	Pid     int       `json:"pid"`
	Started time.Time `json:"started"`
}

// lock writes a lock of kind and returns its key.
func (s *Store) lock(ctx context.Context, kind string) (string, error) {
	var r [8]byte
	rand.Read(r[:])
	host, _ := os.Hostname()
	b, _ := json.Marshal(lockInfo{Host: host, Pid: os.Getpid(), Started: time.Now().UTC()})
	key := s.key(locksDir + kind + hex.EncodeToString(r[:]))
	if err := s.putKey(ctx, key, b); err != nil {
		return "", fmt.Errorf("lock: %w", err)
	}
	return key, nil
}

// unlock removes a lock, with a context of its own: the caller's may
// have ended.
func (s *Store) unlock(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	if err := s.deleteKey(ctx, key); err != nil {
		s.cfg.Log.Warn("could not remove a lock; it is ignored once stale", "key", key, "err", err)
	}
}

// liveLocks returns how many locks of kind younger than staleLock there
// are, besides own.
func (s *Store) liveLocks(ctx context.Context, kind, own string) (int, error) {
	n := 0
	err := s.listObjects(ctx, locksDir+kind, func(key string, mod time.Time) bool {
		if s.key(locksDir+kind+key) != own && time.Since(mod) < staleLock {
			n++
		}
		return true
	})
	return n, err
}

// lockForWrite takes a writer's lock and waits while a gc that may not
// have seen it runs; it returns what releases the lock. It keeps its
// lock while it waits: a gc that starts meanwhile sees it and ends, so a
// writer never waits for more than the gcs already running.
func (s *Store) lockForWrite(ctx context.Context) (func(), error) {
	key, err := s.lock(ctx, lockWrite)
	if err != nil {
		return nil, err
	}
	if err := s.WaitGC(ctx); err != nil {
		s.unlock(key)
		return nil, err
	}
	return func() { s.unlock(key) }, nil
}

func (s *Store) deleteKey(ctx context.Context, key string) error {
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)})
	if err != nil {
		return s.wrap("delete", key, err)
	}
	return nil
}

// listObjects is listKeys with each key's time of last change.
func (s *Store) listObjects(ctx context.Context, rel string, fn func(key string, mod time.Time) bool) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(s.key(rel))}
	for {
		pctx, cancel := s.callCtx(ctx)
		s.lists.Add(1)
		out, err := s.client.ListObjectsV2(pctx, in)
		cancel()
		if err != nil {
			return s.wrap("list", s.key(rel), err)
		}
		for _, o := range out.Contents {
			if !fn(strings.TrimPrefix(aws.ToString(o.Key), s.key(rel)), aws.ToTime(o.LastModified)) {
				return nil
			}
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			return nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}

// GCStats is what a gc found and did.
type GCStats struct {
	// Versions counts the versions kept; of them VersionsLeased were
	// kept beyond KeepVersions for a mount's lease, VersionsYoung for
	// being superseded less than Grace ago. VersionsRemoved counts the
	// versions whose keys were removed.
	Versions        int `json:"versions"`
	VersionsLeased  int `json:"versions_leased"`
	VersionsYoung   int `json:"versions_young"`
	VersionsRemoved int `json:"versions_removed"`
	Checkpoints     int `json:"checkpoints"`
	Live            int `json:"live"`
	Removed         int `json:"removed"`
	// Packs counts the packs kept for holding a reached object, and
	// PacksRemoved those removed. IndexesRewritten counts the indexes
	// that named a pack removed and others kept, written anew without it.
	Packs            int `json:"packs"`
	PacksRemoved     int `json:"packs_removed"`
	IndexesRewritten int `json:"indexes_rewritten"`
	// IndexesMerged counts the indexes of few objects removed once what
	// they named was written into fewer (mergeIndexes).
	IndexesMerged int `json:"indexes_merged"`
	// PacksRepacked counts the packs more dead than live whose live
	// objects were written into new packs, and which were then removed;
	// RepackedBytes what those new packs hold, DeadBytes what went with
	// the old ones.
	PacksRepacked int   `json:"packs_repacked"`
	RepackedBytes int64 `json:"repacked_bytes"`
	DeadBytes     int64 `json:"dead_bytes"`
	// Young counts unreached objects and packs kept for being younger
	// than grace.
	Young int `json:"young"`
	// TracesRemoved counts the traces removed for not being put for
	// traceAge (decision 0070).
	TracesRemoved int  `json:"traces_removed"`
	DryRun        bool `json:"dry_run"`
}

// GCOptions says what a gc keeps.
type GCOptions struct {
	// Grace: unreached objects and packs younger than this are kept, and
	// so is a version superseded less than this ago (a mount that
	// resolved it as the newest may not have put its lease yet).
	Grace time.Duration
	// KeepVersions is how many of the newest versions are kept; 0
	// keeps all. An older one is removed unless a lease holds it or it
	// was superseded less than Grace ago.
	KeepVersions int
	// DryRun only counts.
	DryRun bool
}

// versionKey is a version's key in the listing: its name under
// versionsDir and when it was written.
type versionKey struct {
	Version
	name string
	mod  time.Time
}

// versionKeys returns the published versions' keys, newest first.
func (s *Store) versionKeys(ctx context.Context) ([]versionKey, error) {
	var ks []versionKey
	err := s.listObjects(ctx, versionsDir, func(name string, mod time.Time) bool {
		if v, ok := parseVersionName(name); ok {
			ks = append(ks, versionKey{Version: v, name: name, mod: mod})
		}
		return true
	})
	return ks, err
}

// retain returns the keys of the versions opts does not keep, of keys
// (newest first), and counts what it keeps in st. A version is
// superseded when the first key newer than it was written. A version
// published more than once (the same tree again, a rollback) counts
// once against opts.KeepVersions, and its older keys stay while it does.
func retain(keys []versionKey, leased map[object.Digest]int, opts GCOptions, start time.Time, st *GCStats) map[string]bool {
	drop := map[string]bool{}
	var superseded time.Time
	kept := map[object.Digest]bool{}
	for i, k := range keys {
		switch {
		case opts.KeepVersions == 0 || kept[k.Digest] || len(kept) < opts.KeepVersions:
			kept[k.Digest] = true
			st.Versions++
		case leased[k.Digest] > 0:
			st.Versions++
			st.VersionsLeased++
		case start.Sub(superseded) < opts.Grace:
			st.Versions++
			st.VersionsYoung++
		default:
			drop[k.name] = true
			st.VersionsRemoved++
		}
		if i == 0 || k.mod.Before(superseded) {
			superseded = k.mod
		}
	}
	return drop
}

// GC removes the objects no kept version, no checkpoint and no mount's
// lease reaches, except those younger than opts.Grace, after the keys of
// the versions opts does not keep. It runs only while no publish or
// push does (locks), and reads every kept version and checkpoint whole
// first: one it cannot read whole stops it before anything is removed,
// as does an index it cannot read. A pack is kept whole while any object in it is
// reached and no more than half its bytes are dead (an object in two
// packs is counted live in one); one more dead than live, older than
// the grace, is repacked: its live objects are written into new packs,
// with their index, and it is then removed as one with nothing reached
// is, older than the grace: after its indexes are, or written anew
// without it, so that no index names a missing pack.
func (s *Store) GC(ctx context.Context, opts GCOptions) (GCStats, error) {
	if opts.KeepVersions < 0 {
		return GCStats{}, fmt.Errorf("keep versions %d: must not be negative", opts.KeepVersions)
	}
	grace, dryRun := opts.Grace, opts.DryRun
	st := GCStats{DryRun: dryRun}
	key, err := s.lock(ctx, lockGC)
	if err != nil {
		return st, err
	}
	defer s.unlock(key)
	if n, err := s.liveLocks(ctx, lockWrite, ""); err != nil {
		return st, err
	} else if n > 0 {
		return st, fmt.Errorf("%s: %w (%d): nothing removed; run gc again later", s.URL(), ErrWriterRunning, n)
	}
	// Objects first: one written after this listing is not removed,
	// whatever reaches it.
	start := time.Now()
	mods := map[object.Digest]time.Time{}
	if err := s.listObjects(ctx, objectsDir, func(name string, mod time.Time) bool {
		if d, err := object.ParseDigest("sha256-" + name); err == nil {
			mods[d] = mod
		}
		return true
	}); err != nil {
		return st, err
	}
	packMods := map[string]time.Time{}
	if err := s.listObjects(ctx, packsDir, func(name string, mod time.Time) bool {
		packMods[name] = mod
		return true
	}); err != nil {
		return st, err
	}
	if err := s.reloadPacks(ctx, true); err != nil {
		return st, fmt.Errorf("%w: nothing removed", err)
	}
	live := map[object.Digest]bool{}
	keys, err := s.versionKeys(ctx)
	if err != nil {
		return st, err
	}
	leased, err := s.leased(ctx, start)
	if err != nil {
		return st, err
	}
	drop := retain(keys, leased, opts, start, &st)
	for _, k := range keys {
		if drop[k.name] {
			continue
		}
		if err := s.reach(ctx, k.Digest, live, false); err != nil {
			return st, fmt.Errorf("version %s: %w: nothing removed", k.Digest.Short(), err)
		}
	}
	// A lease may hold a version no key names any more (one dropped by
	// a gc that ran as the mount started, or one mounted by digest):
	// what of it is left stays.
	for d := range leased {
		if err := s.reach(ctx, d, live, true); err != nil {
			return st, fmt.Errorf("version %s, held by a lease: %w: nothing removed", d.Short(), err)
		}
	}
	names, err := s.Checkpoints(ctx)
	if err != nil {
		return st, err
	}
	for _, name := range names {
		v, err := s.Checkpoint(ctx, name)
		if errors.Is(err, refs.ErrNotFound) {
			continue // removed since the listing
		}
		if err == nil {
			err = s.reach(ctx, v, live, false)
		}
		if err != nil {
			return st, fmt.Errorf("checkpoint %s: %w: nothing removed", name, err)
		}
		st.Checkpoints++
	}
	// A version's key goes before what it reaches: a gc stopped in
	// between leaves objects nothing names, never a version that names
	// missing objects.
	for _, k := range keys {
		if !drop[k.name] || opts.DryRun {
			continue
		}
		if err := s.deleteKey(ctx, s.key(versionsDir+k.name)); err != nil {
			return st, err
		}
	}
	for d, mod := range mods {
		switch {
		case live[d]:
			st.Live++
		case start.Sub(mod) < grace:
			st.Young++
		case dryRun:
			st.Removed++
		default:
			if err := s.deleteKey(ctx, s.objectKey(d)); err != nil {
				return st, err
			}
			st.Removed++
		}
	}
	if err := s.gcPacks(ctx, &st, live, packMods, start, grace); err != nil {
		return st, err
	}
	return st, s.gcTraces(ctx, &st, start, dryRun)
}

// gcPacks removes the packs nothing reached holds, repacks those more
// dead than live (repack), and removes the indexes of packs that are
// gone: an index that names packs kept too is written anew without the
// others, before it is removed. Indexes go before
// packs: one that stopped in between leaves packs no index names, which
// nothing reaches, and the next gc removes them.
func (s *Store) gcPacks(ctx context.Context, st *GCStats, live map[object.Digest]bool, packMods map[string]time.Time, start time.Time, grace time.Duration) error {
	s.packs.mu.Lock()
	indexes := maps.Clone(s.packs.indexes)
	byPack := maps.Clone(s.packs.byPack)
	s.packs.mu.Unlock()
	// An object in two packs (racing publishers, a repack that stopped)
	// is live in one of them, the first by name: the other may then go,
	// and a reader that placed the object there finds it gone and looks
	// again.
	owner := map[object.Digest]string{}
	for pack := range packMods {
		for _, e := range byPack[pack] {
			if o, ok := owner[e.d]; live[e.d] && (!ok || pack < o) {
				owner[e.d] = pack
			}
		}
	}
	liveIn := func(pack string, d object.Digest) bool { return owner[d] == pack }
	gone := map[string]bool{}
	var repack []string
	var repackLive, repackDead int64
	for pack, mod := range packMods {
		var liveBytes, deadBytes int64
		for _, e := range byPack[pack] {
			if liveIn(pack, e.d) {
				liveBytes += int64(e.n)
			} else {
				deadBytes += int64(e.n)
			}
		}
		switch {
		case liveBytes > 0 && (deadBytes <= liveBytes || start.Sub(mod) < grace):
			st.Packs++
		case liveBytes > 0:
			repack = append(repack, pack)
			repackLive += liveBytes
			repackDead += deadBytes
		case start.Sub(mod) < grace:
			st.Young++
		case st.DryRun:
			st.PacksRemoved++
		default:
			gone[pack] = true
		}
	}
	if st.DryRun {
		st.PacksRepacked, st.RepackedBytes, st.DeadBytes = len(repack), repackLive, repackDead
		st.Packs += len(repack)
		st.IndexesMerged = len(indexesToMerge(indexes, func(pack string) bool {
			_, listed := packMods[pack]
			return listed && !gone[pack]
		}, gcMerge))
		return nil
	}
	if err := s.repack(ctx, st, repack, byPack, liveIn, gone); err != nil {
		return err
	}
	for name, ps := range indexes {
		keep := slices.DeleteFunc(slices.Clone(ps), func(po packObjects) bool {
			_, listed := packMods[po.pack]
			return !listed || gone[po.pack]
		})
		if len(keep) == len(ps) {
			continue
		}
		if len(keep) > 0 {
			if _, err := s.putIndex(ctx, keep); err != nil {
				return err
			}
			st.IndexesRewritten++
		}
		if err := s.deleteKey(ctx, s.indexKey(name)); err != nil {
			return err
		}
		s.forgetIndex(name)
	}
	// Every index now names only packs listed or just written (a
	// repack's), and those gone (removed, or repacked) are yet to go.
	merged, err := s.mergeIndexes(ctx, func(pack string) bool { return !gone[pack] }, gcMerge)
	st.IndexesMerged += merged
	if err != nil {
		return err
	}
	for pack := range gone {
		s.forgetPack(pack)
		if err := s.deleteKey(ctx, s.packKey(pack)); err != nil {
			return err
		}
		st.PacksRemoved++
	}
	return nil
}

// indexesMergeMin is how many indexes of few objects (indexesToMerge)
// gc leaves as they are: a reader reads eight at a time, so that many
// cost it one round trip.
const indexesMergeMin = 8

// writerMergeMin is how many a publish or a push leaves (mergeWritten):
// eight of a reader's round trips between gcs, where each merge
// rewrites the indexes of few objects (under half of indexObjectsMax,
// 1.4 MB), once every so many writes. A variable for tests.
var writerMergeMin = 64

// A mergeRule says which indexes of few objects are merged: all of
// them once there are more than min, and with whole, of those only the
// ones all of whose packs are kept.
type mergeRule struct {
	min   int
	whole bool
}

var gcMerge = mergeRule{min: indexesMergeMin}

// indexesToMerge returns, by name, the indexes of indexes that name
// fewer than half of indexObjectsMax objects of packs kept, if there are
// more than rule.min of them, else none. With rule.whole, an index that
// names a pack not kept is left out (a writer's merge: mergeWritten).
// Half, not all: a merge fills an index with whole packs until the next
// would not fit, so what it writes falls short of indexObjectsMax by up
// to a pack's objects; counted as few, those indexes would be merged
// again by every gc, each time cut differently, and every worker would
// read them all again.
func indexesToMerge(indexes map[string][]packObjects, kept func(pack string) bool, rule mergeRule) []string {
	var small []string
	for name, ps := range indexes {
		n := 0
		all := true
		for _, po := range ps {
			if kept(po.pack) {
				n += len(po.es)
			} else {
				all = false
			}
		}
		if n < indexObjectsMax/2 && (all || !rule.whole) {
			small = append(small, name)
		}
	}
	if len(small) <= rule.min {
		return nil
	}
	slices.Sort(small)
	return small
}

// mergeIndexes writes the indexes indexesToMerge finds, each a publish's
// or a push's, anew as few: each naming whole packs, up to
// indexObjectsMax objects. A reader then reads a few indexes, not one a
// publish the bucket ever saw. The new indexes are written before the
// old ones are removed, as when an index is written anew without a
// pack: a reader that listed an old one and finds it gone lists again
// (reloadLocked). A pack two indexes name is named once. It returns how
// many indexes it removed; rule is indexesToMerge's.
func (s *Store) mergeIndexes(ctx context.Context, kept func(pack string) bool, rule mergeRule) (merged int, _ error) {
	s.packs.mu.Lock()
	indexes := maps.Clone(s.packs.indexes)
	s.packs.mu.Unlock()
	small := indexesToMerge(indexes, kept, rule)
	if len(small) == 0 {
		return 0, nil
	}
	written := map[string]bool{}
	var batch []packObjects
	n := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		name, err := s.putIndex(ctx, batch)
		if err != nil {
			return err
		}
		written[name] = true
		batch, n = nil, 0
		return nil
	}
	named := map[string]bool{}
	for _, name := range small {
		for _, po := range indexes[name] {
			if !kept(po.pack) || named[po.pack] {
				continue
			}
			named[po.pack] = true
			if n > 0 && n+len(po.es) > indexObjectsMax {
				if err := flush(); err != nil {
					return 0, err
				}
			}
			batch = append(batch, po)
			n += len(po.es)
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	// The old indexes go eight at a time: a writer's merge removes 65,
	// each a round trip to the bucket.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	var mu sync.Mutex
	for _, name := range small {
		if written[name] {
			continue // merged into the same bytes, so the same name
		}
		g.Go(func() error {
			if err := s.deleteKey(gctx, s.indexKey(name)); err != nil {
				return err
			}
			s.forgetIndex(name)
			mu.Lock()
			merged++
			mu.Unlock()
			return nil
		})
	}
	err := g.Wait()
	return merged, err
}

// mergeWritten merges the prefix's indexes of few objects, as gc does,
// once there are more than writerMergeMin, after a publish or a push
// wrote its key, with the writer's lock still held (no gc runs): so that
// a prefix written to often between gcs keeps a bounded number of
// indexes for a fresh mount to read. Writers do not exclude each
// other, so it merges only the indexes all of whose packs this writer
// listed or wrote: another writer's index listed without its packs (they
// were written after the listing of packs/) is left as it is, where a
// merge would have named its objects nowhere. A failure is logged: the
// write it follows is done, and the next merge, or gc, merges them.
func (s *Store) mergeWritten(ctx context.Context) {
	s.packs.mu.Lock()
	seen := maps.Clone(s.packs.seenPacks)
	s.packs.mu.Unlock()
	if seen == nil {
		return
	}
	n, err := s.mergeIndexes(ctx, func(pack string) bool { return seen[pack] }, mergeRule{min: writerMergeMin, whole: true})
	if err != nil {
		s.cfg.Log.Warn("merging the prefix's indexes after a write failed; the next write or gc merges them", "bucket", s.URL(), "err", err)
		return
	}
	if n > 0 {
		s.cfg.Log.Info("merged the prefix's indexes of few objects", "bucket", s.URL(), "indexes", n)
	}
}

// repack writes the live objects of each of packs, read whole and checked
// against their digests, into new packs (in the order they lay: what lay
// side by side, a chunk group, mostly does again) with an index of their
// own, and marks each pack gone once its objects are elsewhere, for
// gcPacks to remove after the indexes that name it. The new packs and
// index are written before anything is removed: a gc that stops in
// between leaves objects in two packs, which read from either, and the
// next gc removes the old pack or repacks it again, and leaves one copy
// of each object (gcPacks counts an object live in one pack). A pack
// that cannot be read whole, or holds a damaged live object, is kept as
// it is (logged); readers find that damage as before.
func (s *Store) repack(ctx context.Context, st *GCStats, packs []string, byPack map[string][]indexEntryT, liveIn func(pack string, d object.Digest) bool, gone map[string]bool) error {
	if len(packs) == 0 {
		return nil
	}
	// One order, so that a gc run again writes the same packs.
	slices.Sort(packs)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	var mu sync.Mutex
	var written []packObjects
	w := &packWriter{s: s, g: g, ctx: gctx, sent: func(int, int64) {}, noIndex: func(po packObjects) {
		mu.Lock()
		written = append(written, po)
		mu.Unlock()
	}}
	var moved []string
	for n, pack := range packs {
		b, err := s.getKey(ctx, s.packKey(pack))
		if err != nil {
			s.cfg.Log.Warn("gc: a pack to repack could not be read; it is kept", "pack", s.packKey(pack), "err", err)
			st.Packs++
			continue
		}
		es := byPack[pack]
		var keep []indexEntryT
		ok := true
		for _, e := range es {
			if !liveIn(pack, e.d) {
				continue
			}
			end := int64(e.off) + int64(e.n)
			if end > int64(len(b)) || object.Sum(b[e.off:end]) != e.d {
				s.cfg.Log.Warn("gc: a live object in a pack to repack is damaged; the pack is kept", "pack", s.packKey(pack), "object", e.d.String())
				ok = false
				break
			}
			keep = append(keep, e)
		}
		if !ok {
			st.Packs++
			continue
		}
		// What a pack held stays together, the trees apart, as a
		// publish wrote it: a chunk group lies in one pack, and a run
		// of file objects with their first chunks, and a reader reads
		// each with one GET; a mount's lookups read trees with no data
		// between them.
		unit := chunkGroup{id: n + 1}
		open := 2 // chunk groups, unless the pack held a file object
		for _, e := range keep {
			switch k, _ := object.KindOf(b[e.off : int64(e.off)+int64(e.n)]); k {
			case object.KindTree:
				continue
			case object.KindFile:
				open = 1
			}
			unit.bytes += int64(e.n)
		}
		for _, e := range keep {
			obj := b[e.off : int64(e.off)+int64(e.n)]
			if k, _ := object.KindOf(obj); k == object.KindTree {
				w.add(e.d, obj, true)
			} else {
				w.addTogether(open, e.d, obj, unit)
			}
			st.RepackedBytes += int64(e.n)
		}
		st.DeadBytes += int64(len(b))
		moved = append(moved, pack)
	}
	w.flush()
	if err := g.Wait(); err != nil {
		return fmt.Errorf("repack: %w: nothing removed", err)
	}
	if _, err := s.putIndex(ctx, written); err != nil {
		return fmt.Errorf("repack: %w: nothing removed", err)
	}
	st.DeadBytes -= st.RepackedBytes
	for _, po := range written {
		// A new pack the same as one whose objects are all dead (the
		// same bytes, so the same name) is kept.
		delete(gone, po.pack)
	}
	for _, pack := range moved {
		gone[pack] = true
		st.PacksRepacked++
	}
	st.Packs += len(written)
	return nil
}
