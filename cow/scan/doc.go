// Package scan turns a lower layer's files and directories into objects:
// Tree for a whole tree or one file (a master's export, `cowfs verify
// --repair`), Prepare for a local lower taken in ahead of a capture, and
// the Scanner through which the engine's capture hashes what it must
// read. A Cache (MemCache in memory; the engine's metadata on disk)
// remembers what each lower inode hashed to, so a scan re-reads only what
// changed.
//
// A scan is whole or fails: a file is read again until it held still from
// its first byte to its last, a directory until its listing did, and one
// that keeps changing fails with ErrChanging (decisions 0031, 0032).
//
// Package scan reads layers through cow/lower and writes objects through
// cow/object; it never imports the engine (package cow), badger, FUSE or
// gRPC (cow/layering_test.go), so the master links it without the copy-up
// engine.
package scan
