// Package lower holds the read-only layers a cowfs mount reads beneath its
// upper: the Layer interface the engine consumes (Lstat, ReadDir,
// Readlink, Open, Listxattr, Getxattr) and its implementations, Dir over a
// local directory (every access beneath one root descriptor, no symlink
// followed) and Objects over a tree of content-addressed objects (a
// snapshot, or a version fetched from a master).
//
// A layer never changes while a mount uses it and is never written.
// Package lower knows nothing of the upper, the engine or its metadata:
// it imports the object format, the name checks and cow/internal/fsio,
// never the engine, badger, FUSE or gRPC (cow/layering_test.go).
package lower
