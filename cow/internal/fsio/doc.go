// Package fsio holds the file system calls that the engine's upper, the
// local lowers, the scanner and the refs share, and that no one outside
// cow/ should need: opening beneath a root with no symlinks followed,
// listing a directory with its inode numbers, extended attributes through
// a directory's descriptor, whole reads, a directory's entries synced.
package fsio
