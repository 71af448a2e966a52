// Package cow is the copy-on-write layering engine of cowfs: a merged view of
// one read-only lower layer under one private writable upper layer.
//
// It owns the overlay semantics (lookup and readdir merging, whiteouts,
// opaque and redirected directories, copy-up), the chunk-level data path
// (a lower file is copied up one chunk at a time, on first write to that
// chunk), and the upper layer's metadata in badger.
//
// Package cow does not import FUSE. Package fs translates kernel requests
// into calls on FS and Node; everything here is testable without a mount.
//
// Rules the code relies on:
//
//   - The upper directory mirrors the merged namespace: a merged entry that
//     exists in the upper lives at the same relative path there. Files a user
//     put in an upperdir before mounting therefore show in the mount.
//   - Identity that must move with an upper inode (its merged inode number,
//     its metadata id) lives in one extended attribute on that inode, so a
//     rename or hard link in the upper can never separate a file from its
//     metadata. Everything else (whiteouts, opaque flags, redirects, origins
//     and chunk presence) lives in badger, keyed by that id.
//   - The lower layer is never written; everything that changes goes to the
//     upper, through a work directory and an atomic rename, so a crash leaves
//     either the old or the new state.
package cow
