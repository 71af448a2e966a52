package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Workspace holds the metrics of one mounted workspace (cowfs mount,
// cowfs restore): its FUSE requests, its copy-ups, its snapshots and,
// over a remote lower, its fetches and cache.
type Workspace struct {
	reg  prometheus.Registerer
	FUSE *FUSE
	// registered is what Unregister takes out of reg again.
	registered []prometheus.Collector

	snapshots *prometheus.HistogramVec
	held      prometheus.Histogram
	fetches   *prometheus.HistogramVec
}

// NewWorkspace registers a workspace's metrics with reg. Every series
// carries the label mountpoint, so that the workspaces of one Go program
// can share a registry; Unregister takes them out when the workspace is
// closed, so that it can be opened again.
func NewWorkspace(reg prometheus.Registerer, mountpoint string) (*Workspace, error) {
	w := &Workspace{
		reg: prometheus.WrapRegistererWith(prometheus.Labels{"mountpoint": mountpoint}, reg),
		snapshots: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cowfs_snapshot_duration_seconds",
			Help:    "Snapshots taken, by result (ok, error), and how long each took, from the request to the ref written.",
			Buckets: longBuckets,
		}, []string{"result"}),
		held: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cowfs_snapshot_writes_held_seconds",
			Help:    "How long each snapshot held the workspace's writes while it captured what changed.",
			Buckets: longBuckets,
		}),
		fetches: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cowfs_remote_fetch_duration_seconds",
			Help:    "Calls that fetched objects from the master (one object, or a batch for read-ahead and prefetch), by result, and how long each took, retries included.",
			Buckets: durationBuckets,
		}, []string{"kind", "result"}),
	}
	for _, r := range []string{"ok", "error"} {
		w.snapshots.WithLabelValues(r)
	}
	var err error
	if w.FUSE, err = newFUSE(w.register); err != nil {
		w.Unregister()
		return nil, err
	}
	for _, c := range []prometheus.Collector{w.snapshots, w.held} {
		if err := w.register(c); err != nil {
			w.Unregister()
			return nil, err
		}
	}
	return w, nil
}

func (w *Workspace) register(c prometheus.Collector) error {
	if err := w.reg.Register(c); err != nil {
		return err
	}
	w.registered = append(w.registered, c)
	return nil
}

// Unregister takes the workspace's metrics out of its registry.
func (w *Workspace) Unregister() {
	for _, c := range w.registered {
		w.reg.Unregister(c)
	}
	w.registered = nil
}

// ObserveSnapshot records a snapshot that took took, of which it held
// writes for held; err is its outcome.
func (w *Workspace) ObserveSnapshot(took, held time.Duration, err error) {
	if err != nil {
		w.snapshots.WithLabelValues("error").Observe(took.Seconds())
		return
	}
	w.snapshots.WithLabelValues("ok").Observe(took.Seconds())
	w.held.Observe(held.Seconds())
}

// MountCounts are a mount's own counters (cow.FS's), read at each scrape.
type MountCounts struct {
	// CopyUps counts files, directories and links copied up (their
	// metadata); ChunksCopiedUp the 1 MiB chunks of files brought into
	// the upper by a write or a fallocate.
	CopyUps, ChunksCopiedUp uint64
}

// CountMount registers the mount's counters, read from read at each
// scrape.
func (w *Workspace) CountMount(read func() MountCounts) error {
	return w.register(&fields[MountCounts]{read: read, list: []field[MountCounts]{
		{"cowfs_copyups_total", "Files, directories and links copied up into the upper (their metadata).", nil,
			prometheus.CounterValue, func(c MountCounts) float64 { return float64(c.CopyUps) }},
		{"cowfs_copyup_chunks_total", "Chunks of files (1 MiB) brought into the upper by a write or a fallocate.", nil,
			prometheus.CounterValue, func(c MountCounts) float64 { return float64(c.ChunksCopiedUp) }},
	}})
}

// RemoteCounts are a remote lower's counters (remote.Cache's and
// remote.Client's), read at each scrape.
type RemoteCounts struct {
	Hits, Misses int64
	// FetchedBytes came over the wire and were verified.
	FetchedBytes int64
	// Retries counts attempts of calls to the master that were tried
	// again.
	Retries int64
	// Corrupt counts objects that came damaged, or were found damaged in
	// the cache, and were fetched again.
	Corrupt int64
	// Errors counts reads of the lower that could not be served.
	Errors int64
	// Evicted counts objects removed from the cache to keep it under
	// its limit.
	Evicted int64
	// DirPrefetchErrors counts background fetches of a crawled
	// directory's files that failed.
	DirPrefetchErrors int64
	// TraceObjects is how many objects the trace the mount replays lists,
	// 0 without one; TraceFetched counts those its batches asked for,
	// TraceErrors the batches that failed.
	TraceObjects, TraceFetched, TraceErrors int64
}

// CountRemote registers the remote lower's counters, read from read at
// each scrape.
func (w *Workspace) CountRemote(read func() RemoteCounts) error {
	return w.register(&fields[RemoteCounts]{read: read, list: []field[RemoteCounts]{
		{"cowfs_remote_cache_hits_total", "Objects of the remote lower found in the machine's cache.", nil,
			prometheus.CounterValue, func(c RemoteCounts) float64 { return float64(c.Hits) }},
		{"cowfs_remote_cache_misses_total", "Objects of the remote lower not in the cache, fetched or waited for.", nil,
			prometheus.CounterValue, func(c RemoteCounts) float64 { return float64(c.Misses) }},
		{"cowfs_remote_fetched_bytes_total", "Bytes fetched from the master and verified.", nil,
			prometheus.CounterValue, func(c RemoteCounts) float64 { return float64(c.FetchedBytes) }},
		{"cowfs_remote_retries_total", "Attempts of calls to the master that were tried again.", nil,
			prometheus.CounterValue, func(c RemoteCounts) float64 { return float64(c.Retries) }},
		{"cowfs_remote_corrupt_refetches_total", "Objects that arrived damaged, or were found damaged in the cache, and were fetched again.", nil,
			prometheus.CounterValue, func(c RemoteCounts) float64 { return float64(c.Corrupt) }},
		{"cowfs_remote_read_errors_total", "Reads of the remote lower that could not be served (the master unreachable, an object lost).", nil,
			prometheus.CounterValue, func(c RemoteCounts) float64 { return float64(c.Errors) }},
		{"cowfs_cache_evicted_objects_total", "Objects evicted from the machine's cache to keep it under --cache-size.", nil,
			prometheus.CounterValue, func(c RemoteCounts) float64 { return float64(c.Evicted) }},
		{"cowfs_remote_dir_prefetch_errors_total", "Background fetches of a crawled directory's files that failed; a read then fetched what it needed itself.", nil,
			prometheus.CounterValue, func(c RemoteCounts) float64 { return float64(c.DirPrefetchErrors) }},
		{"cowfs_remote_trace_objects", "Objects the trace of an earlier mount of the export lists, which this mount fetches ahead of its task; 0 without one.", nil,
			prometheus.GaugeValue, func(c RemoteCounts) float64 { return float64(c.TraceObjects) }},
		{"cowfs_remote_trace_fetched_objects_total", "Objects of the trace asked for by its background batches.", nil,
			prometheus.CounterValue, func(c RemoteCounts) float64 { return float64(c.TraceFetched) }},
		{"cowfs_remote_trace_errors_total", "Background batches of the trace that failed, which ends its replay; reads then fetch for themselves.", nil,
			prometheus.CounterValue, func(c RemoteCounts) float64 { return float64(c.TraceErrors) }},
	}})
}

// ObserveFetch records a call to the master that fetched one object
// (batch false) or several; err is its outcome.
func (w *Workspace) ObserveFetch(batch bool, took time.Duration, err error) {
	kind, result := "object", "ok"
	if batch {
		kind = "batch"
	}
	if err != nil {
		result = "error"
	}
	w.fetches.WithLabelValues(kind, result).Observe(took.Seconds())
}

// RegisterFetches registers the fetch histogram; only a workspace over a
// remote lower has one.
func (w *Workspace) RegisterFetches() error {
	for _, k := range []string{"object", "batch"} {
		for _, r := range []string{"ok", "error"} {
			w.fetches.WithLabelValues(k, r)
		}
	}
	return w.register(w.fetches)
}

// cacheSizeEvery is how long a count of the cache's bytes is shown before
// the store is walked again: the walk stats every object, too much for
// every scrape of a big cache.
const cacheSizeEvery = time.Minute

// CountCache registers the size of the machine's object store, which
// the remote lower's cache is, against its limit (0: none). size walks
// the store; it runs at most once every cacheSizeEvery, at a scrape.
func (w *Workspace) CountCache(limit int64, size func() (int64, error)) error {
	var (
		mu   sync.Mutex
		at   time.Time
		last int64
	)
	read := func() [2]int64 {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) >= cacheSizeEvery {
			if n, err := size(); err == nil {
				last, at = n, time.Now()
			}
		}
		return [2]int64{last, limit}
	}
	return w.register(&fields[[2]int64]{read: read, list: []field[[2]int64]{
		{"cowfs_cache_bytes", "Bytes in the machine's object store, which the remote cache shares with snapshots; counted at most once a minute.", nil,
			prometheus.GaugeValue, func(c [2]int64) float64 { return float64(c[0]) }},
		{"cowfs_cache_limit_bytes", "The cache's limit (--cache-size); 0 when it has none.", nil,
			prometheus.GaugeValue, func(c [2]int64) float64 { return float64(c[1]) }},
	}})
}

// fields is a collector of counts kept elsewhere: at each scrape it reads
// them once, with read, and reports each field as its own metric.
type fields[T any] struct {
	read  func() T
	list  []field[T]
	once  sync.Once
	descs []*prometheus.Desc
}

type field[T any] struct {
	name, help string
	labels     prometheus.Labels
	kind       prometheus.ValueType
	get        func(T) float64
}

func (f *fields[T]) desc() []*prometheus.Desc {
	f.once.Do(func() {
		for _, m := range f.list {
			f.descs = append(f.descs, prometheus.NewDesc(m.name, m.help, nil, m.labels))
		}
	})
	return f.descs
}

func (f *fields[T]) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range f.desc() {
		ch <- d
	}
}

func (f *fields[T]) Collect(ch chan<- prometheus.Metric) {
	v := f.read()
	for i, d := range f.desc() {
		ch <- prometheus.MustNewConstMetric(d, f.list[i].kind, f.list[i].get(v))
	}
}
