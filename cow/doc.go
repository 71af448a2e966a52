// Package cow is the copy-on-write layering engine of cowfs: a merged view of
// one read-only lower layer under one private writable upper layer.
//
// It owns the overlay semantics (lookup and readdir merging, whiteouts,
// opaque and redirected directories, copy-up), the chunk-level data path
// (a lower file is copied up one chunk at a time, on first write to that
// chunk), the upper layer's metadata in badger, and the capture of the
// merged view into objects (Capture, PrepareLower and CapturePrepared,
// PrepareCapture and CaptureLocal), which holds the engine's locks.
//
// What it must not know lives beside it: the lowers it reads through
// lower.Layer (package cow/lower), the scan of a layer into objects
// (cow/scan), name and path checks (cow/names), and the object format and
// store (cow/object). Those never import cow; the helpers cow shares with
// the lowers and the scanner, and with no one outside cow/, are in
// cow/internal (docs/decisions/0046-cow-split.md).
//
// Package cow does not import FUSE or gRPC. Package fs translates kernel
// requests into calls on FS and Node; everything here is testable without
// a mount.
//
// Rules the code relies on:
//
//   - The upper directory mirrors the merged namespace: a merged entry that
//     exists in the upper lives at the same relative path there. Files a user
//     put in an upperdir before mounting therefore show in the mount.
//   - Identity that must move with an upper inode (its merged inode number,
//     its metadata id) lives in one extended attribute on that inode, so a
//     rename or hard link in the upper can never separate a file from its
//     metadata; where the kernel refuses the attribute (user.* on symlinks
//     and special files) it is a record keyed by the inode (identity.go).
//     Everything else (whiteouts, opaque flags, redirects, origins and
//     chunk presence) lives in badger, keyed by that id.
//   - The lower layer is never written; everything that changes goes to the
//     upper, through a work directory and an atomic rename, so a crash leaves
//     either the old or the new state.
package cow
