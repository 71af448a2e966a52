package scan

import (
	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/names"
)

// scanDir is how a scan reaches the entries of one directory, by name.
type scanDir interface {
	Lstat(name string) (unix.Stat_t, error)
	Listxattr(name string) ([]string, error)
	Getxattr(name, attr string) ([]byte, error)
	Readlink(name string) (string, error)
	Open(name string) (lower.File, error)
}

// pathDir reaches the entries of directory dir of any lower.Layer by their paths
// from the layer's root.
type pathDir struct {
	lo  lower.Layer
	dir string
}

func (d pathDir) Lstat(name string) (unix.Stat_t, error) { return d.lo.Lstat(names.Join(d.dir, name)) }
func (d pathDir) Listxattr(name string) ([]string, error) {
	return d.lo.Listxattr(names.Join(d.dir, name))
}
func (d pathDir) Getxattr(name, x string) ([]byte, error) {
	return d.lo.Getxattr(names.Join(d.dir, name), x)
}
func (d pathDir) Readlink(name string) (string, error) { return d.lo.Readlink(names.Join(d.dir, name)) }
func (d pathDir) Open(name string) (lower.File, error) { return d.lo.Open(names.Join(d.dir, name)) }
