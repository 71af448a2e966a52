// Package remote serves a directory tree to workers over gRPC and gives a
// worker that tree as a lazily fetched, verified, cached lower layer.
//
// The master (Server) scans its directory into content-addressed objects
// (package cow/object) when a worker resolves it: a version is the digest of
// one small tree object, so it names every byte beneath it. A worker
// (Client, Cache) fetches objects by digest only when they are used, checks
// each against its digest before anything sees it, and keeps them in the
// machine's object store, shared by every mount of the same state directory.
// Because a version can never change, a worker may cache its metadata
// without limit, and a running mount keeps reading the version it started
// with however the master's files change.
package remote
