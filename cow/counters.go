package cow

// Counters count what an FS did since it was opened, for metrics.
type Counters struct {
	// CopyUps counts nodes (files, directories, links) copied up: their
	// metadata, with no data.
	CopyUps uint64
	// ChunksCopiedUp counts chunks of files brought into the upper by a
	// write or a fallocate.
	ChunksCopiedUp uint64
}

// Counters returns the FS's counters.
func (f *FS) Counters() Counters {
	return Counters{CopyUps: f.copyUps.Load(), ChunksCopiedUp: f.chunksUp.Load()}
}
