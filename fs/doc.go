// Package fs serves a cow.FS to the kernel through FUSE (go-fuse v2).
//
// It owns what the kernel sees and nothing else: inode numbers and
// generations, entry and attribute cache lifetimes, page-cache and
// passthrough decisions, and the one mapping from Go errors to errnos. It
// knows nothing about how layers are stored; every decision about the merged
// view is package cow's. The workspace (package cowfs) checks the
// directories, opens and pins the lower, and hands fs.New what it serves.
package fs
